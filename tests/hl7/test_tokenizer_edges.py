"""Edges of the ER7 tokenizer a RIS integration engineer relies on: ISO 2022 switches
and the text after them, malformed or unknown escapes (kept as sent, never guessed,
never dropped), formatting escapes (dropped), field counts and the parse error's
code and location (docs/hl7-interface.md, sections 3 and 4)."""

from __future__ import annotations

import pytest

from bridge.hl7 import HL7ParseError, parse_message, unescape
from bridge.hl7.message import Delimiters

ASCII = Delimiters(codec="ascii")
UTF8 = Delimiters(codec="utf-8")
# A decoder that loops on a switched run must fail here, not stall the suite.
pytestmark = pytest.mark.timeout(10)

MSH = "MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|1|P|2.3.1"


def _pid5(value: str, codec: str = "ascii") -> str:
    """PID-5.1 of a one-patient message whose PID-5.1 is ``value`` as sent."""
    message = parse_message(f"{MSH}\rPID|1||X||{value}^Given\r", codec=codec)
    pid = message.first("PID")
    assert pid is not None
    assert pid.value(5, 2) == "Given"  # the escapes stayed inside their component
    return pid.value(5, 1)


# ---- ISO 2022 switches: into a set, and back -------------------------------------

@pytest.mark.parametrize(("sent", "expected"), [
    # ISO-IR 87 (JIS X 0208) and back to ASCII, text after the switch back kept
    ("\\M2442\\;3ED\\C2842\\ Taro", "山田 Taro"),
    # ISO-IR 159 (JIS X 0212, ESC $ ( D), then ASCII
    ("\\M242844\\l?\\C2842\\ Ogai", "鷗 Ogai"),
    # ISO-IR 149 (KS X 1001) as 7-bit G0 (ESC $ ( C), then ASCII
    ("\\M242843\\H+\\C2842\\ Gildong", "홍 Gildong"),
    # ISO-IR 100 (Latin-1, G1) with its bytes as \X..\, then ASCII
    ("\\C2D41\\Ren\\XE9\\\\C2842\\ Dupont", "René Dupont"),
    # JIS X 0201 Roman (ESC ( J) is ASCII for a name
    ("\\M2442\\;3ED\\C284A\\-Yamada", "山田-Yamada"),
])
def test_a_switch_and_the_switch_back_in_a_message(sent, expected):
    assert _pid5(sent) == expected


def test_switching_in_and_out_twice_keeps_each_run_apart():
    # family and given name in JIS X 0208, an ASCII space between them: every run
    # ends at the next switch, not at the last one, and ASCII runs go on after.
    assert _pid5("\\M2442\\;3\\C2842\\ \\M2442\\ED\\C2842\\") == "山 田"
    assert _pid5("\\M2442\\;3\\C2842\\-\\M2442\\ED\\C2842\\-end") == "山-田-end"


def test_a_switch_right_after_another_escape_is_still_a_switch():
    # \H\ (highlight on) directly before the switch: the switch is found all the same
    assert _pid5("\\H\\\\M2442\\;3ED\\C2842\\\\N\\") == "山田"


def test_a_latin2_run_in_an_ascii_frame_takes_its_hex_bytes_and_escapes():
    # ASCII frame (empty MSH-18): F8/E1/ED are no ASCII, but in the run after
    # ESC - B they are ISO 8859-2 bytes; \S\ in the run is the component character.
    assert _pid5("\\C2D42\\Dvo\\XF8\\\\XE1\\k\\S\\Anton\\XED\\n") == "Dvořák^Antonín"
    # an escape right at the start of the run's second character
    assert _pid5("\\C2D41\\J\\XE9\\r\\XF4\\me") == "Jérôme"
    # \E\ and \T\ inside a switched run are the escape and sub-component characters
    assert _pid5("\\C2D41\\a\\E\\b\\T\\c\\XE9\\") == "a\\b&cé"


def test_a_switch_to_an_unknown_set_is_kept_from_that_switch_on():
    # ESC - Z designates nothing known: that run is kept as sent, the run before it
    # is still decoded in its own set.
    assert unescape("\\C2D41\\Ren\\XE9\\\\C2D5A\\xyz", ASCII) == "René\\C2D5A\\xyz"
    assert _pid5("Smith\\C2D5A\\xy") == "Smith\\C2D5A\\xy"


def test_a_run_the_set_cannot_read_is_kept_as_sent():
    # a lone Latin-1 byte is no JIS X 0208 text: kept, escapes and all
    sent = "\\M2442\\\\XE9\\"
    assert unescape(sent, ASCII) == sent


def test_an_empty_escape_is_data_and_does_not_swallow_the_next_one():
    # two escape characters with nothing between them: kept as they are, and the
    # \S\ after them is still the component character
    assert unescape("\\\\\\S\\", ASCII) == "\\\\^"
    assert unescape("\\C2D41\\\\\\b\\S\\", ASCII) == "\\\\b^"
    assert unescape("\\\\\\C2D41\\\\XE9\\", ASCII) == "\\\\é"  # switch after it


