"""PS3.4 Annex F checks on MPPS N-CREATE and N-SET content. Pure: datasets in,
an ``MppsFailure`` (DIMSE status + error comment) out.

What is checked, and the status sent (PS3.7 Annex C, PS3.4 F.7.2):

N-CREATE
- a Type 1 attribute absent: 0x0120 Missing attribute;
- present but empty: 0x0121 Missing attribute value;
- Performed Procedure Step Status other than IN PROGRESS, or a date, time
  or AE title that is not valid for its VR: 0x0106 Invalid attribute value.
  Valid means a real day and a time on the clock, not only the right digits
  (20261301 and 256199 are refused), and an AE title of printable ASCII.
  Type 2 attributes that are absent are accepted: many modalities leave
  them out, and nothing here depends on them.
N-CREATE and N-SET
- an attribute whose VR is not the dictionary's as to being a sequence (a
  Scheduled Step Attributes Sequence sent as UL, a name sent as SQ), a DS or IS
  value that is no number (``2,5``), an FL/FD value that is not finite, or more
  than one value where one is read: 0x0106 naming the attribute (in items too);
- and, last, the data set must come back from the store as it goes in
  (bridge.store.items): a value that would not is refused 0x0106 by name rather
  than stored and found unreadable by every later N-SET;
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

import math
import re
from datetime import date
from typing import Any

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from bridge.steps.rules import IN_PROGRESS, MPPS_FINAL, MPPS_STATUSES
from bridge.store.items import dumps_item, loads_item

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
_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_TIME = re.compile(r"^(\d{2})(?:(\d{2})(?:(\d{2})(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
# PS3.5 6.2: DS at most 16 bytes a value, IS 12 and within a signed 32-bit integer.
_DS = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_IS = re.compile(r"^[+-]?\d+$")


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


def _invalid(keyword: str, why: str = "", tag: BaseTag | None = None) -> MppsFailure:
    text = f"invalid {keyword}" + (f": {why}" if why else "")
    return MppsFailure(INVALID_ATTRIBUTE_VALUE, text[:64],
                       tags=(tag,) if tag is not None else _tag(keyword))


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if isinstance(value, MultiValue | list) and len(value) > 1:
        raise _invalid(keyword, "more than one value")
    return "" if value is None else str(value).strip()


def valid_uid(value: str) -> bool:
    return 0 < len(value) <= 64 and bool(_UID.match(value))


def valid_date(value: str) -> bool:
    """A DA value that names a real day (20261301 and 20260230 do not)."""
    match = _DATE.match(value)
    if match is None:
        return False
    try:
        date(*(int(part) for part in match.groups()))
    except ValueError:
        return False
    return True


def valid_time(value: str) -> bool:
    """A TM value within the clock (PS3.5 6.2: HH 00-23, MM 00-59, SS 00-60, the 60
    for a leap second); the ACR-NEMA form with colons is accepted too."""
    match = _TIME.match(value.replace(":", ""))
    if match is None:
        return False
    hours, minutes, seconds = (int(part) if part else 0 for part in match.groups()[:3])
    return hours <= 23 and minutes <= 59 and seconds <= 60


def valid_ae_title(value: str) -> bool:
    # VR AE: the default repertoire without backslash or control characters.
    return len(value) <= 16 and all(" " <= ch <= "~" and ch != "\\" for ch in value)


def _check_formats(ds: Dataset) -> None:
    for keyword in ("PerformedProcedureStepStartDate", "PerformedProcedureStepEndDate"):
        value = _text(ds, keyword)
        if value and not valid_date(value):
            raise _invalid(keyword, "not a DA (YYYYMMDD)")
    for keyword in ("PerformedProcedureStepStartTime", "PerformedProcedureStepEndTime"):
        value = _text(ds, keyword)
        if value and not valid_time(value):
            raise _invalid(keyword, "not a TM (HHMMSS)")
    aet = _text(ds, "PerformedStationAETitle")
    if aet and not valid_ae_title(aet):
        raise _invalid("PerformedStationAETitle", "not an AE title")


def valid_number(text: str, vr: str) -> bool:
    """A DS or IS value (surrounding spaces allowed) that is a finite number."""
    text = text.strip()
    if vr == "IS":
        return len(text) <= 12 and bool(_IS.match(text)) and -2**31 <= int(text) < 2**31
    return len(text) <= 16 and bool(_DS.match(text)) and math.isfinite(float(text))


def _name(elem: DataElement, path: str) -> str:
    name = elem.keyword or f"({elem.tag.group:04X},{elem.tag.element:04X})"
    return f"{path}>{name}" if path else name


def _dictionary_vr(tag: BaseTag) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private or unknown: any VR goes
        return None


def _number_texts(value: Any) -> list[str]:
    """The values of a DS or IS element as sent (pydicom keeps what it cannot convert
    as the raw string, backslashes and all)."""
    values = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    texts: list[str] = []
    for v in values:
        if v is None:
            continue
        original = getattr(v, "original_string", None)
        text = original if isinstance(original, str) else str(v)
        texts.extend(t for t in text.split("\\") if t.strip())
    return texts


def _check_elements(ds: Dataset, path: str = "") -> None:
    """Every element, in every item: a sequence exactly where the dictionary has one,
    and numbers that are numbers."""
    for elem in ds:
        where = _name(elem, path)
        expected = _dictionary_vr(elem.tag)
        if expected is not None and (elem.VR == "SQ") != (expected == "SQ"):
            raise _invalid(where, "not a sequence" if expected == "SQ" else "sent as a sequence",
                           elem.tag)
        if elem.VR == "SQ":
            for item in elem.value or ():
                _check_elements(item, where)
        elif elem.VR in ("DS", "IS"):
            if not all(valid_number(t, elem.VR) for t in _number_texts(elem.value)):
                raise _invalid(where, f"not {'a DS' if elem.VR == 'DS' else 'an IS'} number",
                               elem.tag)
        elif elem.VR in ("FL", "FD") and elem.value is not None:
            values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
            if not all(math.isfinite(v) for v in values):
                raise _invalid(where, "not a finite number", elem.tag)


def _round_trips(ds: Dataset) -> bool:
    try:
        text = dumps_item(ds)
        return dumps_item(loads_item(text)) == text
    except Exception:  # noqa: BLE001 - any failure means it cannot be stored and read
        return False


def _check_storable(ds: Dataset) -> None:
    """The data set comes back from the store as it goes in (bridge.store.items);
    else the first top-level attribute that does not is refused by name."""
    if _round_trips(ds):
        return
    for elem in ds:
        one = Dataset()
        one.add(elem)
        if not _round_trips(one):
            raise _invalid(_name(elem, ""), "cannot be stored", elem.tag)
    raise MppsFailure(INVALID_ATTRIBUTE_VALUE, "the data set cannot be stored")


def check_create(ds: Dataset) -> None:
    """Raise MppsFailure when an N-CREATE attribute list breaks PS3.4 F.7.2."""
    _check_elements(ds)
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
    _check_storable(ds)


def check_set(stored: Dataset, changes: Dataset) -> None:
    """Raise MppsFailure when an N-SET modification list may not be applied to ``stored``."""
    _check_elements(changes)
    if "PerformedProcedureStepStatus" in changes:
        status = _text(changes, "PerformedProcedureStepStatus")
        if status not in MPPS_STATUSES:
            raise _invalid("PerformedProcedureStepStatus", "not an MPPS status")
    for keyword in NOT_SETTABLE:
        if keyword in changes and not _same(stored, changes, keyword):
            raise _invalid(keyword, "N-SET may not change it")
    _check_formats(changes)
    _check_storable(changes)


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
