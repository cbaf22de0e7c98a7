"""Maintenance with several instances on one database (issue 11): one leader, elected
with a lease row; the role moves to a survivor within lease + heartbeat; idle rules
never change a step twice or queue its CM twice, leader or not."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta

from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.idle import expire_job
from bridge.maintenance.leader import Leadership, instance_info
from bridge.maintenance.purge import PurgeCounts
from bridge.maintenance.settings import HousekeepingSettings, IdleRule
from bridge.outbound.events import Destination, StatusMessages
from bridge.store import Store, ha_tx, outbox_tx, thread_submit
from tests.store import conftest as store_fixtures

from .conftest import _profiles, mapped_steps

pg_dsn = store_fixtures.pg_dsn  # the fixtures: two instances on one database
pg_pair = store_fixtures.pg_pair

HEARTBEAT, LEASE = 0.1, 0.5


def leadership(store: Store, name: str, elected: list[str] | None = None) -> Leadership:
    def on() -> None:
        if elected is not None:
            elected.append(name)

    return Leadership(thread_submit(store), instance_info(name, "test"),
                      heartbeat_s=HEARTBEAT, lease_s=LEASE, roles=lambda: ["mllp"],
                      on_elected=on)


async def wait_for(check, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not reached in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_one_leader_and_the_role_moves_when_it_stops_or_dies(pg_pair):
    a, b = pg_pair
    elected: list[str] = []
    one, two = leadership(a, "one", elected), leadership(b, "two", elected)
    await one.start()
    await two.start()
    try:
        await asyncio.sleep(3 * HEARTBEAT)
        assert (one.is_leader(), two.is_leader()) == (True, False)

        def roles() -> dict[str, tuple[str, ...]]:
            return {r.id: r.roles for r in ha_tx.list_instances(a)}

        # The instance row gets the role at the heartbeat after the election: on a
        # loaded machine that may be a little later than three heartbeats.
        await wait_for(lambda: roles().get("one") == ("mllp", "maintenance"))
        assert roles() == {"one": ("mllp", "maintenance"), "two": ("mllp",)}
        # A clean stop gives the role up at once: the next heartbeat takes it.
        await one.stop()
        took = await wait_for(two.is_leader)
        assert took < 3 * HEARTBEAT + 0.5
        assert {r.id: r.stopped_at != "" for r in ha_tx.list_instances(a)} == {
            "one": True, "two": False}
        # A leader that dies (no stop, no more heartbeats) keeps the role until its
        # lease lapses; then the survivor takes it within one heartbeat.
        three = leadership(a, "three", elected)
        await three.start()
        assert two._task is not None
        two._task.cancel()  # dead: never renews again
        died = time.monotonic()
        await wait_for(three.is_leader, timeout=LEASE + 5)
        assert LEASE * 0.5 < time.monotonic() - died < LEASE + 3 * HEARTBEAT + 0.5
        assert not two.is_leader()  # its own clock told it the lease ran out
        assert elected == ["one", "two", "three"]
        await three.stop()
    finally:
        for x in (one, two):
            x._stopped = True


def idle_env(store: Store) -> tuple[IdleRule, StatusMessages]:
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7")
                       + mapped_steps("orm-o01-two-groups.hl7"))
    dest = Destination("ris", _profiles().for_message_type("ORM^O01"), "UNICODE UTF-8",
                       "utf-8")
    messages = StatusMessages([dest], sending_application="B", sending_facility="R")
    rule = IdleRule(stations=["CT01"], idle_hours=24, set_status="COMPLETED", notify=True)
    return rule, messages


def test_idle_rules_at_two_instances_at_once_change_each_step_once(pg_pair):
    """Without the leader (say, a paused old leader and the new one): instance A's job
    has changed the steps and not committed; B's runs meanwhile and skips the rows A
    holds. One CM per step."""
    a, b = pg_pair
    rule, messages = idle_env(a)
    later = datetime.now(UTC) + timedelta(days=3)
    done, release = threading.Event(), threading.Event()
    result: dict[str, object] = {}

    def hold(tx):
        done.set()
        release.wait(10)

    def run_a() -> None:
        result["a"] = a.write([expire_job(rule, messages, later), hold])[0]

    t = threading.Thread(target=run_a)
    t.start()
    assert done.wait(10)
    (result["b"],) = b.write([expire_job(rule, messages, later)])
    release.set()
    t.join()
    assert result == {"a": (2, 2), "b": (0, 0)}
    # And after A's commit, B finds nothing left to do either.
    assert b.write([expire_job(rule, messages, later)]) == [(0, 0)]
    events = [(m.event, m.order_key) for m in outbox_tx.list_messages(a)]
    assert sorted(events) == [("CM", "order:PLC100001/FIL100001"),
                              ("CM", "order:PLC200301/FIL200301")]


async def test_housekeeping_runs_on_the_leader_only(pg_pair):
    a, b = pg_pair
    rule, messages = idle_env(a)
    settings = HousekeepingSettings(idle_rules=[rule])
    one, two = leadership(a, "one"), leadership(b, "two")
    await one.start()
    await two.start()
    try:
        later = datetime.now(UTC) + timedelta(days=3)
        hk_two = Housekeeping(settings, thread_submit(b), messages=messages, leader=two)
        assert await hk_two.run_once(later) == (0, PurgeCounts())
        # The leader's own check, in its job's transaction, also stops a leader whose
        # lease lapsed in the database while it still believes it leads.
        hk_one = Housekeeping(settings, thread_submit(a), messages=messages, leader=one)
        assert (await hk_one.run_once(later))[0] == 2
        assert len(outbox_tx.list_messages(a)) == 2
    finally:
        await one.stop()
        await two.stop()


async def test_a_leader_whose_lease_lapsed_does_nothing(pg_pair):
    a, _ = pg_pair
    rule, messages = idle_env(a)
    one = leadership(a, "one")
    await one.start()
    assert one._task is not None
    one._task.cancel()  # no more renewals; it still believes it leads for LEASE s
    a.write([lambda tx: ha_tx.acquire(tx, ha_tx.MAINTENANCE, "one", 0.0)])  # lapse now
    a.write([lambda tx: ha_tx.acquire(tx, ha_tx.MAINTENANCE, "other", 30)])
    assert one.is_leader()
    hk = Housekeeping(HousekeepingSettings(idle_rules=[rule]), thread_submit(a),
                      messages=messages, leader=one)
    assert (await hk.run_once(datetime.now(UTC) + timedelta(days=3)))[0] == 0
    assert outbox_tx.list_messages(a) == []
