from datetime import datetime

import pytest

from bridge.hl7.ack import ErrorDetail, build_ack, hl7_error_text, read_header, read_header_bytes
from bridge.hl7.message import parse_message

NOW = datetime(2026, 11, 28, 9, 5, 7)

ORM_231 = ("MSH|^~\\&|RIS|RADIOLOGY|MWL|HOSPITAL|20261128090000||ORM^O01|CTRL-1|P|2.3.1"
           "|||AL|NE||8859/1\r"
           "PID|1||12345^^^HOSP||M\xfcller^Hans\r"
           "ORC|NW|PLC1\r")
OMI_251 = ("MSH|^~\\&|RIS|RADIOLOGY|MWL|HOSPITAL|20261128090000||OMI^O23^OMI_O23|CTRL-2|T|2.5.1"
           "||||||UNICODE UTF-8\r"
           "PID|1||12345\r")


def ack_of(message: str, code: str = "AA", **kwargs: object):
    header = read_header(message)
    assert header is not None
    text = build_ack(header, code, control_id="ACK-9", now=NOW, **kwargs)  # type: ignore[arg-type]
    assert text.endswith("\r") and "\n" not in text
    return parse_message(text)


def test_v231_header_and_msa():
    ack = ack_of(ORM_231)
    msh = ack.msh
    assert [msh.value(n) for n in (3, 4, 5, 6)] == ["MWL", "HOSPITAL", "RIS", "RADIOLOGY"]
    assert msh.value(7) == "20261128090507"
    assert msh.raw(9) == "ACK^O01^ACK"  # v2.3.1 defines MSG.3, the message structure
    assert (msh.value(10), msh.value(11), msh.value(12), msh.value(18)) == \
        ("ACK-9", "P", "2.3.1", "8859/1")
    msa = ack.first("MSA")
    assert (msa.value(1), msa.value(2)) == ("AA", "CTRL-1")
    assert msa.raw(3) == ""
    assert ack.first("ERR") is None


def test_v251_message_structure_and_processing_id():
    msh = ack_of(OMI_251).msh
    assert msh.raw(9) == "ACK^O23^ACK"
    assert (msh.value(11), msh.value(12), msh.value(18)) == ("T", "2.5.1", "UNICODE UTF-8")


def test_processing_id_defaults_to_p():
    message = "MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|C1||2.3\rPID|1\r"
    assert ack_of(message).msh.value(11) == "P"


def test_v23_msh9_has_no_structure_component():
    message = "MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|C1|P|2.3\rPID|1\r"
    assert ack_of(message).msh.raw(9) == "ACK^O01"


DETAIL = ErrorDetail(code=101, location="PID^1^3^1^1", text="Patient ID missing (PID-3)")


def test_before_v25_err_is_eld_only_and_the_sentence_is_in_msa3():
    ack = ack_of(ORM_231, "AE", errors=[DETAIL])
    assert ack.first("MSA").value(3) == "Patient ID missing (PID-3)"
    err = ack.first("ERR")
    # ERR-1, ELD (v2.3.1): segment ^ sequence ^ field ^ code&text&table; nothing more
    assert [err.value(1, c) for c in (1, 2, 3)] == ["PID", "1", "3"]
    assert [err.value(1, 4, s) for s in (1, 2, 3)] == \
        ["101", "Required field missing", "HL70357"]
    assert err.field_count() == 1


def test_from_v25_err_has_the_v25_fields_and_no_eld():
    ack = ack_of(OMI_251, "AE", errors=[DETAIL], text="see ERR")
    assert ack.first("MSA").value(3) == "see ERR"
    err = ack.first("ERR")
    assert err.raw(1) == ""
    assert err.raw(2) == "PID^1^3^1^1"
    assert [err.value(3, c) for c in (1, 2, 3)] == ["101", "Required field missing", "HL70357"]
    assert err.value(4) == "E"
    assert err.value(8) == "Patient ID missing (PID-3)"


