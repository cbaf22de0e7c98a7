"""Network attacks on the daemon's DICOM port (issue 10), over real sockets.

Each attack runs against the daemon as a subprocess (tests/e2e's), and ends with
``Target.still_serving``: a new order over MLLP gets AA within 1 s, DCMTK's
echoscu succeeds, and the daemon's resident memory (/proc/PID/status VmRSS)
stayed within RSS_GROWTH_BOUND_MB (64 MB) of its baseline, though the attacks
stream hundreds of MB at it. Every loop and wait is bounded; every target is
127.0.0.1.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.worklist import pdus

from .conftest import Target

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

MB = 1024 * 1024
STREAMS = 8  # connections at once; each would stream 48 MB


def attack(port: int, opening: bytes, results: list[tuple[int, float]],
           release: threading.Event, established: bool = False) -> None:
    started = time.monotonic()
    sock = pdus.established(port) if established else socket.create_connection(
        ("127.0.0.1", port), timeout=10)
    with sock:
        sock.sendall(opening)
        sent = pdus.stream(sock, 48 * MB, seconds=30)
        results.append((sent, time.monotonic() - started))
        # Held open (if the daemon has not closed it) while the daemon's memory is read.
        release.wait(30)


def in_parallel(target: Target, opening: bytes,
                established: bool = False) -> list[tuple[int, float]]:
    """STREAMS attacks at once; the daemon's RSS is checked while all of them are
    still connected (what a daemon that buffers would be holding)."""
    results: list[tuple[int, float]] = []
    release = threading.Event()
    threads = [threading.Thread(target=attack, args=(target.daemon.dicom_port, opening,
                                                     results, release, established))
               for _ in range(STREAMS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(results) < STREAMS and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        target.check_memory()
    finally:
        release.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(results) == STREAMS
    return results


@pytest.mark.parametrize("claim", [pdus.header(0x01, 0xFFFFFFFF),
                                   pdus.header(0x04, 0xFFFFFFFF)],
                         ids=["a-associate-rq", "p-data-first"])
def test_4_gib_headers_then_streams_before_identification(target: Target, claim):
    mark = len(target.daemon.log)
    results = in_parallel(target, claim)
    for sent, took in results:
        assert sent < 24 * MB and took < 15, (sent // MB, took)
    refusals = target.wait_for(mark, "A-ABORT sent", STREAMS)
    assert len(refusals) == STREAMS
    assert all("WARNING" in line and "dicom.max_associate_rq_bytes" in line
               for line in refusals)
    target.still_serving()


def test_4_gib_p_data_inside_an_association(target: Target):
    mark = len(target.daemon.log)
    results = in_parallel(target, pdus.header(0x04, 0xFFFFFFFF), established=True)
    assert all(sent < 24 * MB for sent, _ in results)
    assert len(target.wait_for(mark, "a P-DATA-TF PDU of 4294967295 bytes", STREAMS)) == STREAMS
    target.still_serving()


def test_a_message_in_endless_fragments(target: Target):
    mark = len(target.daemon.log)
    fragment = pdus.p_data(3, 0x00, b"\x00" * 16000)  # a data set that never ends
    with pdus.established(target.daemon.dicom_port) as peer:
        peer.settimeout(5)
        sent = 0
        for _ in range(3000):  # 48 MB at most
            try:
                peer.sendall(fragment)
            except OSError:
                break
            sent += len(fragment)
        assert pdus.closed_within(peer, 5)
    assert sent < 24 * MB
    assert target.wait_for(mark, "longer than 1048576 bytes (dicom.max_message_bytes)")
    target.still_serving()


def test_a_peer_that_stops_in_the_middle_of_a_pdu(target: Target):
    with socket.create_connection(("127.0.0.1", target.daemon.dicom_port), timeout=10) as peer:
        peer.sendall(pdus.associate_rq()[:50])
        started = time.monotonic()
        assert pdus.closed_within(peer, 10)
        assert time.monotonic() - started < 6  # dicom.network_timeout_s: 2
    target.still_serving()


@pytest.mark.parametrize(("calling", "reason"), [
    (b"X\n2026-11-28 INFO", 3), ("MÜLLER".encode("latin-1"), 3), (b"A\\B", 3)])
def test_a_calling_ae_title_that_would_forge_log_lines(target: Target, calling, reason):
    mark = len(target.daemon.log)
    with socket.create_connection(("127.0.0.1", target.daemon.dicom_port), timeout=10) as peer:
        peer.sendall(pdus.associate_rq(calling=calling))
        assert pdus.read_pdu(peer) == bytes([3, 0, 0, 0, 0, 4, 0, 1, 1, reason])
    rejected = target.wait_for(mark, "rejected (result 1, source 1, reason 3)")
    time.sleep(0.3)  # the association thread's last words, if any
    lines = target.lines_since(mark)
    assert len(rejected) == 1 and "WARNING" in rejected[0], lines
    assert not any(line.startswith("2026-11-28 INFO") for line in lines), lines
    assert not any("Traceback" in line for line in lines), lines
    target.still_serving()


def test_from_an_address_outside_the_allow_list(target: Target):
    mark = len(target.daemon.log)
    with socket.create_connection(("127.0.0.1", target.daemon.dicom_port), timeout=10,
                                  source_address=("127.0.0.2", 0)) as peer:
        try:
            peer.sendall(pdus.associate_rq())
            got = pdus.read_pdu(peer, timeout=5)
        except OSError:
            got = b""
    assert got == b""  # closed before a byte was read: nothing was answered
    closed = target.wait_for(mark, "closed at accept")
    assert len(closed) == 1 and "127.0.0.2 is not in dicom.allowed_hosts" in closed[0]
    target.still_serving()


@pytest.mark.parametrize("identifier", [bytes(range(7, 107)),
                                        b"\x10\x00\x20\x00\xf0\xff\xff\xffP1"])
def test_a_c_find_identifier_that_is_no_data_set(target: Target, identifier):
    with pdus.established(target.daemon.dicom_port) as peer:
        peer.sendall(pdus.c_find_rq(identifier))
        ((status, comment),) = pdus.responses(peer)
    assert status == 0xC000 and comment.startswith("malformed identifier: ")
    target.still_serving()


def test_an_mpps_with_an_impossible_date(target: Target):
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", target.daemon.dicom_port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = []
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261301"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.Modality = "CT"
    try:
        rsp, _ = assoc.send_n_create(ds, ModalityPerformedProcedureStep,
                                     "1.2.826.0.1.3680043.8.498.4242")
    finally:
        assoc.release()
    assert rsp.Status == 0x0106
    target.still_serving()
