"""``mwl-bridge reconcile status / conflicts / retry`` on a store with a flagged item, and
``retry`` on a store whose write fails."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore, reconcile_tx
from tests.immutable import immutable
from tests.reconcile.conftest import make_step


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    store.upsert_steps([make_step(1), make_step(2)])
    first, second = sorted(r.id for r in store.list_steps())
    store.write([
        lambda tx: reconcile_tx.flag_conflict(
            tx, first, kind="study_uid", detail="1 study(ies) under the item's Accession "
            "Number with another Study Instance UID", pacs="pacs1", found_uid="1.2.3.9"),
        lambda tx: reconcile_tx.record_check(tx, second, next_check="2026-11-28T12:00:00Z",
                                             pacs="pacs1", found_uid="1.2.3", instances=4,
                                             series=1, seen_at="2026-11-28T11:59:00Z"),
    ])
    store.close()
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nreconcile:\n  modalities: [CR, DX]\n"
                   "  pacs: [{name: pacs1, ae_title: PACS, host: 127.0.0.1, port: 104}]\n",
                   encoding="utf-8")
    return cfg


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0
        ) -> list[str]:
    assert main(["--config", str(config), *args]) == code
    captured = capsys.readouterr()
    return (captured.out or captured.err).splitlines()


def test_status_shows_the_settings_and_the_state(config, capsys):
    lines = run(config, capsys, "reconcile", "status")
    assert lines[0].startswith("query loop: off; IAN: off")
    assert "  PACS pacs1: AE PACS at 127.0.0.1:104" in lines
    assert any("modalities CR, DX" in line for line in lines)
    assert lines[-1] == "state: 2 item(s) looked for, 1 found and settling, 1 conflict(s)"


def test_conflicts_then_retry_clears_the_flag(config, capsys):
    lines = run(config, capsys, "reconcile", "conflicts")
    assert lines[0].split()[:3] == ["STEP", "KIND", "STATUS"]
    assert "study_uid" in lines[1] and "ACC0000001" in lines[1] and "1.2.3.9" in lines[1]
    assert lines[-1] == "(1 conflict(s))"
    step_id = int(lines[1].split()[0])
    assert run(config, capsys, "reconcile", "retry", str(step_id)) == [
        f"step {step_id}: conflict cleared; the loop asks the PACS again"]
    assert run(config, capsys, "reconcile", "conflicts")[-1] == "(0 conflict(s))"
    assert run(config, capsys, "reconcile", "retry", str(step_id), code=1) == [
        f"step {step_id} has no conflict"]


def test_check_config_names_an_unreadable_pacs_ca_file(tmp_path: Path, capsys):
    cfg = tmp_path / "c.yaml"
    repo = Path(__file__).resolve().parents[2]
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nmapping:\n  paths: [{repo / 'mappings'}]\n"
                   "reconcile:\n  pacs:\n"
                   "    - {ae_title: PACS, port: 104, tls: {enabled: true, "
                   f"ca_file: {tmp_path / 'missing-ca.pem'}}}}}\n", encoding="utf-8")
    assert main(["--config", str(cfg), "check-config"]) == 2
    err = capsys.readouterr().err
    assert "reconcile.pacs[0].tls" in err and "missing-ca.pem" in err


def conflicted(config: Path) -> list[int]:
    store = SqliteStore(config.parent / "data" / "bridge.sqlite3")
    try:
        return [c.step_id for c in reconcile_tx.conflicts(store)]
    finally:
        store.close()


def test_retry_on_a_read_only_store_says_so_and_clears_nothing(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The database file itself read-only: SQLite opens it read-only, and the DELETE
    # raises sqlite3's own error inside the job, which write() hands back as the job's
    # result (it once read as "no conflict").
    (step_id,) = conflicted(config)
    with immutable(config.parent / "data" / "bridge.sqlite3"):
        assert main(["--config", str(config), "reconcile", "retry", str(step_id)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # not "step N has no conflict"
    assert captured.err.splitlines() == [
        "store error: OperationalError: attempt to write a readonly database; "
        f"the conflict of step {step_id} is not cleared"]
    assert conflicted(config) == [step_id]


def test_retry_whose_commit_fails_says_so_and_clears_nothing(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The WAL read-only: the DELETE succeeds in the transaction and the commit fails
    # (StoreError). The WAL is there only while a connection is open, as beside the daemon.
    (step_id,) = conflicted(config)
    db = config.parent / "data" / "bridge.sqlite3"
    beside = sqlite3.connect(db)
    try:
        beside.execute("SELECT count(*) FROM reconcile_state").fetchone()
        with immutable(db.with_name(db.name + "-wal")):
            assert main(["--config", str(config), "reconcile", "retry", str(step_id)]) == 1
    finally:
        beside.close()
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "store error: commit failed: attempt to write a readonly database; "
        f"the conflict of step {step_id} is not cleared"]
    assert conflicted(config) == [step_id]
