"""HL7 -> DICOM conversions (as:) and the VR checks every mapped value goes through."""

from __future__ import annotations

import pytest

from bridge.mapping import vr
from bridge.mapping.conversions import (
    ConversionError,
    alt_code_item,
    code_item,
    to_da,
    to_dt,
    to_tm,
    to_tz,
    xcn_to_pn,
    xpn_to_pn,
)


def parts(text: str) -> tuple[tuple[str, ...], ...]:
    """Components of one repetition, as the tokenizer gives them."""
    return tuple(tuple(comp.split("&")) for comp in text.split("^"))


@pytest.mark.parametrize(("ts", "da", "tm", "dt", "tz"), [
    ("20261128", "20261128", "", "20261128", ""),
    ("202611280930", "20261128", "093000", "202611280930", ""),
    ("20261128093015", "20261128", "093015", "20261128093015", ""),
    ("20261128093015.1234", "20261128", "093015.1234", "20261128093015.1234", ""),
    ("202611290815+0100", "20261129", "081500", "202611290815+0100", "+0100"),
    ("20261129081500-0500", "20261129", "081500", "20261129081500-0500", "-0500"),
])
def test_ts_conversions(ts: str, da: str, tm: str, dt: str, tz: str) -> None:
    assert to_da(ts) == da
    assert to_tm(ts) == tm
    assert to_dt(ts) == dt
    assert to_tz(ts) == tz


@pytest.mark.parametrize(("ts", "problem"), [
    ("1975", "has no full date"),
    ("197503", "has no full date"),
    ("19751345", "not a real calendar date"),
    ("20260230", "not a real calendar date"),
    ("1975-03-12", "is not an HL7 date/time"),
    ("12.03.1975", "is not an HL7 date/time"),
])
def test_da_rejects_what_is_not_a_full_real_date(ts: str, problem: str) -> None:
    with pytest.raises(ConversionError, match=problem):
        to_da(ts)


def test_tm_rejects_impossible_times_and_tz_impossible_offsets() -> None:
    with pytest.raises(ConversionError, match="not a real time"):
        to_tm("202611282561")
    with pytest.raises(ConversionError, match="not a real UTC offset"):
        to_tz("202611280930+1900")
    with pytest.raises(ConversionError, match="not a real time"):
        to_dt("20261128256100")


@pytest.mark.parametrize(("xpn", "pn"), [
    ("DOE^JOHN", "DOE^JOHN"),
    ("DOE^JOHN^QUINCY^JR^DR", "DOE^JOHN^QUINCY^DR^JR"),   # suffix and prefix swap places
    ("DOE^JOHN^^^DR", "DOE^JOHN^^DR"),
    ("DOE^^^III", "DOE^^^^III"),
    ("Beethoven&van^Ludwig", "van Beethoven^Ludwig"),        # FN surname & own prefix
    ("Müller^Jürgen", "Müller^Jürgen"),
    ("DOE^JOHN^^^^MD^L", "DOE^JOHN"),                        # degree, type code: no PN place
    ("", ""),
])
def test_xpn_to_pn(xpn: str, pn: str) -> None:
    assert xpn_to_pn(parts(xpn)) == pn


@pytest.mark.parametrize(("xcn", "pn"), [
    ("1234^SMITH^ALICE^B^^DR", "SMITH^ALICE^B^DR"),
    ("1234^SMITH^ALICE^B^III^DR", "SMITH^ALICE^B^DR^III"),
    ("1234", ""),                     # an ID without a name gives no name
    ("^Weiß^Renate^^^Dr. med.", "Weiß^Renate^^Dr. med."),
])
def test_xcn_to_pn(xcn: str, pn: str) -> None:
    assert xcn_to_pn(parts(xcn)) == pn


def test_xcn_from_subcomponents_of_a_component() -> None:
    # OBR-34.1 is a CN in sub-components: the parts are the sub-components.
    cn = (("8899",), ("BROWN",), ("CAROL",))
    assert xcn_to_pn(cn) == "BROWN^CAROL"


def test_name_parts_with_pn_delimiters_are_an_error() -> None:
    with pytest.raises(ConversionError, match="'\\^' or '='"):
        xpn_to_pn(((("DOE^X"),), ("JOHN",)))


def test_code_item() -> None:
    item = code_item(parts("CTCHEST^CT Chest with contrast^LOCAL^CTCH-P2^CT chest PE^LOCAL"))
    assert item is not None
    assert item.CodeValue == "CTCHEST"
    assert item.CodingSchemeDesignator == "LOCAL"
    assert item.CodeMeaning == "CT Chest with contrast"
    alt = alt_code_item(parts("CTCHEST^CT Chest^LOCAL^CTCH-P2^CT chest PE^LOCAL"))
    assert alt is not None
    assert (alt.CodeValue, alt.CodeMeaning) == ("CTCH-P2", "CT chest PE")