def test_hex_like_text_before_an_escape_is_text():
    # "X1F" is a hex escape only between two escape characters
    assert unescape("AX1F\\T\\2", ASCII) == "AX1F&2"


def test_a_lone_escape_after_a_switch_back_is_data():
    assert unescape("\\M2442\\;3ED\\C2842\\ Taro\\", ASCII) == "山田 Taro\\"


# ---- \Xhh\ ------------------------------------------------------------------------

def test_multibyte_utf8_hex_escape_in_a_utf8_message():
    assert _pid5("\\XE5B1B1E794B0\\", codec="utf-8") == "山田"
    assert _pid5("\\XE5B1\\\\XB1E794B0\\ Taro", codec="utf-8") == "山田 Taro"


@pytest.mark.parametrize("sent", [
    "Caf\\XE9\\abc",        # E9 alone is no UTF-8, text follows it
    "\\XE9\\\\XE8\\",       # two invalid bytes: both kept exactly, nothing between
    "a\\XZZ\\b",            # not hex
    "a\\XG1\\b",            # first digit not hex
    "AX1F\\T",              # unterminated \T at the end of a code
    "a\\XABC\\b",           # odd number of hex digits
    "A\\X\\B",              # \X\ with no bytes at all
    "Caf\\XE9",             # unterminated: the escape character is data
    "a\\Q\\b",              # no such escape
    "a\\Cxyz\\b",           # looks like a switch, is none
    "a\\C28\\b",            # a switch needs four hex digits
])
def test_malformed_invalid_or_unknown_escapes_are_kept_as_sent(sent):
    assert unescape(sent, UTF8) == sent


# ---- escapes that carry no data --------------------------------------------------

@pytest.mark.parametrize("sent", [
    "\\H\\Yamada\\N\\",
    "Yam\\.sp\\ada", "Yam\\.sp2\\ada",
    "Yam\\.in+4\\ada", "Yam\\.ti-2\\ada", "Yam\\.sk3\\ada",
    "Yam\\.ce\\ada", "Yam\\.fi\\ada", "Yam\\.nf\\ada",
])
def test_highlighting_and_formatting_escapes_are_dropped(sent):
    assert unescape(sent, ASCII) == "Yamada"


def test_line_break_is_kept_and_lowercase_commands_are_not_guessed():
    assert unescape("a\\.br\\b", ASCII) == "a\nb"
    assert unescape("a\\n\\b", ASCII) == "a\\n\\b"  # \n\ is no \N\


# ---- addressing fields ----------------------------------------------------------

def test_msh_1_and_msh_2_are_the_delimiters_as_sent_and_msh_3_is_split():
    message = parse_message("MSH|^~\\&|RIS^X|HOSP|MWL|RAD|20261128||ORM^O01|1|P|2.3.1\r")
    assert message.msh.field(1) == ((("|",),),)
    assert message.msh.value(2) == "^~\\&"  # not split at ^ or ~, no escape decoded
    assert message.msh.field(2) == ((("^~\\&",),),)
    assert message.msh.value(3, 1) == "RIS"
    assert message.msh.value(3, 2) == "X"


def test_repetitions_components_and_absent_positions():
    message = parse_message(f"{MSH}\rPID|1||A^^^H1~B^^^H2||\r")
    pid = message.first("PID")
    assert pid is not None
    assert pid.value(3) == "A"
    assert pid.value(3, 4) == "H1"
    assert pid.value(3, repetition=2) == "B"
    assert pid.value(3, 4, repetition=2) == "H2"
    assert pid.value(3, repetition=3) == ""
    assert pid.value(3, 9) == ""
    assert pid.value(3, 1, 2) == ""
    assert pid.field(2) == ()  # an empty field has no repetitions at all
    assert pid.field(40) == ()
    assert pid.value(40) == ""


# ---- field counts ----------------------------------------------------------------

def test_field_count_counts_trailing_empty_fields():
    message = parse_message(f"{MSH}||\rPID|1||X||Name||\rZZZ\r")
    assert message.msh.field_count() == 14  # MSH-1 counts, MSH-13 and MSH-14 empty
    pid = message.first("PID")
    assert pid is not None and pid.field_count() == 7
    zzz = message.first("ZZZ")
    assert zzz is not None and zzz.field_count() == 0


# ---- parse errors ----------------------------------------------------------------

def test_parse_error_without_a_header_has_no_location_and_code_100():
    with pytest.raises(HL7ParseError) as info:
        parse_message("PID|1||X\r")
    assert str(info.value) == "message does not start with an MSH segment"
    assert info.value.location == ""
    assert info.value.code == 100  # segment sequence error (table 0357)


def test_parse_error_for_a_bad_segment_id_names_the_segment_number():
    with pytest.raises(HL7ParseError) as info:
        parse_message(f"{MSH}\rPID|1\rpv1|1\r")
    assert str(info.value) == "segment 3 has no valid segment id"
    assert (info.value.location, info.value.code) == ("", 100)


def test_parse_error_for_bad_encoding_characters_points_at_msh_2():
    with pytest.raises(HL7ParseError) as info:
        parse_message("MSH|^^^^|RIS|HOSP\r")
    assert (info.value.location, info.value.code) == ("MSH^1^2", 102)