@pytest.mark.parametrize("message", [ORM_231, OMI_251])
def test_err_fields_both_fills_both_generations(message: str):
    header = read_header(message)
    text = build_ack(header, "AE", errors=[DETAIL], control_id="A", now=NOW,
                     err_fields="both")
    err = parse_message(text).first("ERR")
    assert err.value(1, 1) == "PID" and err.value(1, 4) == "101"
    assert err.raw(2) == "PID^1^3^1^1" and err.value(8) == "Patient ID missing (PID-3)"


def test_one_err_per_detail_and_empty_location():
    details = [ErrorDetail(207, "", "store unavailable"),
               ErrorDetail(103, "ORC^1^1", "unknown order control", severity="W")]
    errs = ack_of(ORM_231, "AR", errors=details).all("ERR")
    assert len(errs) == 2
    assert errs[0].raw(1) == "^^^207&Application internal error&HL70357"
    assert errs[1].value(1, 1) == "ORC"
    errs = ack_of(OMI_251, "AR", errors=details).all("ERR")
    assert errs[0].raw(2) == "" and errs[0].value(3, 1) == "207"
    assert errs[1].raw(2) == "ORC^1^1" and errs[1].value(4) == "W"


def test_free_text_is_escaped():
    text = "bad | value ^ with ~ all & delimiters \\ and\nnewline"
    ack = ack_of(OMI_251, "AE", text=text, errors=[ErrorDetail(102, "PID^1^7", text)])
    assert ack.first("MSA").value(3) == text
    assert ack.first("ERR").value(8) == text
    assert ack.first("ERR").field_count() == 8
    assert "|" not in ack.first("MSA").raw(3)


def test_incoming_delimiters_are_used():
    message = "MSH#$%\\*#RIS#R#MWL#H#20261128##ORM$O01#C\\S\\1#P#2.5.1\rPID#1\r"
    ack_text = build_ack(read_header(message), "AE", control_id="A1", now=NOW,
                         errors=[ErrorDetail(101, "PID^1^3", "x#y")])
    assert ack_text.startswith("MSH#$%\\*#MWL#H#RIS#R#20261128090507##ACK$O01$ACK#A1#P#2.5.1\r")
    ack = parse_message(ack_text)
    assert ack.first("MSA").raw(2) == "C\\S\\1"  # MSH-10 echoed as sent
    assert ack.first("MSA").value(2) == "C$1"
    err = ack.first("ERR")
    assert err.raw(2) == "PID$1$3" and err.value(8) == "x#y"


def test_unknown_version_and_missing_trigger():
    message = "MSH|^~\\&|RIS|R|MWL|H|20261128||ACK|C1|P|\r"
    assert ack_of(message).msh.raw(9) == "ACK"


def test_invalid_arguments():
    header = read_header(ORM_231)
    with pytest.raises(ValueError, match="acknowledgment code"):
        build_ack(header, "OK", control_id="1", now=NOW)
    with pytest.raises(ValueError, match="0357"):
        ErrorDetail(999, "", "x")
    with pytest.raises(ValueError, match="severity"):
        ErrorDetail(101, "", "x", severity="X")
    with pytest.raises(KeyError, match="999"):
        hl7_error_text(999)


def test_error_texts():
    assert hl7_error_text(101) == "Required field missing"
    assert hl7_error_text(207) == "Application internal error"
    assert hl7_error_text(205) == "Duplicate key identifier"


def test_read_header_ignores_garbage_after_msh():
    message = ORM_231.replace("PID|1", "\x00\x01 not a segment at all") + "!!!\r"
    with pytest.raises(ValueError, match="segment 2 has no valid segment id"):
        parse_message(message)
    header = read_header("\ufeff\r\n" + message)
    assert header is not None
    assert header.value(10) == "CTRL-1" and header.value(9, 2) == "O01"


def test_read_header_unreadable():
    assert read_header("") is None
    assert read_header("PID|1||123\r") is None
    assert read_header("MSHA^~\\&|x") is None
    assert read_header("MSH|\r") is None


def test_read_header_bytes_for_undecodable_frame():
    frame = b"\xef\xbb\xbf" + ORM_231.replace("8859/1", "UNICODE UTF-8").encode("latin-1")
    header = read_header_bytes(frame)
    assert header is not None and header.value(10) == "CTRL-1"
    assert read_header_bytes(b"\x00\xff") is None
