"""The ``dicom`` and ``worklist`` configuration sections: the SCP's AE, its peers,
and what C-FIND returns."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

from bridge.section import Port, Section, ae_title, dicom_charset, networks
from bridge.tls import TlsSettings


def worklist_label(value: str) -> str:
    """A Worklist Label (0074,1202) a view is limited to. Matching compares it with the
    item's label trimmed (bridge/worklist/query.py, OneOfCondition), so an empty or
    blank one, or one with spaces around it, matches no item: the view would silently
    see nothing, where the operator meant a label."""
    if not value.strip():
        raise ValueError("a Worklist Label is not empty or blank (it matches no item: "
                         "the view would see nothing)")
    if value != value.strip():
        raise ValueError("a Worklist Label has no leading or trailing spaces (items' "
                         "labels are compared trimmed: it matches no item)")
    return value


WorklistLabel = Annotated[str, AfterValidator(worklist_label)]


class DicomPeer(Section):
    """One known modality AE (dicom.known_aes, keyed by its AE title)."""

    hosts: list[str] = Field(default_factory=list)  # empty: from any allowed host
    character_set: str | None = None  # default: dicom.character_set
    unencodable: Literal["utf8", "transliterate"] | None = None  # default: dicom.unencodable
    # Use the calling AE title as Scheduled Station AE Title when the query leaves it
    # empty or "*".
    station_from_calling_ae: bool = False
    # What this AE may see; empty lists restrict nothing.
    stations: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    worklist_labels: list[WorklistLabel] = Field(default_factory=list)  # (0074,1202)
    max_associations: int | None = Field(default=None, ge=1)
    # Answers per C-FIND for this AE; default worklist.max_answers, 0 = no cap.
    max_answers: int | None = Field(default=None, ge=0)

    _check_hosts = field_validator("hosts")(classmethod(lambda cls, v: networks(v)))
    _check_cs = field_validator("character_set")(
        classmethod(lambda cls, v: v if v is None else dicom_charset(v)))


class CalledAeView(Section):
    """One more called AE title the SCP answers to (dicom.called_aes), with its own view
    of the worklist: like several wlmscpfs instances, one per worklist, in one daemon.
    Empty lists restrict nothing; they narrow a query, never widen it, and add to what
    the calling AE itself may see (dicom.known_aes)."""

    stations: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    worklist_labels: list[WorklistLabel] = Field(default_factory=list)  # (0074,1202)


class DicomSettings(Section):
    host: str = "127.0.0.1"
    port: Port = 11112
    ae_title: str = "MWLBRIDGE"
    # pynetdicom's default of 10 turns away the 11th console.
    max_associations: int = Field(default=200, ge=1)
    # Answers are encoded in this Specific Character Set (0008,0005).
    character_set: str = "ISO_IR 192"
    max_pdu: int = Field(default=0, ge=0, description="0 means unlimited")
    # What a peer may make the SCP read (bridge/worklist/guard.py), checked on the
    # PDU header before the body is read; more ends the connection with an A-ABORT.
    # The A-ASSOCIATE-RQ (any PDU but P-DATA-TF), before the peer is identified:
    max_associate_rq_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    # One DIMSE command set or data set (a C-FIND identifier, an MPPS attribute
    # list), over all its P-DATA fragments; also one P-DATA-TF while max_pdu is 0.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=16 * 1024)
    acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=30.0, gt=0)
    network_timeout_s: float = Field(default=60.0, gt=0)
    # Access control and per-AE behaviour (bridge/worklist/access.py, docs/conformance).
    require_called_ae: bool = True
    require_known_ae: bool = False
    allowed_hosts: list[str] = Field(default_factory=list)  # empty: any host
    max_associations_per_ae: int = Field(default=0, ge=0)  # 0: only the total limit
    unencodable: Literal["utf8", "transliterate"] = "utf8"
    known_aes: dict[str, DicomPeer] = Field(default_factory=dict)
    # Further called AE titles, each with its own worklist view (ae_title sees all).
    called_aes: dict[str, CalledAeView] = Field(default_factory=dict)
    tls: TlsSettings = TlsSettings()

    _check_aet = field_validator("ae_title")(classmethod(lambda cls, v: ae_title(v)))
    _check_cs = field_validator("character_set")(classmethod(lambda cls, v: dicom_charset(v)))
    _check_hosts = field_validator("allowed_hosts")(classmethod(lambda cls, v: networks(v)))

    @field_validator("known_aes")
    @classmethod
    def _known_ae_titles(cls, value: dict[str, DicomPeer]) -> dict[str, DicomPeer]:
        for title in value:
            ae_title(title)
        return value

    @field_validator("called_aes")
    @classmethod
    def _called_ae_titles(cls, value: dict[str, CalledAeView]) -> dict[str, CalledAeView]:
        for title in value:
            ae_title(title)
        return value


class WorklistSettings(Section):
    # Statuses never returned by C-FIND (kept in the store).
    hidden_statuses: list[str] = Field(
        default_factory=lambda: ["COMPLETED", "DISCONTINUED", "CANCELED", "HELD"])
    # Answers per C-FIND (0 = no cap; per AE: dicom.known_aes.<AE>.max_answers). A cap
    # stops a broad query from flooding a console and from holding an association
    # thread and the store for minutes; the cut is logged and the answer ends in success.
    max_answers: int = Field(default=1000, ge=0)
    # Patient's Name: "insensitive" ignores case and accents (what consoles expect),
    # "exact" compares as stored (DCMTK's behaviour).
    patient_name_matching: Literal["insensitive", "exact"] = "insensitive"
