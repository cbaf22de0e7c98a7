"""Files of HL7 messages for ``mwl-bridge import`` (bridge/hl7/batch.py): batch
envelopes, MLLP frames and plain segments; every problem named by line and message
number, and none stops the reading of the rest."""

from __future__ import annotations

from bridge.hl7.batch import read_hl7_file

MSG1 = b"MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|C1|P|2.3.1\rPID|1||P1\r"
MSG2 = b"MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|C2|P|2.3.1\rPID|1||P2\r"
MSG3 = b"MSH|^~\\&|RIS|HOSP|MWL|RAD|20261128||ORM^O01|C3|P|2.3.1\rPID|1||P3\r"


def test_batch_file_gives_its_messages_without_the_envelope() -> None:
    data = (b"FHS|^~\\&|RIS\rBHS|^~\\&|RIS\r" + MSG1 + MSG2 + b"BTS|2\rFTS|1\r")
    f = read_hl7_file(data)
    assert f.problems == []
    assert [m.raw for m in f.messages] == [MSG1, MSG2]
    assert [(m.number, m.line) for m in f.messages] == [(1, 3), (2, 5)]
    assert all(not m.problem for m in f.messages)


def test_missing_bts_is_named_and_the_messages_still_come_back() -> None:
    data = b"FHS|^~\\&|RIS\rBHS|^~\\&|RIS\r" + MSG1 + MSG2 + b"FTS|1\r"
    f = read_hl7_file(data)
    assert len(f.messages) == 2
    assert f.problems == ["the batch opened by BHS on line 2 has no BTS (before line 7); "
                          "the file may be cut short: its messages #1-#2 were read"]


def test_file_cut_short_without_bts_or_fts() -> None:
    f = read_hl7_file(b"FHS|^~\\&|RIS\nBHS|^~\\&|RIS\n" + MSG1.replace(b"\r", b"\n"))
    assert [m.raw for m in f.messages] == [MSG1]
    assert any("has no BTS" in p for p in f.problems)
    assert any("FHS on line 1 has no FTS" in p for p in f.problems)


def test_bts_count_that_disagrees_is_a_problem() -> None:
    f = read_hl7_file(b"BHS|^~\\&|RIS\r" + MSG1 + MSG2 + b"BTS|3\r")
    assert f.problems == ["line 6: BTS-1 says the batch of line 1 holds 3 message(s), the "
                          "file has 2 (messages #1-#2); a message may be missing"]


def test_a_line_that_is_no_segment_marks_only_its_message() -> None:
    broken = MSG2 + b"this is not a segment\r"
    f = read_hl7_file(b"BHS|^~\\&|RIS\r" + MSG1 + broken + MSG3 + b"BTS|3\r")
    assert f.problems == []
    assert [m.number for m in f.messages] == [1, 2, 3]
    assert not f.messages[0].problem and not f.messages[2].problem
    assert f.messages[1].problem == ("line 6 is not an HL7 segment: 'this is not a segment'; "
                                     "the message is not applied")


def test_mllp_frames_one_message_each() -> None:
    data = b"\x0b" + MSG1 + b"\x1c\r" + b"\x0b" + MSG2 + b"\x1c\r"
    f = read_hl7_file(data)
    assert [m.raw for m in f.messages] == [MSG1, MSG2]
    assert f.problems == []


def test_plain_segments_separated_by_blank_lines_with_crlf() -> None:
    data = (MSG1.replace(b"\r", b"\r\n") + b"\r\n" + MSG2.replace(b"\r", b"\r\n"))
    f = read_hl7_file(b"\xef\xbb\xbf" + data)
    assert [m.raw for m in f.messages] == [MSG1, MSG2]


def test_segments_before_any_msh_are_reported_and_skipped() -> None:
    f = read_hl7_file(b"PID|1||P0\r\r" + MSG1)
    assert [m.raw for m in f.messages] == [MSG1]
    assert f.problems == ["line 1: 'PID|1||P0' is outside any message (no MSH before it in "
                          "this block); skipped"]
