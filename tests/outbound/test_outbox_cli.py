"""``mwl-bridge outbox list/show/retry`` on a real store, as an operator runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore, outbox_tx
from tests.immutable import immutable

from .conftest import queue


@pytest.fixture
def config(tmp_path) -> Path:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\n", encoding="utf-8")
    store = SqliteStore(tmp_path / "data" / "bridge.sqlite3")
    store.migrate()
    queue(store, "ris", [("A", "IP"), ("A", "CM"), ("B", "IP")])
    ids = {m.control_id: m.id for m in outbox_tx.list_messages(store)}
    store.write([lambda tx: outbox_tx.mark_sent(tx, ids["A-IP"], b"MSH|...\rMSA|AA|A-IP\r")])
    store.write([lambda tx: outbox_tx.mark_dead(tx, ids["B-IP"], "AE: unknown order B",
                                                b"MSH|...\rMSA|AE|B-IP\r")])
    store.close()
    return cfg


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["--config", str(args[0]), *args[1:]])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_list_shows_pending_and_dead_by_default(config, capsys):
    code, out, _ = run(capsys, config, "outbox", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "DESTINATION", "EVENT", "TYPE", "CONTROL", "ID",
                                "TRIES", "WHEN", "REASON"]
    assert [line.split()[:4] for line in lines[1:3]] == [["2", "pending", "ris", "CM"],
                                                        ["3", "dead", "ris", "IP"]]
    assert "AE: unknown order B" in lines[2]
    assert lines[-1] == "(2 shown; 1 pending, 1 sent, 1 dead)"
    code, out, _ = run(capsys, config, "outbox", "list", "--state", "all")
    assert out.splitlines()[-1] == "(3 shown; 1 pending, 1 sent, 1 dead)"


def test_list_rejects_an_unknown_state(config, capsys):
    code, _, err = run(capsys, config, "outbox", "list", "--state", "lost")
    assert code == 2
    assert "--state: one or more of pending, sent, dead (comma-separated), or all; not 'lost'" \
        in err


def test_show_prints_the_message_and_its_ack(config, capsys):
    code, out, _ = run(capsys, config, "outbox", "show", "3")
    assert code == 0
    assert "state         dead" in out and "reason        AE: unknown order B" in out
    assert "    ORC|SC|B|||IP" in out and "    MSA|AE|B-IP" in out
    code, _, err = run(capsys, config, "outbox", "show", "99")
    assert (code, err.strip()) == (1, "no outbox message 99")


def test_retry_requeues_dead_letters_and_says_what_it_skipped(config, capsys):
    code, out, err = run(capsys, config, "outbox", "retry", "3", "1", "42")
    assert code == 1
    assert out.strip() == "re-queued 1 message(s): 3"
    assert "  1: already sent" in err and "  42: no such message" in err
    code, out, _ = run(capsys, config, "outbox", "list")
    assert [line.split()[1] for line in out.splitlines()[1:3]] == ["pending", "pending"]
    code, out, _ = run(capsys, config, "outbox", "retry", "--dead")
    assert (code, out.strip()) == (0, "re-queued 0 message(s)")
    code, _, err = run(capsys, config, "outbox", "retry")
    assert (code, err.strip()) == (2, "give message IDs, or --dead for every dead letter")



def messages(config: Path) -> list[outbox_tx.OutboxMessage]:
    store = SqliteStore(config.parent / "data" / "bridge.sqlite3")
    try:
        return outbox_tx.list_messages(store, states=[])
    finally:
        store.close()


def test_retry_on_a_read_only_store_says_so_and_requeues_nothing(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = messages(config)
    assert [(m.id, m.state) for m in before] == [(1, "sent"), (2, "pending"), (3, "dead")]
    with immutable(config.parent / "data" / "bridge.sqlite3"):
        code, out, err = run(capsys, str(config), "outbox", "retry", "--dead")
    assert (code, out) == (1, "")  # not "re-queued 1 message(s): 3"
    assert err.splitlines() == ["store error: OperationalError: attempt to write a readonly "
                                "database; no message is re-queued"]
    assert messages(config) == before
