"""Escape sequences (issue 14): ``\\Xhh...\\`` in the message's own charset, and the
documented rule for ``\\.br\\`` and ``\\R\\`` (docs/hl7-interface.md, section 3)."""

from __future__ import annotations

import pytest

from bridge.hl7 import decode_frame, parse_message
from bridge.hl7.message import Delimiters, unescape

UTF8 = Delimiters(codec="utf-8")


@pytest.mark.parametrize(("text", "codec", "expected"), [
    ("Caf\\XC3A9\\", "utf-8", "Café"),
    ("Zo\\XC3\\\\XAB\\", "utf-8", "Zoë"),  # one character split over two escapes
    ("Caf\\XE9\\", "iso8859-1", "Café"),
    ("\\XC1\\", "iso8859-7", "Α"),  # Greek capital alpha in ISO 8859-7
    ("\\X1B24423B3345441B2842\\", "iso2022_jp", "山田"),  # ESC $ B, JIS X 0208
    ("\\XB0A1\\", "gb18030", "啊"),
    ("\\XB0A1\\", "euc_kr", "가"),
])
def test_hex_escape_is_decoded_in_the_charset(text, codec, expected):
    assert unescape(text, Delimiters(codec=codec)) == expected


def test_bytes_not_valid_in_the_charset_are_kept_as_sent():
    assert unescape("Caf\\XE9\\", UTF8) == "Caf\\XE9\\"  # E9 alone is no UTF-8
    assert unescape("\\XE9\\", Delimiters(codec="ascii")) == "\\XE9\\"


def test_a_malformed_hex_escape_is_kept_as_sent():
    assert unescape("a\\XZZ\\b", UTF8) == "a\\XZZ\\b"
    assert unescape("a\\XABC\\b", UTF8) == "a\\XABC\\b"  # odd number of digits


def test_control_characters_from_hex_escapes_are_kept():
    assert unescape("a\\X0D\\b", UTF8) == "a\rb"


def test_line_break_and_repetition_escapes():
    # \.br\ is a line feed in the value; \R\ is the repetition character as data
    assert unescape("one\\.br\\two", UTF8) == "one\ntwo"
    assert unescape("A\\R\\B", UTF8) == "A~B"


def test_parse_message_takes_the_frame_codec():
    frame = (b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|1|P|2.5.1||||||UNICODE UTF-8\r"
             b"PID|1||X||Caf\\XC3A9\\\r")
    decoded = decode_frame(frame, default="ascii", aliases={})
    message = parse_message(decoded.text, codec=decoded.codec)
    assert message.first("PID").value(5) == "Café"
    # without the codec, as before: ISO 8859-1
    assert parse_message(decoded.text).first("PID").value(5) == "CafÃ©"


# \Cxxyy\ and \Mxxyy[zz]\: ISO 2022 switching (HL7 v2 2.7.4), ESC xx yy [zz].
@pytest.mark.parametrize(("text", "codec", "expected"), [
    # ESC $ B (JIS X 0208) ... ESC ( B (back to ASCII)
    ("\\M2442\\;3ED\\C2842\\ Taro", "ascii", "山田 Taro"),
    ("Yamada=\\M2442\\;3ED", "ascii", "Yamada=山田"),  # to the end of the sub-component
    ("\\M242844\\l?", "ascii", "鷗"),  # ESC $ ( D: JIS X 0212
    ("\\M242943\\\\XC8AB\\", "iso8859-1", "홍"),  # ESC $ ) C: KS X 1001, bytes as \X..\
    ("\\M242943\\\u00c8\u00ab", "iso8859-1", "홍"),  # ... or as sent in the frame
    ("a\\C2D46\\\u00e1", "iso8859-1", "aα"),  # ESC - F: ISO 8859-7 in G1
    ("\\C2D41\\Caf\\XE9\\", "utf-8", "Café"),  # \X..\ bytes are in the switched set
    ("\\E\\C2842\\E\\", "ascii", "\\C2842\\"),  # "C2842" between two \E\ is text
])
def test_character_set_switches_are_decoded(text, codec, expected):
    assert unescape(text, Delimiters(codec=codec)) == expected


@pytest.mark.parametrize("text", [
    "a\\C2D5A\\xy",            # ESC - Z: no such set here
    "a\\M2442\\\u00e9",        # a Latin-1 byte is no JIS X 0208 text
])
def test_a_switch_that_cannot_be_read_is_kept_as_sent(text):
    # kept, backslashes and all, so a VR check refuses it with the field's name
    assert unescape(text, Delimiters(codec="iso8859-1")) == text


def test_a_switched_name_in_a_whole_message():
    frame = (b"MSH|^~\\&|RIS|H|MWL|R|20261128||ORM^O01|1|P|2.3.1||||||ASCII~ISO IR87\r"
             b"PID|1||X||\\M2442\\;3ED\\C2842\\^\\M2442\\B@O:\\C2842\\\r")
    decoded = decode_frame(frame, default="ascii", aliases={})
    message = parse_message(decoded.text, codec=decoded.codec)
    assert message.first("PID").value(5, 1) == "山田"
    assert message.first("PID").value(5, 2) == "太郎"
