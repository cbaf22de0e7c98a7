"""Completion without MPPS, as a site runs it (issue 13): an order over MLLP, a
modality without MPPS stores its CT study (made with pydicom, sent with DCMTK
storescu) in a real PACS (Orthanc), and the daemon's reconciliation loop finds it
by Study Root C-FIND: the item becomes COMPLETED, findscu stops listing it and the
RIS receiver gets exactly one CM. A study under the right accession but another
Study Instance UID is flagged and leaves the item open; an item an MPPS already
DISCONTINUED stays DISCONTINUED whatever the PACS holds."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.outbound.mllp_receiver import MllpReceiver
from tests.reconcile.orthanc import RunningOrthanc, ct_study, orthanc, store_study

from .conftest import FIXTURES, RunningDaemon, start_daemon, stop_daemon, write_config
from .test_mpps_roundtrip import KEYS, n_create, outbound_config

SPS = "ScheduledProcedureStepSequence[0]"
FIXTURE_UID = "1.2.840.113619.2.55.3.604688119.969.1764318615.101"


def order_file(tmp: Path, n: int) -> tuple[Path, str, str]:
    """The IHE CT order with numbers of its own: (file, accession, study UID)."""
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().decode("latin-1")
    accession, uid = f"ACC2026112800{n}", f"{FIXTURE_UID[:-3]}{100 + n}"
    for old, new in (("PLC100001", f"PLC10000{n}"), ("FIL100001", f"FIL10000{n}"),
                     ("ACC20261128001", accession), ("RP20261128001", f"RP2026112800{n}"),
                     ("SPS20261128001", f"SPS2026112800{n}"), (FIXTURE_UID, uid),
                     ("MSG-20261128-0001", f"MSG-20261128-000{n}")):
        text = text.replace(old, new)
    path = tmp / f"order{n}.hl7"
    path.write_bytes(text.encode("latin-1"))
    return path, accession, uid


def reconcile_config(pacs_port: int) -> str:
    # The fixture orders start on 2026-11-28: a watch window reaching far back, no
    # minimum age, and short intervals so that the test needs no long waits.
    return ("reconcile:\n  enabled: true\n"
            f"  pacs: [{{name: orthanc, ae_title: ORTHANC, host: 127.0.0.1, "
            f"port: {pacs_port}, timeout_s: 10}}]\n"
            "  min_age_min: 0\n  max_age_h: 1000000\n  interval_s: 0.3\n"
            "  settle_poll_s: 0.2\n  recheck_s: 0.2\n  max_queries_per_s: 50\n")


def step_row(daemon: RunningDaemon, accession: str) -> tuple[int, str]:
    with sqlite3.connect(daemon.data_dir / "bridge.sqlite3") as db:
        row = db.execute("SELECT id, sps_status FROM procedure_step WHERE accession_number = ?",
                         (accession,)).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def history_sources(daemon: RunningDaemon, step_id: int) -> list[tuple[str, str]]:
    with sqlite3.connect(daemon.data_dir / "bridge.sqlite3") as db:
        return [(str(r[0]), str(r[1])) for r in db.execute(
            "SELECT to_status, source FROM step_history WHERE step_id = ? ORDER BY id",
            (step_id,))]


def until(check, what: str, daemon: RunningDaemon, seconds: float = 60):
    """Poll ``check`` until it returns something true (the loop runs every 0.3 s)."""
    deadline = time.monotonic() + seconds
    while True:
        got = check()
        if got:
            return got
        assert daemon.alive(), "\n".join(daemon.log[-30:])
        assert time.monotonic() < deadline, f"{what}:\n" + "\n".join(daemon.log[-30:])
        time.sleep(0.1)


def item_keys(accession: str) -> tuple[str, ...]:
    return (*KEYS, f"AccessionNumber={accession}")


@contextmanager
def site(tmp: Path) -> Iterator[tuple[RunningDaemon, RunningOrthanc, MllpReceiver]]:
    """The RIS (an MLLP receiver), the PACS (Orthanc) and the daemon asking it."""
    receiver = MllpReceiver()
    receiver.start()
    try:
        with orthanc(tmp) as pacs:
            daemon = start_daemon(write_config(tmp, outbound_config(receiver.port)
                                               + reconcile_config(pacs.dicom_port)),
                                  tmp / "data")
            try:
                yield daemon, pacs, receiver
            finally:
                code = stop_daemon(daemon)
            assert code == 0, "\n".join(daemon.log[-30:])
    finally:
        receiver.stop()


def test_a_study_stored_in_the_pacs_completes_its_item_and_the_ris_gets_one_cm(
        tmp_path: Path):
    with site(tmp_path) as (daemon, pacs, receiver):
        order, accession, uid = order_file(tmp_path, 1)
        assert daemon.send(order).returncode == 0
        (item,) = daemon.findscu(tmp_path, *item_keys(accession))
        assert str(item.StudyInstanceUID) == uid
        step_id, status = step_row(daemon, accession)
        assert status == "SCHEDULED"
        # Not in the PACS yet: asked for, not found, still open.
        until(lambda: any("1 not found" in line for line in daemon.log),
              "the loop never asked for the item", daemon)
        assert step_row(daemon, accession)[1] == "SCHEDULED"

        store_study(pacs, ct_study(tmp_path / "study1", study_uid=uid, accession=accession,
                                   patient_id=str(item.PatientID)))
        got = receiver.wait_for(1)
        assert [m.field("ORC", 5) for m in got] == ["CM"]
        assert got[0].field("OBR", 18) == accession
        assert got[0].field("ZDS", 1) == uid
        assert step_row(daemon, accession) == (step_id, "COMPLETED")
        assert history_sources(daemon, step_id)[-1] == ("COMPLETED", "pacs query")
        # The worklist no longer offers it, and exactly one message was queued.
        assert daemon.findscu(tmp_path, *item_keys(accession)) == []
        listing = daemon.cli("outbox", "list", "--state", "all")
        assert "(1 shown; 0 pending, 1 sent, 0 dead)" in listing.stdout, listing.stdout
        assert len(receiver.messages) == 1
        log = "\n".join(daemon.log)
        assert "DOE" not in log and "PAT10001" not in log and uid not in log


def test_a_study_under_the_accession_with_another_uid_is_flagged_and_the_item_stays_open(
        tmp_path: Path):
    with site(tmp_path) as (daemon, pacs, receiver):
        order, accession, uid = order_file(tmp_path, 2)
        assert daemon.send(order).returncode == 0
        (item,) = daemon.findscu(tmp_path, *item_keys(accession))
        step_id, _ = step_row(daemon, accession)
        other = generate_uid()
        store_study(pacs, ct_study(tmp_path / "study2", study_uid=other,
                                   accession=accession, patient_id=str(item.PatientID)))
        listed = until(lambda: (r := daemon.cli("reconcile", "conflicts")).returncode == 0
                       and f"{step_id}" in r.stdout and r, "no conflict flagged", daemon)
        assert "study_uid" in listed.stdout and accession in listed.stdout
        assert other in listed.stdout
        assert step_row(daemon, accession) == (step_id, "SCHEDULED")
        (still,) = daemon.findscu(tmp_path, *item_keys(accession))
        assert str(still.StudyInstanceUID) == uid
        status = daemon.cli("reconcile", "status")
        assert status.returncode == 0 and "1 conflict" in status.stdout, status.stdout
        assert receiver.messages == []
        assert any("conflict study_uid" in line for line in daemon.log)
        assert other not in "\n".join(daemon.log)


def discontinue(daemon: RunningDaemon, item: Dataset) -> None:
    """The modality's MPPS: N-CREATE then N-SET DISCONTINUED."""
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title=daemon.ae_title)
    assert assoc.is_established
    uid = generate_uid()
    try:
        status, _ = assoc.send_n_create(n_create(item), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        final = Dataset()
        final.PerformedProcedureStepStatus = "DISCONTINUED"
        final.PerformedProcedureStepEndDate = "20261128"
        final.PerformedProcedureStepEndTime = "094000"
        status, _ = assoc.send_n_set(final, ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()


def test_an_item_an_mpps_discontinued_is_not_completed_by_the_pacs(tmp_path: Path):
    with site(tmp_path) as (daemon, pacs, receiver):
        stopped, acc_stopped, uid_stopped = order_file(tmp_path, 3)
        control, acc_control, uid_control = order_file(tmp_path, 4)
        assert daemon.send(stopped, control).returncode == 0
        (item,) = daemon.findscu(tmp_path, *item_keys(acc_stopped))
        discontinue(daemon, item)
        assert [m.field("ORC", 5) for m in receiver.wait_for(2)] == ["IP", "DC"]
        step_id, status = step_row(daemon, acc_stopped)
        assert status == "DISCONTINUED"
        # Both studies reach the PACS; the control item completing shows that the
        # loop has looked since.
        store_study(pacs, ct_study(tmp_path / "s3", study_uid=uid_stopped,
                                   accession=acc_stopped, patient_id=str(item.PatientID)))
        store_study(pacs, ct_study(tmp_path / "s4", study_uid=uid_control,
                                   accession=acc_control, patient_id=str(item.PatientID)))
        got = receiver.wait_for(3)
        assert got[2].field("ORC", 5) == "CM" and got[2].field("OBR", 18) == acc_control
        assert step_row(daemon, acc_stopped) == (step_id, "DISCONTINUED")
        assert [s for _, s in history_sources(daemon, step_id)][-1] == "mpps"
        assert len(receiver.messages) == 3
