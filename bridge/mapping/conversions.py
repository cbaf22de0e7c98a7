"""Typed conversions from HL7 v2 data types to DICOM values (the ``as:`` of a value).

Text conversions take one string (an HL7 TS/DTM):
    DA   date part, YYYYMMDD (a partial date is an error: DA has no partial form)
    TM   time part, HHMMSS[.F] (seconds padded with 00); empty when the TS has no time
    DT   the whole TS as a DICOM DT, offset included
    TZ   the UTC offset suffix (+HHMM), for Timezone Offset From UTC (0008,0201);
         empty when the text is not a TS at all: the offset is an optional extra,
         and the date or time read from the same field names that problem better
         (a bad ORC-7.4 is the scheduled start's error, not the time zone's)

Structured conversions take the parts of one repetition (its components), or
of one component (its sub-components) when the path addresses a component:
    PN        XPN family^given^middle^suffix^prefix -> PN family^given^middle^prefix^suffix
    PN_XCN    XCN id^family^given^middle^suffix^prefix -> PN
    A name field repeated with name representation codes (XPN-8, XCN-15; HL7
    table 4000: A alphabetic, I ideographic, P phonetic) becomes one PN with
    those component groups: ``YAMADA^TARO^^^^^L^A~山田^太郎^^^^^L^I`` ->
    ``YAMADA^TARO=山田^太郎`` (``name_run`` says which repetitions belong together).
    CODE      CE/CWE code^text^scheme -> one code sequence item
    CODE_ALT  CE/CWE components 4-6 (the alternate code) -> one code sequence item
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.dataelem import DataElement

from bridge.hl7.message import Repetition
from bridge.mapping import vr
from bridge.mapping.vr import VRProblem

_TS = re.compile(r"([0-9]{4})([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?([0-9]{2})?"
                 r"(\.[0-9]{1,6})?([+-][0-9]{4})?")

# HL7 table 0396 "L": a local code. A code item needs a scheme (Type 1C with a code value).
LOCAL_SCHEME = "L"


class ConversionError(ValueError):
    """A value the conversion cannot turn into its DICOM form; no value in the message."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


def _ts(text: str) -> re.Match[str]:
    m = _TS.fullmatch(text.strip(" "))
    if not m:
        raise ConversionError("is not an HL7 date/time (YYYYMMDD[HHMM[SS[.S]]][+/-ZZZZ])")
    return m


def _checked(kind: str, value: str) -> str:
    try:
        vr.fit(kind, value)
    except VRProblem as exc:
        raise ConversionError(exc.problem) from None
    return value


def to_da(text: str) -> str:
    m = _ts(text)
    if not m.group(3):
        raise ConversionError("has no full date (VR DA needs YYYYMMDD)")
    return _checked("DA", m.group(1) + m.group(2) + m.group(3))


def to_tm(text: str) -> str:
    m = _ts(text)
    if not m.group(4):
        return ""
    value = m.group(4) + (m.group(5) or "00") + (m.group(6) or "00") + (m.group(7) or "")
    return _checked("TM", value)


def to_dt(text: str) -> str:
    m = _ts(text)
    return _checked("DT", "".join(g for g in m.groups() if g))


def to_tz(text: str) -> str:
    m = _TS.fullmatch(text.strip(" "))
    offset = m.group(8) if m else None
    if not offset:
        return ""
    try:
        vr.check_offset(offset)
    except VRProblem as exc:
        raise ConversionError(exc.problem) from None
    return offset


def _part(parts: Repetition, comp: int, sub: int = 1) -> str:
    if comp > len(parts):
        return ""
    subs = parts[comp - 1]
    # Spaces only: a control character decoded from \X0D\ must reach the VR check
    # (an error naming the field), not vanish with the white space.
    return subs[sub - 1].strip(" ") if sub <= len(subs) else ""


def _family(parts: Repetition, comp: int) -> str:
    # FN: surname & own surname prefix ("Beethoven&van" -> "van Beethoven").
    surname, prefix = _part(parts, comp), _part(parts, comp, 2)
    return f"{prefix} {surname}" if prefix and surname else surname or prefix


def _pn(components: list[str]) -> str:
    for c in components:
        if "^" in c or "=" in c:
            raise ConversionError("has '^' or '=' inside a name part, which VR PN does not allow")
    return "^".join(components).rstrip("^")


def xpn_to_pn(parts: Repetition, truncate: bool = False) -> str:
    return _pn([_family(parts, 1), _part(parts, 2), _part(parts, 3), _part(parts, 5),
                _part(parts, 4)])


