"""``mwl-bridge messages list/show/replay/purge`` as an operator runs them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

from bridge.app.settings import load_settings
from bridge.mapping import load_mappings
from bridge.orders.ingest import Ingest
from bridge.store import CommitQueue, open_store
from bridge.store.orders_tx import LoggedMessage, OrdersTx
from tests.immutable import immutable
from tests.orders.conftest import REPO, fixture

STRICT = "orders:\n  patients:\n    sex_codes: [F, M]\n"


def write_config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {tmp / 'data'}\nmapping:\n  paths: [{REPO / 'mappings'}]\n"
                   + extra, encoding="utf-8")
    return cfg


async def receive(cfg: Path, *messages: bytes) -> list[str]:
    settings = load_settings(cfg, {})
    store = open_store(settings.store, settings.data_dir)
    commits = CommitQueue(store)
    commits.start()
    mappings = load_mappings(settings.mapping.paths, default_station_aet="UNASSIGNED")
    ingest = Ingest(lambda: mappings, commits, settings.mllp, orders=settings.orders)
    try:
        return [(await ingest.process(m, "127.0.0.1:5000")).ack_code for m in messages]
    finally:
        commits.stop()
        store.close()


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "messages",
                           *args], capture_output=True, text=True, timeout=60, cwd=REPO)


UNKNOWN_SEX = fixture("lifecycle-nw.hl7").replace(b"|19680214|F|", b"|19680214|U|")


async def test_list_and_show_accepted_and_rejected_messages(tmp_path):
    cfg = write_config(tmp_path, STRICT)
    assert await receive(cfg, fixture("lifecycle-omg-o19-nw.hl7"), UNKNOWN_SEX) == ["AA", "AE"]
    res = cli(cfg, "list")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["ID", "RECEIVED", "FROM", "CONTROL", "ID", "TYPE", "ACK",
                                "OUTCOME", "/", "REASON"]
    assert "LC-0001" in lines[1] and " AE " in lines[1] and "103 PID^1^8" in lines[1]
    assert "LC-0201" in lines[2] and " AA " in lines[2] and "1 inserted" in lines[2]
    assert lines[-1] == "(2 message(s))"
    rejected = cli(cfg, "list", "--rejected")
    assert "LC-0201" not in rejected.stdout and "(1 message(s))" in rejected.stdout

    shown = cli(cfg, "show", "2")
    assert shown.returncode == 0
    assert "ACK        AE" in shown.stdout
    assert "reason     103 PID^1^8 PatientSex (PID-8) 'U' is not one of F, M" in shown.stdout
    assert "  PID|1||LC10001^^^HOSP^MR||GARCIA^MARIA" in shown.stdout
    assert "  MSA|AE|LC-0001" in shown.stdout
    raw = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "messages",
                          "show", "2", "--raw"], capture_output=True, timeout=60, cwd=REPO)
    assert raw.stdout == UNKNOWN_SEX
    missing = cli(cfg, "show", "99")
    assert (missing.returncode, missing.stderr.strip()) == (1, "no message #99")


async def test_replay_a_dead_letter_after_the_fix(tmp_path):
    cfg = write_config(tmp_path, STRICT)
    assert await receive(cfg, UNKNOWN_SEX) == ["AE"]
    again = cli(cfg, "replay", "1")  # nothing fixed yet: rejected again, kept again
    assert again.returncode == 1
    assert "message #1 replayed as #2: AE" in again.stdout
    write_config(tmp_path)  # the site accepts U now (default sex codes)
    fixed = cli(cfg, "replay", "1")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "message #1 replayed as #3: AA 1 inserted" in fixed.stdout
    assert "MSA|AA|LC-0001" in fixed.stdout
    shown = cli(cfg, "show", "1")
    assert "replayed   as #2" in shown.stdout and "replayed   as #3" in shown.stdout
    listing = cli(cfg, "list")
    assert "replay of #1: 1 inserted" in listing.stdout
    # The sender's own resend is now a resend of the replayed message.
    assert await receive(cfg, UNKNOWN_SEX) == ["AA"]
    assert "(3 message(s))" in cli(cfg, "list").stdout
    refused = cli(cfg, "replay", "3")
    assert refused.returncode == 1 and "only rejected messages are replayed" in refused.stderr



def logged(cfg: Path) -> list[LoggedMessage]:
    settings = load_settings(cfg, {})
    store = open_store(settings.store, settings.data_dir)
    try:
        return store.write_one(lambda tx: OrdersTx(tx).list_messages(limit=100))
    finally:
        store.close()


async def test_replay_on_a_read_only_store_says_so_and_stores_nothing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, STRICT)
    assert await receive(cfg, UNKNOWN_SEX) == ["AE"]
    write_config(tmp_path)  # fixed: the replay would be accepted and insert a step
    before = logged(cfg)
    with immutable(tmp_path / "data" / "bridge.sqlite3"):
        res = cli(cfg, "replay", "1")
    assert (res.returncode, res.stdout) == (1, "")  # not "replayed as #None: AR store failed"
    assert res.stderr.splitlines() == [
        # The intake's own log line (no logging configured: Python's last resort)...
        "store failed for message LC-0001 from replay of #1: attempt to write a readonly "
        "database",
        "store error: the replayed message could not be stored (logged above); "
        "message #1 is not replayed"]
    assert logged(cfg) == before
    settings = load_settings(cfg, {})
    store = open_store(settings.store, settings.data_dir)
    try:
        assert store.list_steps() == []
    finally:
        store.close()


async def test_purge_uses_the_configured_retention(tmp_path):
    cfg = write_config(tmp_path, "orders:\n  messages:\n    accepted_days: 0\n"
                                 "    rejected_days: 0\n")
    assert await receive(cfg, fixture("lifecycle-nw.hl7")) == ["AA"]
    res = cli(cfg, "purge")
    assert res.returncode == 0
    assert "nothing to purge" in res.stdout
    cfg = write_config(tmp_path)
    res = cli(cfg, "purge")
    assert res.stdout.splitlines() == ["purged 0 accepted message(s)",
                                       "purged 0 rejected message(s)"]


async def test_purge_on_a_read_only_store_says_so_and_purges_nothing(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)  # the default retention: accepted messages for 30 days
    assert await receive(cfg, fixture("lifecycle-nw.hl7")) == ["AA"]
    db = tmp_path / "data" / "bridge.sqlite3"
    aged = sqlite3.connect(db)  # received long ago: due for the purge
    try:
        with aged:
            aged.execute("UPDATE message_log SET received_at = '2020-01-01T00:00:00+00:00'")
    finally:
        aged.close()
    before = logged(cfg)
    assert [m.control_id for m in before] == ["LC-0001"]
    with immutable(db):
        res = cli(cfg, "purge")
    assert (res.returncode, res.stdout) == (1, "")  # not a traceback
    assert res.stderr.splitlines() == [
        "store error: OperationalError: attempt to write a readonly database; "
        "the purge stopped; the batches purged before it stay purged"]
    assert logged(cfg) == before
