"""Backups of the SQLite store (bridge/store/backup.py, ``mwl-bridge db backup/verify``):
a consistent snapshot while a writer commits, 0600, one self-contained file, verified;
every failure leaves no backup behind."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bridge.store import SqliteStore
from bridge.store.backup import backup_sqlite, verify_sqlite
from bridge.store.base import StoreError
from bridge.store.migrations import latest_version

from .test_dbcopy import STEPS, fill
from .test_store import make_item

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def site(tmp_path) -> Any:
    s = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    s.migrate()
    fill(s)
    yield s
    s.close()


def test_a_backup_is_private_whole_and_verified(site, tmp_path):
    old = os.umask(0)
    try:
        report = backup_sqlite(site.path, tmp_path / "b.sqlite3")
    finally:
        os.umask(old)
    target = tmp_path / "b.sqlite3"
    assert report.path == target and report.ok
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert report.size == target.stat().st_size > 0
    assert report.schema_version == latest_version()
    assert report.tables["procedure_step"] == STEPS and report.tables["message_log"] == STEPS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.sqlite3", "data"]  # one file
    with sqlite3.connect(target) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    restored = SqliteStore(target)
    try:
        assert restored.schema_version() == latest_version()
    finally:
        restored.close()


def test_a_backup_while_a_writer_commits_is_one_consistent_snapshot(site, tmp_path):
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        n = 1000
        while not stop.is_set():
            site.write([lambda tx, n=n: tx.upsert_step(make_item(n), None)])
            written[0] += 1
            n += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        while written[0] < 20:
            stop.wait(0.01)
        reports = [backup_sqlite(site.path, tmp_path / f"b{k}") for k in range(3)]
    finally:
        stop.set()
        t.join()
    counts = [r.tables["procedure_step"] for r in reports]
    assert all(r.ok for r in reports)
    assert counts == sorted(counts) and counts[0] >= STEPS + 20
    assert counts[-1] <= STEPS + written[0]


def test_an_existing_target_is_refused_and_left_alone(site, tmp_path):
    target = tmp_path / "b"
    target.write_text("keep")
    with pytest.raises(StoreError, match=r"exists; a backup goes to a new file"):
        backup_sqlite(site.path, target)
    assert target.read_text() == "keep"


def test_a_missing_source_or_folder_is_refused(site, tmp_path):
    with pytest.raises(StoreError, match=r"no such SQLite file"):
        backup_sqlite(tmp_path / "nope", tmp_path / "b")
    with pytest.raises(StoreError, match=r"no such folder"):
        backup_sqlite(site.path, tmp_path / "no" / "b")
    assert not (tmp_path / "b").exists()


def test_a_copy_that_does_not_verify_leaves_nothing(site, tmp_path, monkeypatch):
    from bridge.store import backup

    real = backup.verify_sqlite

    def bad(path: Path, key: str | None = None) -> backup.BackupReport:
        report = real(path, key)
        report.integrity = "*** in database main ***"
        return report

    monkeypatch.setattr(backup, "verify_sqlite", bad)
    with pytest.raises(StoreError, match=r"the copy does not verify"):
        backup_sqlite(site.path, tmp_path / "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_a_source_that_is_not_a_database_is_refused(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a database" * 200)
    with pytest.raises(StoreError, match=r"junk: file is not a database"):
        backup_sqlite(junk, tmp_path / "b")
    assert not (tmp_path / "b").exists() and not (tmp_path / "b.partial").exists()


def test_verify_reports_damage_and_unknown_schemas(site, tmp_path):
    with pytest.raises(StoreError, match="no such file"):
        verify_sqlite(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(StoreError, match="junk: "):
        verify_sqlite(junk)
    backup_sqlite(site.path, tmp_path / "b")
    with sqlite3.connect(tmp_path / "b") as conn:
        conn.execute("INSERT INTO schema_version VALUES (999)")
    conn.close()
    report = verify_sqlite(tmp_path / "b")
    assert report.integrity == "ok" and report.schema_version == 999 and not report.ok
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    assert not verify_sqlite(empty).ok  # no schema at all


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n")
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), *args],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_the_cli_backs_up_and_verifies(site, tmp_path):
    done = _cli(tmp_path, "db", "backup", str(tmp_path / "b"))
    assert done.returncode == 0, done.stderr
    assert f"written to {tmp_path / 'b'}" in done.stdout
    assert f"schema version {latest_version()}" in done.stdout
    assert re.search(rf"^procedure_step +{STEPS}$", done.stdout, re.M), done.stdout
    assert done.stdout.rstrip().endswith("verified")
    again = _cli(tmp_path, "db", "backup", str(tmp_path / "b"))
    assert again.returncode == 1 and "db backup: " in again.stderr and "exists" in again.stderr
    ok = _cli(tmp_path, "db", "verify", str(tmp_path / "b"))
    assert ok.returncode == 0 and "integrity ok" in ok.stdout
    (tmp_path / "junk").write_bytes(b"\0" * 4096)
    bad = _cli(tmp_path, "db", "verify", str(tmp_path / "junk"))
    assert bad.returncode == 1 and bad.stderr.startswith("db verify: ")


def test_the_cli_points_postgresql_to_pg_dump(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("store:\n  backend: postgresql\n  postgresql_dsn: 'host=x'\n")
    done = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "db",
                           "backup", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2 and "pg_dump" in done.stderr
