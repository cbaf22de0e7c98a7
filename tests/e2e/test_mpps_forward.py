"""MPPS forwarding as a site runs it: the daemon (a subprocess), a modality
(pynetdicom SCU) performing an exam from the worklist, and a pynetdicom MPPS SCP
standing in for the PACS. The PACS is down and the daemon restarts with requests
still queued: after the restart everything arrives once, in order. A PACS that
refuses a request: the dead letter is in `mwl-bridge mpps forward list`, and
`retry` sends it again."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pynetdicom import AE

from tests.mpps.conftest import MPPS, final_ds
from tests.mpps.mpps_pacs import PacsScp

from .conftest import FIXTURES, RunningDaemon, start_daemon, stop_daemon, write_config
from .test_mpps_roundtrip import KEYS, n_create

UID_A = "1.2.826.0.1.3680043.8.498.66001"
UID_B = "1.2.826.0.1.3680043.8.498.66002"


def forward_config(pacs: PacsScp) -> str:
    return ("mpps:\n"
            "  forward:\n"
            "    poll_interval_s: 0.5\n"
            "    destinations:\n"
            f"      - {{name: pacs, ae_title: {pacs.ae_title}, host: 127.0.0.1, "
            f"port: {pacs.port},\n"
            "         connect_timeout_s: 2, response_timeout_s: 5,\n"
            "         backoff_initial_s: 0.2, backoff_max_s: 1}\n")


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def perform(daemon: RunningDaemon, tmp: Path, *exams: tuple[str, str]) -> None:
    """The modality picks the order's item and runs each (SOP Instance UID, final
    status) exam: N-CREATEs first, then the final N-SETs."""
    (item,) = daemon.findscu(tmp, *KEYS)
    ae = AE(ae_title="CT01")
    ae.add_requested_context(MPPS)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title=daemon.ae_title)
    assert assoc.is_established
    try:
        for uid, _ in exams:
            status, _ = assoc.send_n_create(n_create(item), MPPS, uid)
            assert status.Status == 0x0000
        for uid, final in exams:
            status, _ = assoc.send_n_set(final_ds(final), MPPS, uid)
            assert status.Status == 0x0000
    finally:
        assoc.release()


def listing(daemon: RunningDaemon, *args: str) -> str:
    res = daemon.cli("mpps", "forward", "list", *args)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_pending_forwards_survive_a_restart_and_arrive_once_in_order(tmp_path: Path):
    pacs = PacsScp()  # down while the exams run
    config = write_config(tmp_path, forward_config(pacs))
    daemon = start_daemon(config, tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        perform(daemon, tmp_path, (UID_A, "COMPLETED"), (UID_B, "DISCONTINUED"))
        wait_for(lambda: "cannot connect to PACS@127.0.0.1" in listing(daemon))
    finally:
        assert stop_daemon(daemon) == 0, "\n".join(daemon.log[-30:])
    assert "(4 shown; 4 pending, 0 sent, 0 dead)" in listing(daemon)

    pacs.start()
    daemon = start_daemon(config, tmp_path / "data")
    try:
        wait_for(lambda: "(4 shown; 0 pending, 4 sent, 0 dead)" in listing(
            daemon, "--state", "all"))
    finally:
        code = stop_daemon(daemon)
        pacs.stop()
    assert code == 0, "\n".join(daemon.log[-30:])
    assert pacs.count() == 4  # once each
    assert pacs.operations(UID_A) == ["N-CREATE", "N-SET"]
    assert pacs.operations(UID_B) == ["N-CREATE", "N-SET"]
    assert [g.uid for g in pacs.received if g.operation == "N-CREATE"] == [UID_A, UID_B]
    assert pacs.received[0].calling_ae == "MWLBRIDGE"
    assert str(pacs.received[0].ds.PatientID) == "PAT10001"
    # No patient data in the daemon's log.
    log = "\n".join(daemon.log)
    assert "PAT10001" not in log and "DOE" not in log


def test_a_refusing_pacs_leaves_a_dead_letter_that_retry_sends_again(tmp_path: Path):
    refusing = {"on": True}
    pacs = PacsScp(answer=lambda op, uid: (0x0110, "study locked") if refusing["on"]
                   else (0x0000, ""))
    pacs.start()
    config = write_config(tmp_path, forward_config(pacs))
    daemon = start_daemon(config, tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        perform(daemon, tmp_path, (UID_A, "COMPLETED"))
        wait_for(lambda: "(2 shown; 0 pending, 0 sent, 2 dead)" in listing(daemon))
        dead = listing(daemon, "--state", "dead")
        assert "0x0110 Failure (Processing Failure): study locked" in dead
        assert pacs.count() == 2  # a failure status is not retried
        refusing["on"] = False
        res = daemon.cli("mpps", "forward", "retry", "--dead")
        assert res.returncode == 0 and "re-queued 2 request(s)" in res.stdout, res.stderr
        wait_for(lambda: "(0 shown; 0 pending, 2 sent, 0 dead)" in listing(daemon))
    finally:
        code = stop_daemon(daemon)
        pacs.stop()
    assert code == 0, "\n".join(daemon.log[-30:])
    assert pacs.operations(UID_A) == ["N-CREATE", "N-SET", "N-CREATE", "N-SET"]
    assert any("kept as a dead letter" in line for line in daemon.log)