def test_code_item_defaults_and_long_codes() -> None:
    assert code_item(parts("^only text")) is None          # no code: no item
    item = code_item(parts("X1"))
    assert item is not None
    assert item.CodingSchemeDesignator == "L"               # HL7 0396: local code
    assert item.CodeMeaning == "X1"                          # meaning is Type 1: the code stands in
    long_code = code_item(parts("RPID-2026-0001-ABCDEFG^Long^LOCAL"))
    assert long_code is not None
    assert "CodeValue" not in long_code
    assert long_code.LongCodeValue == "RPID-2026-0001-ABCDEFG"


def test_code_item_checks_its_parts_and_truncates_when_asked() -> None:
    meaning = "M" * 70
    with pytest.raises(ConversionError, match="CodeMeaning is 70 characters; VR LO allows 64"):
        code_item(parts(f"C1^{meaning}^L"))
    item = code_item(parts(f"C1^{meaning}^L"), True)
    assert item is not None and item.CodeMeaning == "M" * 64


@pytest.mark.parametrize(("kind", "value", "problem"), [
    ("SH", "A" * 17, "is 17 characters; VR SH allows 16"),
    ("LO", "A" * 65, "is 65 characters; VR LO allows 64"),
    ("AE", "A" * 17, "is 17 characters; VR AE allows 16"),
    ("CS", "A" * 17, "is 17 characters; VR CS allows 16"),
    ("CS", "scheduled", "VR CS does not allow"),
    ("CS", "IN-PROGRESS", "VR CS does not allow"),
    ("AE", "CTÄ1", "non-ASCII"),
    ("UI", "1.2.03", "not a UID"),
    ("UI", "1.2.3a", "not a UID"),
    ("UI", "1." + "2" * 63, "is 65 characters; VR UI allows 64"),
    ("DA", "1975-03-12", "not a date"),
    ("DA", "20261131", "not a real calendar date"),
    ("TM", "2460", "not a real time"),
    ("TM", "12:30", "not a time"),
    ("DT", "2026113", "not a date-time"),
    ("PN", "A" * 65, "is 65 characters in a component group; VR PN allows 64"),
    ("PN", "A^B^C^D^E^F", "more than five components"),
    ("PN", "A=B=C=D", "more than three component groups"),
    ("LO", "two\\values", "backslash"),
    ("LO", "line\nbreak", "line break"),
    ("ST", "x" * 1025, "is 1025 characters; VR ST allows 1024"),
    ("LT", "bell\x07", "control character"),
    ("DS", "1,5", "not a decimal"),
    ("IS", "12.5", "not an integer string"),
    ("US", "70000", "out of range"),
    ("US", "three", "not an integer"),
    ("FD", "x", "not a number"),
])
def test_vr_problems(kind: str, value: str, problem: str) -> None:
    found = vr.check(kind, value)
    assert found is not None and problem in found


@pytest.mark.parametrize(("kind", "value", "fitted"), [
    ("SH", "  CT01  ", "CT01"),           # insignificant spaces go
    ("LT", "  indented text  ", "  indented text"),
    ("CS", "SCHEDULED", "SCHEDULED"),
    ("DA", "20261128", "20261128"),
    ("TM", "093000.5", "093000.5"),
    ("DT", "202611290815+0100", "202611290815+0100"),
    ("PN", "Παπαδόπουλος^Γεώργιος", "Παπαδόπουλος^Γεώργιος"),
    ("PN", "Yamada^Tarou=山田^太郎=やまだ^たろう", "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    ("US", "3", 3),
    ("US", 3, 3),
    ("DS", "1.80", "1.80"),
    ("FD", "81.5", 81.5),
    ("LT", "line\r\nbreak\tok", "line\r\nbreak\tok"),
])
def test_vr_fit_accepts_valid_values(kind: str, value: object, fitted: object) -> None:
    assert vr.fit(kind, value) == fitted


def test_truncate_only_helps_with_length() -> None:
    assert vr.fit("LO", "A" * 70, truncate=True) == "A" * 64
    assert vr.fit("PN", "A" * 70 + "^B", truncate=True) == "A" * 64
    with pytest.raises(vr.VRProblem, match="backslash"):
        vr.fit("LO", "a\\b", truncate=True)


def test_max_values() -> None:
    assert vr.max_values("1") == 1
    assert vr.max_values("1-n") == 0
    assert vr.max_values("1-3") == 3
    assert vr.max_values("2-2n") == 0
