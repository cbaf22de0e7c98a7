"""How the tokenizer reads the start of a message: what may come before "MSH", the
shortest text that is a header at all, MSH-1 and MSH-2 with 3, 4, 5 and more characters,
the exact text, ERL location and code of every header error (docs/hl7-interface.md,
section 4), which lines count as segments, and ``parse_header``: the same checks, its
``^~\\&`` fallback for a broken MSH-2 and when it must raise instead, and the cap on
how many header fields it splits.

``parse_message`` and ``parse_header`` must agree on everything before the fallback:
the ACK for a message is written from ``parse_header`` while the message itself was
refused by ``parse_message``, so each shared case runs through both.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from bridge.hl7.message import (
    Delimiters,
    HL7ParseError,
    Segment,
    escape,
    parse_header,
    parse_message,
)

HEADER = "MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|1|P|2.3.1"
NO_MSH = "message does not start with an MSH segment"
MSH1_ERROR = ("MSH-1 (field separator) is a letter, digit, white space or control "
              "character")


def msh2_error(got: str, hint: str = "") -> str:
    """The text of the MSH-2 error for the encoding characters ``got``."""
    return ("MSH-2 (encoding characters) must be four characters that are not letters, "
            "digits, white space or control characters (component, repetition, escape, "
            f"sub-component, e.g. ^~\\&); got {got!r}{hint}")


def _header_of_message(text: str) -> Segment:
    return parse_message(text).msh


def _header_alone(text: str) -> Segment:
    return parse_header(text)


READERS = pytest.mark.parametrize("read", [_header_of_message, _header_alone],
                                  ids=["parse_message", "parse_header"])


# ---- what may come before "MSH" --------------------------------------------------

@READERS
@pytest.mark.parametrize("prefix", [
    "\ufeff", "\x0b", " \t", "\r\n", "\r\n\r\n", "\ufeff\x0b\r\n \t",
], ids=["bom", "vt", "space-tab", "crlf", "blank-lines", "all-of-them"])
def test_a_bom_vt_and_white_space_before_msh_are_skipped(
        read: Callable[[str], Segment], prefix: str) -> None:
    msh = read(prefix + HEADER)
    assert msh.name == "MSH"
    assert msh.raw_fields[:3] == ["MSH", "^~\\&", "RIS"]
    assert msh.value(9, 2) == "O01"


@READERS
@pytest.mark.parametrize("prefix", [
    "X",        # any other character, even one the skipped set does not hold
    "\x0c",     # form feed: white space to Python, not skipped by the tokenizer
    "\x1c",     # the MLLP end byte (white space to str.isspace) is framing, not text
    "\x00",
], ids=["letter", "form-feed", "fs", "nul"])
def test_anything_else_before_msh_is_no_header(
        read: Callable[[str], Segment], prefix: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        read(prefix + HEADER)
    assert (str(caught.value), caught.value.location, caught.value.code) == (NO_MSH, "", 100)


# ---- the shortest header ---------------------------------------------------------

@READERS
@pytest.mark.parametrize("text", ["MSH|^~\\", "\ufeffMSH|^~\\", "MSH", "msh|^~\\&|A"],
                         ids=["7-chars", "7-chars-after-bom", "MSH-alone", "lower-case"])
def test_shorter_than_8_characters_or_no_msh_is_no_header(
        read: Callable[[str], Segment], text: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        read(text)
    assert (str(caught.value), caught.value.location, caught.value.code) == (NO_MSH, "", 100)


@READERS
def test_8_characters_are_a_header_whose_msh2_is_not_ended(
        read: Callable[[str], Segment]) -> None:
    # "MSH|^~\&" with no field separator after MSH-2: the header is there, MSH-2 is
    # what is wrong with it (it counts as empty until a separator ends it)
    with pytest.raises(HL7ParseError) as caught:
        read("MSH|^~\\&")
    assert (str(caught.value), caught.value.location, caught.value.code) == (
        msh2_error(""), "MSH^1^2", 102)


@READERS
def test_9_characters_with_the_separator_after_msh2_are_a_whole_header(
        read: Callable[[str], Segment]) -> None:
    msh = read("MSH|^~\\&|")
    assert msh.raw_fields == ["MSH", "^~\\&", ""]
    assert msh.delimiters == Delimiters()


# ---- MSH-1 and MSH-2 -------------------------------------------------------------

@READERS
@pytest.mark.parametrize("text", [
    "MSHA^~\\&ARISAHOSP", "MSH1^~\\&1RIS1HOSP", "MSH ^~\\& RIS HOSP", "MSH\t^~\\&\tRIS",
], ids=["letter", "digit", "space", "tab"])
def test_a_letter_digit_or_white_space_in_msh1_is_refused_at_msh1(
        read: Callable[[str], Segment], text: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        read(text)
    assert (str(caught.value), caught.value.location, caught.value.code) == (
        MSH1_ERROR, "MSH^1^1", 102)


@READERS
@pytest.mark.parametrize(("text", "got"), [
    ("MSH|^~\\|RIS", "^~\\"),                 # 3 characters
    ("MSH||RIS|HOSP", ""),                      # empty: MSH-2 ends at once
    ("MSH|^~\\&ABCDEFGH|RIS", "^~\\&ABCD"),     # too long and letters: quoted cut at 8
    ("MSH|^~\\A|RIS", "^~\\A"),                 # a letter
    ("MSH|^~\\7|RIS", "^~\\7"),                 # a digit
    ("MSH|^~ &|RIS", "^~ &"),                   # a space
    ("MSH|^~\\\x1b|RIS", "^~\\\x1b"),           # a control character (ESC)
    ("MSH|^~\\&", ""),                          # never ended by a field separator
], ids=["3-chars", "empty", "long-with-letters", "letter", "digit", "space", "esc",
        "not-ended"])
def test_msh2_that_is_short_or_holds_an_unusable_character_is_refused_at_msh2(
        read: Callable[[str], Segment], text: str, got: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        read(text)
    assert (str(caught.value), caught.value.location, caught.value.code) == (
        msh2_error(got), "MSH^1^2", 102)


@READERS
@pytest.mark.parametrize(("text", "quoted"), [
    ("MSH|^^\\&|RIS", "^^\\&"),
    ("MSH|^^\\&#|RIS", "^^\\&"),   # 5 characters: only the four delimiters are quoted
    ("MSH|^~~&|RIS", "^~~&"),
], ids=["two-the-same", "two-the-same-with-truncation-char", "repetition-twice"])
def test_msh2_with_a_repeated_delimiter_is_refused_quoting_its_four_characters(
        read: Callable[[str], Segment], text: str, quoted: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        read(text)
    sep = text[3]
    assert (str(caught.value), caught.value.location, caught.value.code) == (
        f"MSH-2 (encoding characters) {quoted!r} must be four different characters, "
        f"none of them the field separator {sep!r} (e.g. ^~\\&)", "MSH^1^2", 102)


@READERS
@pytest.mark.parametrize(("text", "delimiters", "msh3"), [
    ("MSH|^~\\&|RIS^X", Delimiters(), "RIS^X"),
    ("MSH|^~\\&#|RIS", Delimiters(), "RIS"),    # v2.7 truncation character: not a delimiter
    ("MSH#$%*@#RIS$X", Delimiters(field="#", component="$", repetition="%", escape="*",
                                  subcomponent="@"), "RIS$X"),
], ids=["4-chars", "5-chars", "unusual-but-usable"])
def test_msh2_of_4_or_5_usable_characters_gives_the_delimiters(
        read: Callable[[str], Segment], text: str, delimiters: Delimiters,
        msh3: str) -> None:
    msh = read(text)
    assert msh.delimiters == delimiters
    assert msh.raw(3) == msh3
    assert msh.value(3, 1) == "RIS"


def test_the_msh1_hint_is_only_given_when_msh1_is_an_encoding_character() -> None:
    with pytest.raises(HL7ParseError) as caught:
        parse_message("MSH^^~\\&^RIS")
    assert str(caught.value) == msh2_error(
        "", "; MSH-1 (field separator) is '^', one of the usual encoding characters")
    with pytest.raises(HL7ParseError) as caught:
        parse_message("MSH#^~\\A#RIS")
    assert str(caught.value) == msh2_error("^~\\A")


# ---- parse_message: which lines are segments, and the codec ----------------------

def test_white_space_lines_between_segments_are_skipped_and_later_ones_read() -> None:
    message = parse_message(f"{HEADER}\r \r\t\rPID|1||X\r  \rPV1|1\r")
    assert [seg.name for seg in message.segments] == ["MSH", "PID", "PV1"]
    assert message.segments[2].value(1) == "1"


def test_the_codec_is_latin1_unless_the_caller_names_the_frames() -> None:
    assert parse_message(HEADER).delimiters == Delimiters()
    assert parse_message(HEADER).delimiters.codec == "latin-1"
    message = parse_message(HEADER, codec="utf-8")
    assert message.delimiters == Delimiters(codec="utf-8")
    assert message.msh.delimiters.codec == "utf-8"


# ---- parse_header: the ^~\& fallback and when it must raise ---------------------

def test_without_standard_delimiters_a_broken_msh2_raises() -> None:
    with pytest.raises(HL7ParseError) as caught:
        parse_header("MSH|^^^^|RIS|HOSP")
    assert (caught.value.location, caught.value.code) == ("MSH^1^2", 102)


@pytest.mark.parametrize(("line", "delimiters", "fields"), [
    ("MSH|^^^^|RIS|HOSP", Delimiters(), ["MSH", "^~\\&", "RIS", "HOSP"]),
    ("MSH|A~\\&|RIS^X", Delimiters(), ["MSH", "^~\\&", "RIS^X"]),
    # MSH-2 ended at once by the only other field separator in the line
    ("MSH||RIS^X", Delimiters(), ["MSH", "^~\\&", "RIS^X"]),
    # a field separator among ^~\&: "|" stands in for it, so all five still differ
    ("MSH~^^^^~RIS~HOSP", Delimiters(field="~", component="^", repetition="|",
                                     escape="\\", subcomponent="&"),
     ["MSH", "^|\\&", "RIS", "HOSP"]),
], ids=["repeated", "letter", "empty-msh2", "separator-is-tilde"])
def test_standard_delimiters_read_a_broken_msh2_as_the_fallback(
        line: str, delimiters: Delimiters, fields: list[str]) -> None:
    msh = parse_header(line, standard_delimiters=True)
    assert msh.delimiters == delimiters
    assert msh.raw_fields == fields
    assert msh.value(2) == delimiters.encoding_characters  # MSH-2 says what was used


@pytest.mark.parametrize(("line", "error", "location"), [
    # MSH-1 itself is unusable: no fallback can read the fields
    ("MSHA^~\\&ARISAHOSP", MSH1_ERROR, "MSH^1^1"),
    # no field separator after MSH-1: nothing past MSH-2 to read
    ("MSH|^~\\&RIS^HOSP", msh2_error(""), "MSH^1^2"),
    ("MSH|^^^^RIS", msh2_error(""), "MSH^1^2"),
], ids=["unusable-msh1", "msh2-never-ended", "repeated-never-ended"])
def test_standard_delimiters_still_raise_when_the_fields_cannot_be_found(
        line: str, error: str, location: str) -> None:
    with pytest.raises(HL7ParseError) as caught:
        parse_header(line, standard_delimiters=True)
    assert (str(caught.value), caught.value.location, caught.value.code) == (
        error, location, 102)


FORTY = "|".join(str(n) for n in range(3, 41))  # MSH-3 .. MSH-40, each its own number


@pytest.mark.parametrize("msh2", ["^~\\&", "^^^^"], ids=["usable", "fallback"])
def test_parse_header_splits_at_most_32_fields_and_keeps_the_rest_in_the_last(
        msh2: str) -> None:
    msh = parse_header(f"MSH|{msh2}|{FORTY}", standard_delimiters=True)
    assert len(msh.raw_fields) == 33
    assert msh.field_count() == 33
    assert (msh.raw(3), msh.raw(4), msh.raw(32)) == ("3", "4", "32")
    assert msh.raw(33) == "|".join(str(n) for n in range(33, 41))
    assert msh.raw(34) == ""


def test_parse_message_splits_every_msh_field() -> None:
    msh = parse_message(f"MSH|^~\\&|{FORTY}").msh
    assert msh.field_count() == 40
    assert (msh.raw(33), msh.raw(40)) == ("33", "40")


# ---- escape ---------------------------------------------------------------------

def test_escape_writes_a_line_feed_as_br_and_other_controls_as_hex() -> None:
    d = Delimiters()
    assert escape("one\ntwo", d) == "one\\.br\\two"
    assert escape("a\rb\x0bc\td", d) == "a\\X0D\\b\\X0B\\c\td"  # TAB is harmless
    assert escape("|^~\\&\n", d) == "\\F\\\\S\\\\R\\\\E\\\\T\\\\.br\\"
