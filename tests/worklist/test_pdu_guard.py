"""guard.py: what a hostile peer can make the SCP read, over real sockets (issue 10).

The rules are tested on ``PduStream`` alone first (bytes in, verdict out), then
against the running SCP with raw sockets sending what no DICOM library would:
a PDU header claiming 4 GiB followed by a stream of megabytes, a DIMSE message
in endless fragments, a peer that stops mid-PDU, AE titles with control
characters. After each, a real DCMTK echoscu must still succeed.
"""

from __future__ import annotations

import logging
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind

from bridge.worklist.guard import (
    ASSOCIATE_RQ_FIXED,
    PduLimits,
    PduStream,
    abort_pdu,
    reject_pdu,
)
from bridge.worklist.settings import DicomSettings

from . import pdus
from .conftest import DCMTK_ENV, ECHOSCU

LIMITS = PduLimits(associate_rq=64 * 1024, pdata=16384, message=64 * 1024)
MB = 1024 * 1024


def conversation() -> bytes:
    """An A-ASSOCIATE-RQ, a C-ECHO (command, last), a 3-fragment data set, A-RELEASE-RQ."""
    return (pdus.associate_rq()
            + pdus.p_data(1, 0x03, b"\x00" * 80)
            + pdus.p_data(3, 0x00, b"\x01" * 16000)
            + pdus.p_data(3, 0x00, b"\x01" * 16000)
            + pdus.p_data(3, 0x02, b"\x01" * 100)
            + pdus.header(0x05, 4) + b"\x00" * 4)


def fed(data: bytes, chunk: int, limits: PduLimits = LIMITS) -> PduStream:
    stream = PduStream(limits)
    for at in range(0, len(data), chunk):
        stream.feed(data[at:at + chunk])
    return stream


# --- the rules, without a network ---------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 5, 6, 7, 4096, 1 << 20])
def test_a_well_behaved_conversation_passes_whole_however_it_is_read(chunk):
    data = conversation()
    stream = fed(data, chunk)
    assert stream.refusal is None
    assert stream.released == len(data)


def test_the_first_pdu_is_held_until_its_ae_titles_are_checked():
    stream = PduStream(LIMITS)
    rq = pdus.associate_rq()
    stream.feed(rq[:6])
    assert (stream.released, stream.hold_needs) == (0, ASSOCIATE_RQ_FIXED)
    stream.feed(rq[6:6 + ASSOCIATE_RQ_FIXED - 1])
    assert (stream.released, stream.hold_needs) == (0, 1)
    stream.feed(rq[6 + ASSOCIATE_RQ_FIXED - 1:])
    assert (stream.released, stream.hold_needs, stream.refusal) == (len(rq), 0, None)


@pytest.mark.parametrize(("first", "why"), [
    (pdus.header(0x01, 0xFFFFFFFF), "an A-ASSOCIATE-RQ of 4294967295 bytes"),
    (pdus.header(0x01, 64 * 1024 + 1), "an A-ASSOCIATE-RQ of 65537 bytes"),
    # Before the association, even a P-DATA-TF gets only the A-ASSOCIATE-RQ's bound.
    (pdus.header(0x04, 100_000), "a PDU of type 0x04 of 100000 bytes"),
    (pdus.header(0x01, 20), "shorter than its fixed fields"),
])
def test_an_oversized_first_pdu_is_refused_before_its_body(first, why):
    stream = PduStream(LIMITS)
    stream.feed(first + b"\x00" * 100)
    assert stream.refusal is not None and why in stream.refusal.why
    assert (stream.released, stream.refusal.at, stream.refusal.pdu) == (0, 0, abort_pdu())


def test_a_p_data_longer_than_max_pdu_is_refused_at_its_header():
    rq = pdus.associate_rq()
    ok = pdus.p_data(1, 0x03, b"\x00" * (16384 - 6))  # exactly max_pdu: allowed
    stream = fed(rq + ok + pdus.header(0x04, 16385) + b"\x00" * 1000, 4096)
    assert stream.refusal is not None and "16385 bytes" in stream.refusal.why
    assert stream.released == stream.refusal.at == len(rq) + len(ok)


def test_a_message_in_many_small_fragments_is_bounded():
    rq = pdus.associate_rq()
    fragments = b"".join(pdus.p_data(3, 0x00, b"\x00" * 10_000) for _ in range(10))
    stream = fed(rq + fragments, 4096)
    assert stream.refusal is not None and "dicom.max_message_bytes" in stream.refusal.why
    assert stream.refusal.at == len(rq) + 6 * len(pdus.p_data(3, 0x00, b"\x00" * 10_000))


