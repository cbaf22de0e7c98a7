"""Housekeeping purges forwarded and dead MPPS-forward rows (bridge/maintenance/purge.py)
after ``purge_sent_days`` / ``purge_dead_days``, and never pending ones; on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.settings import HousekeepingSettings
from bridge.store import Store, mpps_forward_tx, thread_submit
from bridge.store.mpps_forward_tx import N_CREATE, NewForward


def queue(store: Store, uids: list[str]) -> list[int]:
    rows = [NewForward(destination="pacs", sop_instance_uid=uid, operation=N_CREATE,
                       transfer_syntax="1.2.840.10008.1.2.1", payload=uid.encode())
            for uid in uids]
    (ids,) = store.write([lambda tx: mpps_forward_tx.enqueue(tx, rows)])
    return list(ids)


def states(store: Store) -> dict[int, str]:
    return {r.id: r.state for r in mpps_forward_tx.list_rows(store)}


def test_sent_and_dead_forward_rows_are_purged_by_age_and_pending_ones_kept(store):
    sent, dead, pending = queue(store, ["1.2.3.1", "1.2.3.2", "1.2.3.3"])
    store.write([lambda tx: mpps_forward_tx.mark_sent(tx, sent, 0),
                 lambda tx: mpps_forward_tx.mark_dead(tx, dead, "refused", 0x0110)])
    settings = HousekeepingSettings(purge_sent_days=30, purge_dead_days=90,
                                    purge_mpps_days=0, purge_steps_days=0)
    hk = Housekeeping(settings, thread_submit(store))
    # 10 days on: nothing is old enough.
    _, counts = asyncio.run(hk.run_once(datetime.now(UTC) + timedelta(days=10)))
    assert (counts.forward_sent, counts.forward_dead) == (0, 0)
    assert states(store) == {sent: "sent", dead: "dead", pending: "pending"}
    # 40 days on: the sent row goes, the dead one is kept for its 90 days.
    _, counts = asyncio.run(hk.run_once(datetime.now(UTC) + timedelta(days=40)))
    assert (counts.forward_sent, counts.forward_dead) == (1, 0)
    assert states(store) == {dead: "dead", pending: "pending"}
    # 400 days on: the dead row goes too; a pending row is never purged.
    _, counts = asyncio.run(hk.run_once(datetime.now(UTC) + timedelta(days=400)))
    assert (counts.forward_sent, counts.forward_dead) == (0, 1)
    assert states(store) == {pending: "pending"}


def test_zero_days_keeps_forward_rows(store):
    sent, dead = queue(store, ["1.2.3.1", "1.2.3.2"])
    store.write([lambda tx: mpps_forward_tx.mark_sent(tx, sent, 0),
                 lambda tx: mpps_forward_tx.mark_dead(tx, dead, "refused")])
    keep = HousekeepingSettings(purge_sent_days=0, purge_dead_days=0)
    _, counts = asyncio.run(Housekeeping(keep, thread_submit(store)).run_once(
        datetime.now(UTC) + timedelta(days=4000)))
    assert (counts.forward_sent, counts.forward_dead) == (0, 0)
    assert states(store) == {sent: "sent", dead: "dead"}
