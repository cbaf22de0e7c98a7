"""MSH-1/MSH-2 that no ACK can be written with (fuzz findings; the answers over a
real MLLP connection are in tests/orders/test_broken_delimiters.py)."""

from __future__ import annotations

from datetime import datetime

import pytest

from bridge.hl7 import (
    ErrorDetail,
    build_ack,
    decode_frame,
    parse_message,
    read_header,
    read_header_bytes,
    read_msh18,
)
from bridge.hl7.message import HL7ParseError

NOW = datetime(2026, 11, 28, 9, 49, 56)
HEADER = "MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|X1|P|2.3.1||||||UNICODE UTF-8\r"


@pytest.mark.parametrize("sep", ["\x1b", "\x0e", "\x0f", "\x00", "\x7f"])
def test_a_control_character_in_msh1_is_no_field_separator(sep: str) -> None:
    text = HEADER.replace("|", sep)
    data = text.encode("latin-1")
    assert read_msh18(data) == ""  # used to raise ValueError: empty separator (ESC, SO)
    assert decode_frame(data, default="iso8859-1", aliases={}).text == text
    assert read_header(text) is None and read_header_bytes(data) is None  # not HL7
    with pytest.raises(HL7ParseError) as caught:
        parse_message(text)
    assert caught.value.location == "MSH^1^1"


def test_msh18_after_iso2022_text_is_still_read() -> None:
    data = (HEADER.replace("|HOSP|", "|\x1b$B8|@8\x1b(B|").replace("UNICODE UTF-8", "ISO IR87")
            .encode("latin-1"))
    assert read_msh18(data) == "ISO IR87"


@pytest.mark.parametrize("sep", ["\\", "^", "~", "&"])
def test_a_field_separator_among_the_encoding_characters_still_gets_an_ack_that_parses(
        sep: str) -> None:
    text = "MSH" + sep + "^~\\&|RIS|HOSP|||20261128||ORM^O01|X1|P|2.3.1\r"
    header = read_header(text)
    assert header is not None
    d = header.delimiters
    assert d.field == sep and len({d.field, d.component, d.repetition, d.escape,
                                   d.subcomponent}) == 5
    with pytest.raises(HL7ParseError) as caught:
        parse_message(text)
    assert (caught.value.location, caught.value.code) == ("MSH^1^2", 102)
    assert f"MSH-1 (field separator) is {sep!r}" in str(caught.value)
    error = ErrorDetail(102, "MSH^1^2", str(caught.value))
    ack = parse_message(build_ack(header, "AR", errors=[error], control_id="A1", now=NOW))
    assert ack.first("MSA").value(1) == "AR"  # type: ignore[union-attr]
    assert ack.first("ERR").value(8) == str(caught.value)  # type: ignore[union-attr]