def test_the_last_fragment_starts_a_new_count():
    rq = pdus.associate_rq()
    sets = b"".join(pdus.p_data(3, 0x00, b"\x00" * 30_000) + pdus.p_data(3, 0x02, b"\x00" * 30_000)
                    for _ in range(5))
    limits = PduLimits(64 * 1024, 40_000, 64 * 1024)
    assert fed(rq + sets, 4096, limits).refusal is None


def test_a_pdv_item_that_overruns_its_pdu_is_refused():
    rq = pdus.associate_rq()
    bad = pdus.header(0x04, 20) + struct.pack(">LBB", 1000, 1, 3) + b"\x00" * 14
    stream = fed(rq + bad, 4096)
    assert stream.refusal is not None and "overruns" in stream.refusal.why


@pytest.mark.parametrize(("calling", "called", "reason"), [
    (b"EVIL\nINFO forged", b"MWLBRIDGE", 3),
    ("MÜLLER".encode("latin-1"), b"MWLBRIDGE", 3),
    (b"A\\B", b"MWLBRIDGE", 3),
    (b"CT01\x00\x00\x00", b"MWLBRIDGE", 3),
    (b" " * 16, b"MWLBRIDGE", 3),
    (b"CT01", b"MWL\x1b[2J", 7),
])
def test_a_malformed_ae_title_gets_the_rejection_of_ps3_8(calling, called, reason):
    stream = PduStream(LIMITS)
    rq = pdus.associate_rq(calling=calling, called=called)
    stream.feed(rq)
    refusal = stream.refusal
    assert refusal is not None and refusal.rejected
    assert refusal.pdu == reject_pdu(reason)
    assert refusal.rest_of_pdu == len(rq) - 6 - ASSOCIATE_RQ_FIXED
    assert stream.released == 0
    assert "\n" not in refusal.why and "\x1b" not in refusal.why


# --- the running SCP ------------------------------------------------------------------

def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def echo_ok(port: int) -> bool:
    done = subprocess.run([ECHOSCU, "-aec", "MWLBRIDGE", "127.0.0.1", str(port)],
                          env=DCMTK_ENV, capture_output=True, timeout=30, check=False)
    return done.returncode == 0


def warnings_of(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


@pytest.mark.parametrize("claim", [pdus.header(0x01, 0xFFFFFFFF),
                                   pdus.header(0x04, 0xFFFFFFFF)])
def test_a_4_gib_header_then_a_stream_is_cut_off_unread(new_store, start_scp, caplog, claim):
    scp = start_scp(new_store([]))
    before = rss_kib()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as peer:
        peer.sendall(claim)
        sent = pdus.stream(peer, 64 * MB, seconds=20)
        elapsed = time.monotonic() - started
        got = pdus.read_pdu(peer, timeout=2)
    grown = (rss_kib() - before) // 1024
    # Only what the kernel buffers before the reset got out; before the fix the
    # SCP read all 64 MB (and would have gone on to 4 GiB).
    assert sent < 24 * MB, f"{sent // MB} MB were taken"
    assert elapsed < 10
    assert grown < 16, f"the SCP's process grew by {grown} MB"
    assert got in (b"", abort_pdu()), got
    lines = warnings_of(caplog, "A-ABORT sent")
    assert len(lines) == 1 and lines[0].levelname == "WARNING"
    assert "dicom.max_associate_rq_bytes" in lines[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    assert echo_ok(scp.port)


def test_a_p_data_beyond_max_pdu_ends_the_association(new_store, start_scp, caplog):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_pdu=16384))
    with pdus.established(scp.port) as peer:
        peer.sendall(pdus.header(0x04, 0xFFFFFFFF))
        sent = pdus.stream(peer, 64 * MB, seconds=20)
        assert sent < 24 * MB
        assert pdus.closed_within(peer, 5)
    assert "a P-DATA-TF PDU of 4294967295 bytes, more than the 16384 allowed" in caplog.text
    assert echo_ok(scp.port)


@pytest.mark.filterwarnings("ignore:The value length")
def test_exactly_max_pdu_sized_fragments_pass(new_store, start_scp):
    # pynetdicom fragments to exactly the offered max PDU: the bound must let them in.
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_pdu=4096))
    ae = AE(ae_title="CONSOLE")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE")
    identifier = Dataset()
    identifier.PatientName = "*"
    identifier.RequestedProcedureDescription = "X" * 60 + "*"
    identifier.ReasonForTheRequestedProcedure = "Y" * 20_000  # one 20 kB key: 5 fragments
    try:
        statuses = [s.Status for s, _ in assoc.send_c_find(identifier,
                                                           ModalityWorklistInformationFind)]
    finally:
        assoc.release()
    assert statuses == [0x0000]


