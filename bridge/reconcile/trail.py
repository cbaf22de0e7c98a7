"""What the reconciliation records to the ATNA audit trail (docs/audit.md): each
C-FIND it sends to a PACS (a Query event, the daemon as requestor) and each word of
a study that reached the PACS (a Procedure Record update naming the items it
completed, as an MPPS N-SET COMPLETED is): the loop's own query, an IAN N-CREATE,
or Orthanc's push."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.audit import AuditTrail, codes, events
from bridge.audit.codes import Code
from bridge.audit.events import MINOR_FAILURE, SUCCESS, Kind

IAN = (codes.RAD_49,)


@dataclass(frozen=True, slots=True)
class Subject:
    """The worklist item a question or a completion is about (for the audit only)."""

    patient_id: str = ""
    accession: str = ""
    study_uid: str = ""

    @property
    def accessions(self) -> tuple[str, ...]:
        return (self.accession,) if self.accession else ()

    @property
    def studies(self) -> tuple[str, ...]:
        return (self.study_uid,) if self.study_uid else ()


def record_query(trail: AuditTrail, *, calling_ae: str, pacs_ae: str, host: str,
                 identifier: bytes, transfer_syntax: str, subject: Subject | None,
                 failure: str = "") -> None:
    """One C-FIND sent to a PACS, answered (``failure`` empty) or failed."""
    s = subject or Subject()
    trail.record(events.pacs_query(
        trail.local, calling_ae=calling_ae, pacs_ae=pacs_ae, host=host,
        identifier=identifier, transfer_syntax=transfer_syntax,
        outcome=MINOR_FAILURE if failure else SUCCESS, outcome_text=failure,
        patient_id=s.patient_id, accessions=s.accessions, studies=s.studies))


def record_study(trail: AuditTrail, *, informant: str, requested: bool, study_uid: str,
                 completed: Sequence[Subject] = (), host: str = "", kind: Kind = "ae",
                 type_codes: tuple[Code, ...] = (), failure: str = "") -> None:
    """Word of a study at the PACS, with the items it completed (events.study_notice)."""
    patients = tuple(events.patient(s.patient_id, accessions=s.accessions,
                                    studies=s.studies)
                     for s in completed if s.patient_id)
    trail.record(events.study_notice(
        trail.local, informant=informant, informant_requested=requested, host=host,
        kind=kind, study_uid=study_uid, patients=patients, type_codes=type_codes,
        outcome=MINOR_FAILURE if failure else SUCCESS, outcome_text=failure))


def record_conflict(trail: AuditTrail, *, informant: str, subject: Subject,
                    found_study: str, host: str = "") -> None:
    """A conflict flagged (events.conflict): an Order Record update, outcome 4."""
    trail.record(events.conflict(
        trail.local, informant=informant, host=host, patient_id=subject.patient_id,
        accession=subject.accession, expected_study=subject.study_uid,
        found_study=found_study,
        reason="the PACS holds a study under this accession with another Study Instance "
               "UID or patient; the item waits (mwl-bridge reconcile conflicts)"))
