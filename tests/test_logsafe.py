"""bridge.logsafe.shown: peer text on one log line, escaped and bounded."""

from __future__ import annotations

import logging

import pytest

from bridge.logsafe import ELLIPSIS, shown


@pytest.mark.parametrize(("value", "expected"), [
    ("CT01", "CT01"),
    ("", ""),
    ("EVIL\nINFO forged line", "EVIL\\x0aINFO forged line"),
    ("A\r\x1b[31mB\x7f", "A\\x0d\\x1b[31mB\\x7f"),
    ("tab\there", "tab\\x09here"),
    ("back\\slash", "back\\\\slash"),
    ("Müller", "Müller"),  # printable non-ASCII stays readable
    ("a\u2028b\u202ec\x85", "a\\u2028b\\u202ec\\x85"),  # line/para separators, bidi, NEL
    ("\U000e0001", "\\U000e0001"),
    (b"AE\n\xff\\", "AE\\x0a\\xff\\\\"),
])
def test_control_characters_are_escaped(value: str | bytes, expected: str) -> None:
    assert shown(value) == expected


def test_long_values_are_cut_with_an_ellipsis() -> None:
    assert shown("A" * 64) == "A" * 64
    cut = shown("A" * 65)
    assert cut == "A" * 63 + ELLIPSIS and len(cut) == 64
    assert shown("ABCDEFGHIJ", limit=5) == "ABCD" + ELLIPSIS


def test_an_escape_is_never_split_by_the_cut() -> None:
    # "AB" + "\x0a" is 6 characters; at limit 5 the escape does not fit whole.
    assert shown("AB\nCD", limit=5) == "AB" + ELLIPSIS
    assert shown("\n" * 100, limit=10) == "\\x0a\\x0a" + ELLIPSIS
    assert shown("\n", limit=1) == ELLIPSIS
    for limit in range(1, 20):
        assert len(shown("x\n\\é\u2028" * 10, limit=limit)) <= limit


def test_a_huge_value_costs_no_more_than_its_limit() -> None:
    huge = "\n" * 10_000_000
    assert shown(huge, limit=16) == "\\x0a\\x0a\\x0a" + ELLIPSIS


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit must be at least 1"):
        shown("x", limit=0)


def test_a_forged_line_stays_one_record(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        logging.getLogger("test").info("calling AE %s", shown("X\n2026 ERROR forged"))
    assert caplog.text.count("\n") == 1
