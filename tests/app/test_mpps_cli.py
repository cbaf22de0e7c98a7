"""CLI parity with the console's API: ``mwl-bridge mpps list/show``, and
``worklist --date-from/--date-to`` (the API's date range)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore, mpps_tx
from tests.mpps.conftest import create_ds, mapped_steps


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    steps = mapped_steps("orm-o01-ihe-ct.hl7")
    store.upsert_steps(steps + mapped_steps("orm-o01-latin1-mr.hl7"))
    step_id = store.list_steps()[0].id
    ds = create_ds(*steps)
    store.write([
        lambda tx: mpps_tx.insert_mpps(tx, sop_instance_uid="1.2.3.4", status="IN PROGRESS",
                                       calling_aet="CT01", station_aet="CT01", modality="CT",
                                       item=ds, step_ids=[step_id]),
        lambda tx: mpps_tx.insert_mpps(tx, sop_instance_uid="1.2.3.5", status="COMPLETED",
                                       calling_aet="MR01", station_aet="MR01", modality="MR",
                                       item=ds, step_ids=[]),
    ])
    store.close()
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    return cfg


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str, code: int = 0
        ) -> list[str]:
    assert main(["--config", str(config), *args]) == code
    captured = capsys.readouterr()
    return (captured.out or captured.err).splitlines()


def test_mpps_list_newest_first_and_by_status(config, capsys):
    lines = run(config, capsys, "mpps", "list")
    assert lines[0].split()[:2] == ["ID", "STATUS"]
    assert [line.split()[0] for line in lines[1:-1]] == ["2", "1"]
    assert "unscheduled" in lines[1] and lines[-1] == "(2 of 2 instance(s))"
    done = run(config, capsys, "mpps", "list", "--status", "COMPLETED")
    assert len(done) == 3 and "1.2.3.5" in done[1]
    assert run(config, capsys, "mpps", "list", "--status", "in_progress")[-1] == \
        "(1 of 1 instance(s))"
    bad = run(config, capsys, "mpps", "list", "--status", "DONE", code=2)
    assert "--status" in bad[0]


def test_mpps_show(config, capsys):
    lines = run(config, capsys, "mpps", "show", "1")
    facts = dict(line.split(":", 1) for line in lines if line and ":" in line[:19])
    assert facts["status"].strip() == "IN PROGRESS" and facts["worklist items"].strip() == "1"
    out = "\n".join(run(config, capsys, "mpps", "show", "1", "--json"))
    item = json.loads(out[out.index("{"):])
    assert "00400270" in item  # Scheduled Step Attributes Sequence
    assert run(config, capsys, "mpps", "show", "9", code=1) == ["no MPPS instance 9"]


def test_worklist_date_range(config, capsys):
    every = run(config, capsys, "worklist")
    dates = sorted({line.split()[0] for line in every[1:-1]})
    assert len(dates) >= 1
    first = dates[0]
    same = run(config, capsys, "worklist", "--date-from", first, "--date-to", first)
    assert all(line.split()[0] == first for line in same[1:-1]) and len(same) > 2
    none = run(config, capsys, "worklist", "--date-to", "19000101")
    assert none[-1] == "(0 of 0 item(s))"
    bad = run(config, capsys, "worklist", "--date-from", "2026-11-28", code=2)
    assert "--date-from" in bad[0]