def test_a_message_in_endless_fragments_is_cut_at_max_message_bytes(
        new_store, start_scp, caplog):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_pdu=16384,
                                                       max_message_bytes=64 * 1024))
    before = rss_kib()
    with pdus.established(scp.port) as peer:
        fragment = pdus.p_data(3, 0x00, b"\x00" * (16384 - 6))  # data set, never "last"
        sent = 0
        closed = False
        peer.settimeout(5)
        for _ in range(4000):  # 64 MB at most
            try:
                peer.sendall(fragment)
            except OSError:
                closed = True
                break
            sent += len(fragment)
        closed = closed or pdus.closed_within(peer, 5)
    assert closed and sent < 24 * MB, sent
    assert (rss_kib() - before) // 1024 < 16
    assert "a DIMSE message longer than 65536 bytes (dicom.max_message_bytes)" in caplog.text
    assert echo_ok(scp.port)


def test_a_peer_silent_in_the_middle_of_a_pdu_is_dropped(new_store, start_scp, caplog):
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, network_timeout_s=1))
    rq = pdus.associate_rq()
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as peer:
        started = time.monotonic()
        peer.sendall(rq[:40])  # the header and part of the fixed fields, then nothing
        assert pdus.closed_within(peer, 10)
        assert time.monotonic() - started < 5
    assert "no data for 1 s in the middle of a PDU" in caplog.text
    assert echo_ok(scp.port)


@pytest.mark.parametrize(("calling", "called", "reason", "shown"), [
    (b"EVIL\nINFO forged", b"MWLBRIDGE", 3, "calling AE 'EVIL\\x0aINFO forged'"),
    ("MÜLLER".encode("latin-1"), b"MWLBRIDGE", 3, "calling AE 'M\\xdcLLER'"),
    (b"A\\B", b"MWLBRIDGE", 3, "calling AE 'A\\\\B' has a backslash"),
    (b"CT01", b"MWL\rBRIDGE", 7, "called AE 'MWL\\x0dBRIDGE'"),
])
def test_a_malformed_ae_title_is_rejected_in_one_line_without_a_traceback(
        new_store, start_scp, caplog, calling, called, reason, shown):
    scp = start_scp(new_store([]))
    with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as peer:
        peer.sendall(pdus.associate_rq(calling=calling, called=called))
        assert pdus.read_pdu(peer) == reject_pdu(reason)  # 1 permanent, 1 service user
        assert pdus.closed_within(peer, 5)
    time.sleep(0.2)  # let the association thread finish any logging
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    message = lines[0].getMessage()
    assert f"rejected (result 1, source 1, reason {reason})" in message and shown in message
    assert "\n" not in message and "\r" not in message
    assert not [r for r in caplog.records if r.exc_info] and "Traceback" not in caplog.text
    assert echo_ok(scp.port)


def test_dcmtk_gets_calling_ae_not_recognized_for_a_backslash(new_store, start_scp):
    scp = start_scp(new_store([]))
    done = subprocess.run([ECHOSCU, "-v", "-aet", "BAD\\AE", "-aec", "MWLBRIDGE", "127.0.0.1",
                           str(scp.port)], env=DCMTK_ENV, capture_output=True, text=True,
                          timeout=30, check=False)
    out = done.stdout + done.stderr
    assert "Association Rejected" in out and "Calling AE Title Not Recognized" in out


def test_pynetdicom_records_quoting_peers_become_one_line(new_store, start_scp, caplog):
    start_scp(new_store([]))  # installs the filter on pynetdicom's loggers
    try:
        raise ValueError("Invalid 'Calling AE Title' value 'EVIL\nINFO forged'")
    except ValueError as exc:
        logging.getLogger("pynetdicom.dul").error("bad PDU: %s", "x\r\ny", exc_info=exc)
    (record,) = [r for r in caplog.records if r.name == "pynetdicom.dul"]
    assert record.getMessage() == "bad PDU: x\\x0d\\x0ay (ValueError)"
    assert record.exc_info is None


def test_a_refused_connection_frees_its_association_slot_at_once(new_store, start_scp):
    # pynetdicom alone would hold the slot for dicom.acse_timeout_s (30 s) waiting
    # for an A-ASSOCIATE-RQ that is never coming.
    scp = start_scp(new_store([]), dicom=DicomSettings(port=0, max_associations=1))
    for hostile in (pdus.associate_rq(calling=b"EVIL\n"), pdus.header(0x01, 0xFFFFFFFF)):
        with socket.create_connection(("127.0.0.1", scp.port), timeout=10) as peer:
            peer.sendall(hostile)
            assert pdus.closed_within(peer, 5)
        deadline = time.monotonic() + 3
        while not echo_ok(scp.port):
            assert time.monotonic() < deadline, "the refused connection still holds the slot"
            time.sleep(0.1)
