"""``mwl-bridge worklist``: filters on indexed columns, pages, and a footer that counts
what matched; against the real SQLite store the daemon uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore
from tests.mpps.conftest import mapped_steps


@pytest.fixture
def config(tmp_path: Path) -> Path:
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    # 1 CT step on CT01, 2 steps of one order (CT01 and MR01), 1 MR step: 4 in all.
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7") + mapped_steps("orm-o01-two-groups.hl7")
                       + mapped_steps("orm-o01-latin1-mr.hl7"))
    store.close()
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    return cfg


def listing(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["--config", str(config), "worklist", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_every_item_in_schedule_order_with_a_count(config, capsys):
    lines = listing(config, capsys)
    assert lines[0].split()[:3] == ["DATE", "TIME", "STATION"]
    assert lines[-1] == "(4 of 4 item(s))"
    dates = [line.split()[0] + line.split()[1] for line in lines[1:-1]]
    assert dates == sorted(dates) and len(dates) == 4


def test_filters_narrow_the_listing_and_the_count(config, capsys):
    ct = listing(config, capsys, "--modality", "CT")
    assert all(" CT " in line for line in ct[1:-1])
    assert ct[-1] == f"({len(ct) - 2} of {len(ct) - 2} item(s))"
    one = listing(config, capsys, "--accession", "ACC20261128001")
    assert len(one) == 3 and "ACC20261128001" in one[1] and one[-1] == "(1 of 1 item(s))"
    mr01 = listing(config, capsys, "--station", "MR01")
    assert len(mr01) > 2 and all(line.split()[2] == "MR01" for line in mr01[1:-1])
    assert len(mr01) - 2 < 4
    none = listing(config, capsys, "--status", "COMPLETED")
    assert none == [none[0], "(0 of 0 item(s))"]


def test_pages_split_the_listing_without_overlap(config, capsys):
    everything = listing(config, capsys)[1:-1]
    first = listing(config, capsys, "--limit", "3")
    second = listing(config, capsys, "--limit", "3", "--page", "2")
    assert first[-1] == "(3 of 4 item(s))" and second[-1] == "(1 of 4 item(s), items 4-4)"
    assert [line.split() for line in first[1:-1] + second[1:-1]] == \
        [line.split() for line in everything]


def test_a_page_below_one_is_a_usage_error(config, capsys):
    assert main(["--config", str(config), "worklist", "--page", "0"]) == 2
    assert "--limit and --page are 1 or more" in capsys.readouterr().err
