"""Growing out of SQLite (issue 11), as a site does it: a daemon on SQLite takes the
fixtures' orders and an exam's MPPS while the RIS is down (its status messages wait in
the outbox); it stops; `mwl-bridge db copy --from sqlite:PATH --to postgresql:DSN` moves
everything into a new PostgreSQL database; a daemon on the copy answers findscu (DCMTK)
with the same items, delivers the waiting messages with their MSH-10, and goes on: a new
order and a new exam get fresh ids. A second copy into the same database is refused."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from tests.outbound.mllp_receiver import MllpReceiver, reserve_port

from .conftest import (
    DCMTK,
    FIXTURES,
    REPO,
    RunningDaemon,
    dcmtk_env,
    start_daemon,
    stop_daemon,
    write_config,
)
from .test_mpps_roundtrip import KEYS, n_create, n_set_completed, outbound_config

psycopg = pytest.importorskip("psycopg")

PG = "host=127.0.0.1 port=5432 user=postgres"
ORDERS = ("orm-o01-ihe-ct.hl7", "orm-o01-latin1-mr.hl7", "orm-o01-utf8-greek-escapes.hl7",
          "orm-o01-two-groups.hl7", "omi-o23-three-ipc.hl7", "omg-o19-ct.hl7",
          "orm-noextras-two-procedures.hl7")
SPS = "ScheduledProcedureStepSequence[0]"
ALL_KEYS = ("AccessionNumber", "PatientName", "PatientID", "StudyInstanceUID",
            "RequestedProcedureID", "RequestedProcedureDescription",
            f"{SPS}.ScheduledProcedureStepID", f"{SPS}.Modality",
            f"{SPS}.ScheduledStationAETitle", f"{SPS}.ScheduledProcedureStepStartDate",
            f"{SPS}.ScheduledProcedureStepStatus")


@pytest.fixture
def database() -> Iterator[str]:
    name = f"copy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield f"{PG} dbname={name}"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def worklist(d: RunningDaemon, tmp: Path) -> list[dict]:
    """Every item the worklist offers, as DICOM JSON, sorted; findscu must say Success
    (it exits 0 even when the query failed)."""
    out = tmp / f"find-{d.dicom_port}-{time.monotonic_ns()}"
    out.mkdir()
    args = [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aec", d.ae_title]
    for key in ALL_KEYS:
        args += ["-k", key]
    res = subprocess.run([*args, "127.0.0.1", str(d.dicom_port)], capture_output=True,
                         text=True, timeout=60, env=dcmtk_env())
    text = res.stdout + res.stderr
    assert "Received Final Find Response (Success)" in text, text[-2000:]
    items = [dcmread(p).to_json_dict() for p in out.glob("rsp*.dcm")]
    return sorted(items, key=lambda j: (j["00080050"].get("Value", [""])[0],
                                        str(j["00400100"]["Value"][0]["00400009"])))


def perform(d: RunningDaemon, item: Dataset, uid: str) -> None:
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", d.dicom_port, ae_title=d.ae_title)
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(n_create(item), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(n_set_completed(), ModalityPerformedProcedureStep, uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()


def copy_cli(source: Path, dsn: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "db", "copy", "--from", f"sqlite:{source}",
         "--to", f"postgresql:{dsn}", "--batch", "3"],
        capture_output=True, text=True, timeout=120, cwd=REPO)


def test_a_sqlite_site_copied_into_postgresql_answers_the_same_and_its_outbox_goes_on(
        tmp_path: Path, database: str):
    ris_port = reserve_port()  # the RIS is down while the site runs on SQLite
    old_dir = tmp_path / "sqlite"
    old_dir.mkdir()
    old = start_daemon(write_config(old_dir, outbound_config(ris_port)), old_dir / "data")
    try:
        sent = old.send(*(FIXTURES / f for f in ORDERS))
        assert sent.returncode == 0, sent.stdout + sent.stderr
        # A rejected message: the message log keeps it too.
        assert old.send(FIXTURES / "check-sex-code.hl7").returncode == 1
        (ct,) = old.findscu(tmp_path, *KEYS, "AccessionNumber=ACC20261128001")
        perform(old, ct, "1.2.826.0.1.3680043.8.498.66001")  # IP and CM wait for the RIS
        before = worklist(old, tmp_path)
    finally:
        assert stop_daemon(old) == 0, "\n".join(old.log[-30:])
    assert len(before) >= 10
    db = old_dir / "data" / "bridge.sqlite3"
    with sqlite3.connect(db) as conn:
        waiting = [r[0] for r in conn.execute(
            "SELECT control_id FROM outbox WHERE state = 'pending' ORDER BY id")]
        max_step = conn.execute("SELECT MAX(id) FROM procedure_step").fetchone()[0]
    assert len(waiting) == 2

    res = copy_cli(db, database)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "verified: every table's count matches" in res.stdout
    assert "not copied: the target's own migration history" in res.stdout
    for table in ("message_log", "procedure_step", "patient", "mpps", "outbox", "instance"):
        assert f"\n{table} " in "\n" + res.stdout and f"  {table}" in res.stderr, table
    assert "DIFFERS" not in res.stdout

    ris = MllpReceiver(port=ris_port)
    ris.start()
    new_dir = tmp_path / "postgresql"
    new_dir.mkdir()
    new = start_daemon(write_config(new_dir, (
        f"store:\n  backend: postgresql\n  postgresql_dsn: \"{database}\"\n"
        + outbound_config(ris_port))), new_dir / "data")
    try:
        # The status messages that waited in the SQLite outbox, once each, in order.
        got = ris.wait_for(2)
        assert [m.control_id for m in got] == waiting
        assert [m.field("ORC", 5) for m in got] == ["IP", "CM"]
        assert worklist(new, tmp_path) == before
        # The copy goes on: a new order (a new step id past the copied ones) ...
        res_new = new.send(FIXTURES / "orm-noextras-ct.hl7")
        assert res_new.returncode == 0, res_new.stdout
        after = worklist(new, tmp_path)
        assert len(after) == len(before) + 1
        # ... and a new exam, whose status messages follow.
        mr = next(i for i in new.findscu(tmp_path, f"{SPS}.Modality=MR", *KEYS[:-2])
                  if i.AccessionNumber)
        perform(new, mr, "1.2.826.0.1.3680043.8.498.66002")
        more = ris.wait_for(4)
        assert [m.field("ORC", 5) for m in more[2:]] == ["IP", "CM"]
        assert len({m.control_id for m in more}) == 4
    finally:
        code = stop_daemon(new)
        ris.stop()
    assert code == 0, "\n".join(new.log[-30:])
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT MAX(id) FROM procedure_step").fetchone()[0] > max_step
        states = conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
    assert dict(states) == {"sent": 4}

    # Copying again into the same database is refused, and changes nothing.
    again = copy_cli(db, database)
    assert again.returncode == 1
    assert "db copy: the target database is not empty (" in again.stderr
    assert "nothing was written to the target" in again.stderr
