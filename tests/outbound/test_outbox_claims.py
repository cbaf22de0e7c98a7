"""Outbox claims for several instances on one database (issue 11): only an order's
head, never under another live lease, lapsed leases taken over, outcomes recorded by
the holder only; SQLite with the same columns; two senders on one PostgreSQL outbox."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bridge.outbound.sender import OutboxSender, lease_seconds
from bridge.store import Store, outbox_tx
from bridge.store.outbox_tx import OUTBOX_CHANNEL
from bridge.store.sqltx import stamp
from tests.store import conftest as store_fixtures
from tests.waiting import until

from .conftest import assert_in_order, destination, pending, queue

pg_dsn = store_fixtures.pg_dsn  # the fixtures: two instances on one database
pg_pair = store_fixtures.pg_pair


def write(store: Store, fn, *args, **kw):
    (result,) = store.write([lambda tx: fn(tx, *args, **kw)])
    if isinstance(result, BaseException):
        raise result
    return result


def claim(store: Store, instance: str, limit: int = 10, lease_s: float = 30.0) -> list[str]:
    got = write(store, outbox_tx.claim_heads, "ris", instance=instance, limit=limit,
                lease_s=lease_s, now=datetime.now(UTC) + timedelta(seconds=1))
    return [m.control_id for m in got]


def ids(store: Store) -> dict[str, int]:
    return {m.control_id: m.id for m in outbox_tx.list_messages(store, limit=1000)}


def test_only_heads_are_claimed_and_never_twice(store):
    queue(store, "ris", [("A", "IP"), ("B", "IP"), ("A", "CM"), ("C", "IP")])
    assert claim(store, "one", limit=2) == ["A-IP", "B-IP"]
    # A's next message is not a head; A-IP and B-IP are under a live lease.
    assert claim(store, "two") == ["C-IP"]
    assert claim(store, "one") == []
    m = {x.control_id: x for x in outbox_tx.list_messages(store)}
    assert (m["A-IP"].claimed_by, m["C-IP"].claimed_by, m["A-CM"].claimed_by) == (
        "one", "two", "")
    assert m["A-IP"].lease_until > m["A-IP"].created_at
    # The holder records the outcome; then the order's next message is the head.
    assert write(store, outbox_tx.mark_sent, m["A-IP"].id, b"MSA|AA", claimed_by="one")
    assert claim(store, "two") == ["A-CM"]
    sent = outbox_tx.get_message(store, m["A-IP"].id)
    assert sent is not None and (sent.state, sent.claimed_by, sent.lease_until) == (
        "sent", "", "")


def test_next_due_is_when_a_head_may_next_be_claimed(store):
    """The dispatcher sleeps until next_due: a head's due time, or the end of the
    lease on a claimed head; never the time of a message queued behind its head
    (that one is in the past, and the dispatcher would poll without pause while the
    head is sent)."""
    queue(store, "ris", [("A", "IP"), ("A", "CM")])
    m = {x.control_id: x for x in outbox_tx.list_messages(store)}
    assert outbox_tx.next_due(store, "ris") == m["A-IP"].next_attempt_at
    assert claim(store, "one", lease_s=3600) == ["A-IP"]
    held = outbox_tx.get_message(store, m["A-IP"].id)
    assert held is not None and held.lease_until > m["A-CM"].next_attempt_at
    assert outbox_tx.next_due(store, "ris") == held.lease_until
    (b,) = queue(store, "ris", [("B", "IP")])
    b_due = outbox_tx.get_message(store, b)
    assert b_due is not None and outbox_tx.next_due(store, "ris") == b_due.next_attempt_at
    later = datetime.now(UTC) + timedelta(minutes=10)
    assert write(store, outbox_tx.mark_retry, b, "reply CE", later)
    assert outbox_tx.next_due(store, "ris") == stamp(later)  # before A's lease ends
    assert outbox_tx.next_due(store, "pacs") is None


def test_a_lapsed_lease_is_taken_over_and_the_old_holder_records_nothing(store):
    queue(store, "ris", [("A", "IP"), ("A", "CM")])
    assert claim(store, "dead", lease_s=0.2) == ["A-IP"]
    assert claim(store, "survivor") == []  # live lease
    time.sleep(0.3)
    assert claim(store, "survivor") == ["A-IP"]
    i = ids(store)
    # The first holder comes back too late: its outcome is not recorded ...
    assert not write(store, outbox_tx.mark_sent, i["A-IP"], b"", claimed_by="dead")
    assert not write(store, outbox_tx.mark_retry, i["A-IP"], "x", datetime.now(UTC),
                     claimed_by="dead")
    assert claim(store, "dead") == []  # ... and A-CM is still not a head
    assert write(store, outbox_tx.mark_sent, i["A-IP"], b"", claimed_by="survivor")
    assert claim(store, "dead") == ["A-CM"]


def test_a_retry_gives_the_claim_up_and_holds_the_order_back(store):
    queue(store, "ris", [("A", "IP"), ("A", "CM"), ("B", "IP")])
    assert claim(store, "one") == ["A-IP", "B-IP"]
    i = ids(store)
    later = datetime.now(UTC) + timedelta(hours=1)
    assert write(store, outbox_tx.mark_retry, i["A-IP"], "timed out", later, claimed_by="one")
    m = outbox_tx.get_message(store, i["A-IP"])
    assert m is not None and m.claimed_by == "" and m.state == "pending"
    assert claim(store, "two") == []  # A-IP waits for its retry; A-CM is not a head
    assert write(store, outbox_tx.release_claims, "one") == 1  # B-IP
    assert claim(store, "two") == ["B-IP"]


def test_lease_covers_the_longest_attempt():
    d = destination(1, connect_timeout_s=10, ack_timeout_s=30)
    assert lease_seconds(d) == 2 * (10 + 30) + 5
    tls = destination(1, connect_timeout_s=1, ack_timeout_s=2,
                      tls={"enabled": True, "handshake_timeout_s": 3})
    assert lease_seconds(tls) == 2 * (1 + 3 + 2) + 5


def test_concurrent_claimers_on_postgresql_send_each_message_once_in_order(pg_pair):
    """Two instances claim and record outcomes as fast as they can: every message is
    claimed exactly once, and a message is claimed only after its predecessor in the
    order was recorded."""
    a, b = pg_pair
    orders, events = 25, ["IP", "CM", "DC"]
    queue(a, "ris", [(f"O{n}", e) for e in events for n in range(orders)])
    log: list[tuple[str, str, str]] = []  # (event, instance, control id), in commit order
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(store: Store, name: str) -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                got = write(store, outbox_tx.claim_heads, "ris", instance=name, limit=4,
                            lease_s=30, now=datetime.now(UTC) + timedelta(seconds=1))
                with lock:
                    log.extend(("claim", name, m.control_id) for m in got)
                for m in got:
                    def done(tx, mid=m.id, cid=m.control_id):
                        ok = outbox_tx.mark_sent(tx, mid, b"", claimed_by=name)
                        with lock:  # inside the transaction: logged before anyone can
                            log.append(("sent", name, cid))  # claim the next one
                        return ok
                    (ok,) = store.write([done])
                    assert ok is True
                if not got and outbox_tx.count_by_state(store).get("pending", 0) == 0:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s, n)) for s, n in ((a, "a"), (b, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    claims = [cid for kind, _, cid in log if kind == "claim"]
    assert sorted(claims) == sorted(f"O{n}-{e}" for n in range(orders) for e in events)
    assert {who for kind, who, _ in log if kind == "claim"} == {"a", "b"}
    position = {(kind, cid): i for i, (kind, _, cid) in enumerate(log)}
    for n in range(orders):
        for earlier, later in itertools.pairwise(events):
            assert position[("sent", f"O{n}-{earlier}")] < position[("claim", f"O{n}-{later}")]


@pytest.mark.parametrize("poll", [30.0])
async def test_two_senders_on_one_postgresql_outbox(pg_pair, receiver, poll):
    """Two instances' senders share one outbox: each message arrives once, in order per
    order. Their poll interval is long: NOTIFY from the enqueueing transaction (on
    the other instance's store) is what wakes them."""
    a, b = pg_pair
    senders = [OutboxSender(s, [destination(receiver.port, max_connections=2)],
                            poll_interval_s=poll, instance=name)
               for s, name in ((a, "a"), (b, "b"))]
    closers = []
    for s, store in zip(senders, (a, b), strict=True):
        await s.start()
        closers.append(store.listen(OUTBOX_CHANNEL, lambda _p, s=s: s.wake()))
    await asyncio.sleep(0.5)  # both listening and idle (their first look found nothing)
    try:
        orders, events = 20, ["IP", "CM", "DC"]
        for e in events:  # enqueued from a third writer: only NOTIFY tells the senders
            queue(a if e != "CM" else b, "ris", [(f"O{n}", e) for n in range(orders)])
        await until(lambda: pending(a) == 0, timeout=20)
    finally:
        for close in closers:
            close()
        for s in senders:
            await s.stop()
    got = receiver.messages
    assert len(got) == orders * len(events)  # no duplicates without a crash
    for n in range(orders):
        assert_in_order(got, f"O{n}", events)
    assert all(s.stats.sent for s in senders), [s.stats for s in senders]
    assert all(m.claimed_by == "" for m in outbox_tx.list_messages(a, limit=1000))
