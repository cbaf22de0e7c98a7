"""PS3.4 Annex F checks on MPPS N-CREATE and N-SET content. Pure: datasets in,
an ``MppsFailure`` (DIMSE status + error comment) out.

What is checked, and the status sent (PS3.7 Annex C, PS3.4 F.7.2):

N-CREATE
- a Type 1 attribute absent: 0x0120 Missing attribute;
- present but empty: 0x0121 Missing attribute value;
- Performed Procedure Step Status other than IN PROGRESS, or a date, time
  or AE title that is not valid for its VR: 0x0106 Invalid attribute value.
  Type 2 attributes that are absent are accepted: many modalities leave
  them out, and nothing here depends on them.
N-SET
- a status other than IN PROGRESS, COMPLETED, DISCONTINUED, or a bad date or
  time: 0x0106;
- a change to an attribute N-SET may not touch (patient, scheduled step
  attributes, the step's identity and start): 0x0106. Sending such an
  attribute again with its stored value is accepted (some modalities send
  the whole dataset);
- COMPLETED or DISCONTINUED without the final-state attributes (PPS End
  Date and Time; COMPLETED also at least one Performed Series Sequence
  item): 0x0120 / 0x0121, unless ``final_state_checks`` is off.

Error comments name attributes, never values (they may be patient data),
and fit the 64 characters of Error Comment (LO).
"""

from __future__ import annotations

import re

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword
from pydicom.tag import BaseTag, Tag

from bridge.steps.rules import IN_PROGRESS, MPPS_FINAL, MPPS_STATUSES

INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
INVALID_INSTANCE = 0x0117
NO_SUCH_SOP_CLASS = 0x0118  # a request naming another SOP class than MPPS
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
# The error id the reference archive sends with 0x0110 for an N-SET on a final MPPS.
ERROR_ID_FINAL = 0xA710

SSAS = "ScheduledStepAttributesSequence"
CREATE_TYPE1 = (
    "PerformedProcedureStepStatus", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "Modality",
)
# PS3.4 Table F.7.2-1: "Not allowed" in N-SET.
NOT_SETTABLE = (
    SSAS, "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex",
    "ReferencedPatientSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedStationName", "PerformedLocation", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "Modality", "StudyID", "SOPClassUID", "SOPInstanceUID",
)
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")


class MppsFailure(Exception):
    """An MPPS request refused with a DIMSE failure status."""

    def __init__(self, status: int, comment: str, error_id: int | None = None,
                 tags: tuple[BaseTag, ...] = ()) -> None:
        super().__init__(f"0x{status:04X}: {comment}")
        self.status = status
        self.comment = comment
        self.error_id = error_id
        self.tags = tags


def _tag(keyword: str) -> tuple[BaseTag, ...]:
    tag = tag_for_keyword(keyword.split(">")[-1])
    return (Tag(tag),) if tag is not None else ()


def _missing(keyword: str) -> MppsFailure:
    return MppsFailure(MISSING_ATTRIBUTE, f"missing {keyword}"[:64], tags=_tag(keyword))


def _empty(keyword: str) -> MppsFailure:
    return MppsFailure(MISSING_ATTRIBUTE_VALUE, f"no value in {keyword}"[:64], tags=_tag(keyword))


def _invalid(keyword: str, why: str = "") -> MppsFailure:
    text = f"invalid {keyword}" + (f": {why}" if why else "")
    return MppsFailure(INVALID_ATTRIBUTE_VALUE, text[:64], tags=_tag(keyword))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def _check_formats(ds: Dataset) -> None:
    for keyword in ("PerformedProcedureStepStartDate", "PerformedProcedureStepEndDate"):
        value = _text(ds, keyword)
        if value and not _DATE.match(value):
            raise _invalid(keyword, "not a DA (YYYYMMDD)")
    for keyword in ("PerformedProcedureStepStartTime", "PerformedProcedureStepEndTime"):
        value = _text(ds, keyword)
        if value and not _TIME.match(value.replace(":", "")):
            raise _invalid(keyword, "not a TM (HHMMSS)")
    aet = _text(ds, "PerformedStationAETitle")
    if aet and (len(aet) > 16 or not aet.isascii() or "\\" in aet):
        raise _invalid("PerformedStationAETitle", "not an AE title")


def check_create(ds: Dataset) -> None:
    """Raise MppsFailure when an N-CREATE attribute list breaks PS3.4 F.7.2."""
    if SSAS not in ds:
        raise _missing(SSAS)
    for item in ds[SSAS].value or ():
        if "StudyInstanceUID" not in item:
            raise _missing(f"{SSAS}>StudyInstanceUID")
        uid = _text(item, "StudyInstanceUID")
        if not uid:
            raise _empty(f"{SSAS}>StudyInstanceUID")
        if not valid_uid(uid):
            raise _invalid(f"{SSAS}>StudyInstanceUID", "not a UID")
    for keyword in CREATE_TYPE1:
        if keyword not in ds:
            raise _missing(keyword)
        if not _text(ds, keyword):
            raise _empty(keyword)
    status = _text(ds, "PerformedProcedureStepStatus")
    if status != IN_PROGRESS:
        raise _invalid("PerformedProcedureStepStatus", "must be IN PROGRESS")
    _check_formats(ds)


def check_set(stored: Dataset, changes: Dataset) -> None:
    """Raise MppsFailure when an N-SET modification list may not be applied to ``stored``."""
    if "PerformedProcedureStepStatus" in changes:
        status = _text(changes, "PerformedProcedureStepStatus")
        if status not in MPPS_STATUSES:
            raise _invalid("PerformedProcedureStepStatus", "not an MPPS status")
    for keyword in NOT_SETTABLE:
        if keyword in changes and not _same(stored, changes, keyword):
            raise _invalid(keyword, "N-SET may not change it")
    _check_formats(changes)


def _same(stored: Dataset, changes: Dataset, keyword: str) -> bool:
    if keyword not in stored:
        return changes[keyword].value in (None, "", [])
    return bool(stored[keyword] == changes[keyword] or
                _text(stored, keyword) == _text(changes, keyword))


def check_final(merged: Dataset, *, final_state_checks: bool) -> None:
    """The final-state requirements of a COMPLETED or DISCONTINUED step."""
    status = _text(merged, "PerformedProcedureStepStatus")
    if status not in MPPS_FINAL or not final_state_checks:
        return
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime"):
        if keyword not in merged:
            raise _missing(keyword)
        if not _text(merged, keyword):
            raise _empty(keyword)
    if status == "COMPLETED":
        if "PerformedSeriesSequence" not in merged:
            raise _missing("PerformedSeriesSequence")
        if not merged.PerformedSeriesSequence:
            raise _empty("PerformedSeriesSequence")


def merge(stored: Dataset, changes: Dataset) -> Dataset:
    """``stored`` with every attribute of ``changes`` replacing its own (N-SET semantics).

    A zero-length value in the modification list sets the attribute empty,
    it does not remove it (PS3.4 F.7.2.2).
    """
    merged = Dataset()
    merged.update(stored)
    for elem in changes:
        merged[elem.tag] = elem
    return merged