def xcn_to_pn(parts: Repetition, truncate: bool = False) -> str:
    return _pn([_family(parts, 2), _part(parts, 3), _part(parts, 4), _part(parts, 6),
                _part(parts, 5)])


def _code_item(parts: Repetition, first: int, truncate: bool) -> Dataset | None:
    code = _part(parts, first)
    if not code:
        return None
    meaning = _part(parts, first + 1) or code
    scheme = _part(parts, first + 2) or LOCAL_SCHEME
    item = Dataset()
    # PS3.3 8.8: a code longer than 16 characters goes in Long Code Value (UC).
    fields = [(0x00080119, "UC", "LongCodeValue", code) if len(code) > 16
              else (0x00080100, "SH", "CodeValue", code),
              (0x00080102, "SH", "CodingSchemeDesignator", scheme),
              (0x00080104, "LO", "CodeMeaning", meaning)]
    for tag, kind, keyword, value in fields:
        try:
            value = vr.fit(kind, value, truncate=truncate)
        except VRProblem as exc:
            raise ConversionError(f"{keyword} {exc.problem}") from None
        item.add(DataElement(tag, kind, value, validation_mode=0))
    return item


def code_item(parts: Repetition, truncate: bool = False) -> Dataset | None:
    return _code_item(parts, 1, truncate)


def alt_code_item(parts: Repetition, truncate: bool = False) -> Dataset | None:
    return _code_item(parts, 4, truncate)


# HL7 table 4000 (name representation code) -> index of the DICOM PN component group.
REPRESENTATION_GROUPS = {"A": 0, "I": 1, "P": 2}


@dataclass(frozen=True, slots=True)
class NameFields:
    """Where a name data type keeps its name type code and name representation code."""

    type_code: int       # XPN-7, XCN-10 (L legal, D display, ...)
    representation: int  # XPN-8, XCN-15 (A, I, P)


XPN_FIELDS = NameFields(type_code=7, representation=8)
XCN_FIELDS = NameFields(type_code=10, representation=15)


def _code(parts: Repetition, comp: int) -> str:
    return _part(parts, comp).upper()


def name_run(reps: Sequence[Repetition], fields: NameFields) -> int:
    """How many of ``reps``, from the first, are one person name in several groups.

    The first repetition (without a representation code it counts as alphabetic)
    is joined by each following one whose code (A, I or P) names a group not yet
    taken and whose name type code is the same (or empty on either side). A
    repetition without a code never joins: ``DOE^JOHN~DOE^J`` stays two names.
    """
    if not reps:
        return 0
    first = reps[0]
    code = _code(first, fields.representation) or "A"
    if code not in REPRESENTATION_GROUPS:
        return 1
    taken = {code}
    kind = _code(first, fields.type_code)
    count = 1
    for rep in reps[1:]:
        code = _code(rep, fields.representation)
        other = _code(rep, fields.type_code)
        if code not in REPRESENTATION_GROUPS or code in taken or (kind and other
                                                                  and other != kind):
            break
        taken.add(code)
        count += 1
    return count


def grouped_pn(names: Sequence[tuple[Repetition, str]], fields: NameFields) -> str:
    """One PN from the repetitions of one name (``name_run``), each already converted
    to its PN text: each goes to the component group its representation code names."""
    groups = ["", "", ""]
    for parts, text in names:
        groups[REPRESENTATION_GROUPS.get(_code(parts, fields.representation), 0)] = text
    return "=".join(groups).rstrip("=")


@dataclass(frozen=True, slots=True)
class Conversion:
    name: str
    target_vrs: frozenset[str]
    text: Callable[[str], str] | None = None
    structured: Callable[[Repetition, bool], object] | None = None
    names: NameFields | None = None  # a name type: repetitions may be component groups


CONVERSIONS: dict[str, Conversion] = {
    "DA": Conversion("DA", frozenset({"DA"}), text=to_da),
    "TM": Conversion("TM", frozenset({"TM"}), text=to_tm),
    "DT": Conversion("DT", frozenset({"DT"}), text=to_dt),
    "TZ": Conversion("TZ", frozenset({"SH"}), text=to_tz),
    "PN": Conversion("PN", frozenset({"PN"}), structured=xpn_to_pn, names=XPN_FIELDS),
    "PN_XCN": Conversion("PN_XCN", frozenset({"PN"}), structured=xcn_to_pn,
                         names=XCN_FIELDS),
    "CODE": Conversion("CODE", frozenset({"SQ"}), structured=code_item),
    "CODE_ALT": Conversion("CODE_ALT", frozenset({"SQ"}), structured=alt_code_item),
}
