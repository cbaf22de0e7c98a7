"""DICOM value checks per VR (PS3.5 6.2), done by the mapping itself.

pydicom only warns about an invalid value and then writes it, and a modality
that receives a 20-character Accession Number may drop the item or truncate the
key it copies into every image. So every value is checked here, at map time
(and every constant at load time), and a value that breaks its VR is an error
unless the mapping asks for truncation.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

# Maximum length in characters; PN is per component group.
MAX_LENGTH: dict[str, int] = {
    "AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64,
    "LT": 10240, "PN": 64, "SH": 16, "ST": 1024, "TM": 14, "UI": 64,
}
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM",
            "UC", "UI", "UR", "UT"}
# Text VRs where a backslash is data rather than the value-multiplicity delimiter.
_FREE_TEXT = {"LT", "ST", "UT", "UR"}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "US": (0, 0xFFFF), "SS": (-0x8000, 0x7FFF), "UL": (0, 0xFFFFFFFF),
    "SL": (-0x80000000, 0x7FFFFFFF), "UV": (0, 2**64 - 1), "SV": (-2**63, 2**63 - 1),
}
_FLOAT_VRS = {"FL", "FD"}

_CS = re.compile(r"[A-Z0-9 _]*")
_UI = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")
_DS = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_IS = re.compile(r"[+-]?[0-9]+")
_AS = re.compile(r"[0-9]{3}[DWMY]")
_TM = re.compile(r"([0-9]{2})(([0-9]{2})(([0-9]{2})(\.[0-9]{1,6})?)?)?")
_DT = re.compile(r"([0-9]{4})(([0-9]{2})(([0-9]{2})(([0-9]{2})(([0-9]{2})(([0-9]{2})"
                 r"(\.[0-9]{1,6})?)?)?)?)?)?([+-][0-9]{4})?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEXT_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")  # LT/ST/UT allow TAB, LF, FF, CR


class VRProblem(ValueError):
    """A value that breaks its VR; the message has no value in it (it is logged)."""

    def __init__(self, problem: str, length_only: bool = False) -> None:
        self.problem = problem
        self.length_only = length_only
        super().__init__(problem)


def fit(vr: str, value: Any, *, truncate: bool = False) -> Any:
    """The value made ready for pydicom, or VRProblem.

    Strings lose insignificant surrounding spaces; integer and float VRs are
    converted from text. With ``truncate``, a value that is only too long is cut
    to the VR's maximum instead of failing.
    """
    if vr in _INT_RANGES:
        return _integer(vr, value)
    if vr in _FLOAT_VRS:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise VRProblem(f"is not a number (VR {vr})") from None
    if vr not in TEXT_VRS:
        raise VRProblem(f"VR {vr} cannot be set from text")
    if not isinstance(value, str):
        value = str(value)
    if vr not in ("LT", "ST", "UT"):
        value = value.strip(" ")
    else:
        value = value.rstrip(" ")
    try:
        _check_text(vr, value)
    except VRProblem as exc:
        if not (truncate and exc.length_only):
            raise
        value = _truncated(vr, value)
        _check_text(vr, value)
    return value


def check(vr: str, value: Any) -> str | None:
    """The problem with a value, or None when it is valid."""
    try:
        fit(vr, value)
    except VRProblem as exc:
        return exc.problem
    return None


def _integer(vr: str, value: Any) -> int:
    if isinstance(value, bool):
        raise VRProblem(f"is not an integer (VR {vr})")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise VRProblem(f"is not an integer (VR {vr})") from None
    low, high = _INT_RANGES[vr]
    if not low <= number <= high:
        raise VRProblem(f"is out of range for VR {vr} ({low}..{high})")
    return number


def _too_long(vr: str, length: int, limit: int, what: str = "") -> VRProblem:
    return VRProblem(f"is {length} characters{what}; VR {vr} allows {limit}", length_only=True)


def _check_text(vr: str, value: str) -> None:
    limit = MAX_LENGTH.get(vr)
    if vr in _FREE_TEXT:
        if _TEXT_CONTROL.search(value):
            raise VRProblem(f"contains a control character not allowed in VR {vr}")
    else:
        if "\\" in value:
            raise VRProblem(f"contains a backslash, which VR {vr} does not allow "
                            "(it separates values)")
        if _CONTROL.search(value):
            raise VRProblem(f"contains a line break or control character, which VR {vr} "
                            "does not allow")
    if vr == "PN":
        _check_pn(value)
        return
    # A date or time that is too long is a malformed one, and never to be cut.
    if limit is not None and len(value) > limit and vr not in ("DA", "TM", "DT"):
        raise _too_long(vr, len(value), limit)
    if not value:
        return
    if vr == "CS" and not _CS.fullmatch(value):
        raise VRProblem("has characters VR CS does not allow (A-Z, 0-9, space, underscore)")
    elif vr == "AE" and not value.isascii():
        raise VRProblem("has non-ASCII characters, which VR AE does not allow")
    elif vr == "UI" and not _UI.fullmatch(value):
        raise VRProblem("is not a UID (digits and dots, no leading zeros)")
    elif vr == "DA":
        _check_da(value)
    elif vr == "TM":
        _check_tm(value)
    elif vr == "DT":
        _check_dt(value)
    elif vr == "DS" and not _DS.fullmatch(value):
        raise VRProblem("is not a decimal number (VR DS)")
    elif vr == "IS":
        if not _IS.fullmatch(value) or not -2**31 <= int(value) < 2**31:
            raise VRProblem("is not an integer string (VR IS)")
    elif vr == "AS" and not _AS.fullmatch(value):
        raise VRProblem("is not an age string such as 045Y (VR AS)")


def _check_pn(value: str) -> None:
    groups = value.split("=")
    if len(groups) > 3:
        raise VRProblem("has more than three component groups ('=') for VR PN")
    for group in groups:
        if len(group.split("^")) > 5:
            raise VRProblem("has more than five components ('^') for VR PN")
        if len(group) > 64:
            raise _too_long("PN", len(group), 64, " in a component group")


def _check_da(value: str) -> None:
    if len(value) != 8 or not value.isdigit():
        raise VRProblem("is not a date (VR DA is YYYYMMDD)")
    try:
        date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        raise VRProblem("is not a real calendar date (VR DA)") from None


def _check_tm(value: str) -> None:
    m = _TM.fullmatch(value)
    if not m:
        raise VRProblem("is not a time (VR TM is HH[MM[SS[.FFFFFF]]])")
    hh, mm, ss = int(m.group(1)), int(m.group(3) or 0), int(m.group(5) or 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise VRProblem("is not a real time of day (VR TM)")


def _check_dt(value: str) -> None:
    m = _DT.fullmatch(value)
    if not m:
        raise VRProblem("is not a date-time (VR DT is YYYY[MM[DD[HH[MM[SS[.F]]]]]][+/-ZZXX])")
    month, day = m.group(3), m.group(5)
    try:
        date(int(m.group(1)), int(month or 1), int(day or 1))
    except ValueError:
        raise VRProblem("is not a real calendar date (VR DT)") from None
    hh, mm, ss = m.group(7), m.group(9), m.group(11)
    if int(hh or 0) > 23 or int(mm or 0) > 59 or int(ss or 0) > 60:
        raise VRProblem("is not a real time of day (VR DT)")
    if m.group(13):
        check_offset(m.group(13))


def check_offset(value: str) -> None:
    """A UTC offset ``+HHMM``/``-HHMM`` within the range DICOM allows (-1200..+1400)."""
    if len(value) != 5 or value[0] not in "+-" or not value[1:].isdigit():
        raise VRProblem("is not a UTC offset (+HHMM or -HHMM)")
    minutes = int(value[1:3]) * 60 + int(value[3:5])
    if int(value[3:5]) > 59 or (value[0] == "-" and minutes > 12 * 60) or minutes > 14 * 60:
        raise VRProblem("is not a real UTC offset (-1200..+1400)")


def _truncated(vr: str, value: str) -> str:
    if vr == "PN":
        return "=".join(group[:64] for group in value.split("="))
    limit = MAX_LENGTH.get(vr)
    return value[:limit].rstrip(" ") if limit else value


def max_values(vm: str) -> int:
    """The largest number of values a dictionary VM allows; 0 for unbounded ('1-n', '2-2n')."""
    high = vm.split("-")[-1]
    return int(high) if high.isdigit() else 0
