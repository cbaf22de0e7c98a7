"""The MPPS forwarding queue's SQL (bridge/store/mpps_forward_tx.py) on SQLite and
PostgreSQL: heads per instance, claims and leases, outcomes by the holder only,
requeue, purge, stats; and two forwarders on one PostgreSQL database, each request
delivered once, in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from bridge.mpps.forward import MppsForwarder
from bridge.store import Store, mpps_forward_tx
from bridge.store.mpps_forward_tx import N_CREATE, N_SET, ForwardState, NewForward
from tests.store import conftest as store_fixtures

from .mpps_pacs import PacsScp
from .test_forward import forward_settings, until

pg_dsn = store_fixtures.pg_dsn
pg_pair = store_fixtures.pg_pair


def write(store: Store, fn, *args, **kw):
    (result,) = store.write([lambda tx: fn(tx, *args, **kw)])
    if isinstance(result, BaseException):
        raise result
    return result


def queue(store: Store, items: list[tuple[str, str]], destination: str = "pacs",
          payload: bytes = b"") -> list[int]:
    """(instance, operation) pairs in this order; the payload names them when not given
    (the test PACS does not decode what the store tests send)."""
    rows = [NewForward(destination=destination, sop_instance_uid=uid, operation=op,
                       transfer_syntax="1.2.840.10008.1.2.1",
                       payload=payload or f"{uid}/{op}".encode()) for uid, op in items]
    return write(store, mpps_forward_tx.enqueue, rows)


def claim(store: Store, instance: str, limit: int = 10, lease_s: float = 30.0) -> list[str]:
    got = write(store, mpps_forward_tx.claim_heads, "pacs", instance=instance, limit=limit,
                lease_s=lease_s, now=datetime.now(UTC) + timedelta(seconds=1))
    return [f"{r.sop_instance_uid}/{r.operation}" for r in got]


def test_only_heads_of_each_instance_are_claimed_and_never_twice(store):
    ids = queue(store, [("A", N_CREATE), ("B", N_CREATE), ("A", N_SET), ("C", N_CREATE),
                        ("A", N_SET)])
    assert claim(store, "one", limit=2) == ["A/N-CREATE", "B/N-CREATE"]
    assert claim(store, "two") == ["C/N-CREATE"]  # A's N-SET waits for its N-CREATE
    assert claim(store, "one") == []
    # Only the holder records an outcome.
    assert not write(store, mpps_forward_tx.mark_sent, ids[0], 0, claimed_by="two")
    assert write(store, mpps_forward_tx.mark_sent, ids[0], 0, claimed_by="one")
    assert claim(store, "two") == ["A/N-SET"]
    row = mpps_forward_tx.get_row(store, ids[0])
    assert row is not None and (row.state, row.peer_status, row.claimed_by) == ("sent", 0, "")


def test_a_dead_head_lets_the_next_request_go_and_requeue_brings_it_back(store):
    ids = queue(store, [("A", N_CREATE), ("A", N_SET)])
    claim(store, "one")
    assert write(store, mpps_forward_tx.mark_dead, ids[0], "0x0110 Failure", 0x0110,
                 claimed_by="one")
    assert claim(store, "one") == ["A/N-SET"]
    write(store, mpps_forward_tx.release_claims, "one")
    # Re-queued: the N-CREATE is the head again, its attempts start from 0.
    assert write(store, mpps_forward_tx.requeue, [ids[0], 999]) == [ids[0]]
    assert claim(store, "two") == ["A/N-CREATE"]
    row = mpps_forward_tx.get_row(store, ids[0])
    assert row is not None and (row.state, row.attempts) == ("pending", 0)
    assert mpps_forward_tx.queue_stats(store) == {"pacs": (2, 0)}


def test_lapsed_claims_are_taken_over_and_retries_wait(store):
    ids = queue(store, [("A", N_CREATE), ("B", N_CREATE)])
    assert claim(store, "dead-instance", lease_s=-1) == ["A/N-CREATE", "B/N-CREATE"]
    assert claim(store, "survivor") == ["A/N-CREATE", "B/N-CREATE"]
    later = datetime.now(UTC) + timedelta(hours=1)
    assert write(store, mpps_forward_tx.mark_retry, ids[0], "refused", later,
                 claimed_by="survivor")
    write(store, mpps_forward_tx.release_claims, "survivor")
    assert claim(store, "x") == ["B/N-CREATE"]  # A is not due yet
    assert mpps_forward_tx.next_due(store, "pacs") is not None
    row = mpps_forward_tx.get_row(store, ids[0])
    assert row is not None and (row.attempts, row.last_error) == (1, "refused")


def test_list_counts_and_purge_never_pending(store):
    ids = queue(store, [("A", N_CREATE), ("B", N_CREATE)])
    write(store, mpps_forward_tx.mark_sent, ids[0], 0)
    assert mpps_forward_tx.count_by_state(store) == {"sent": 1, "pending": 1}
    assert [r.id for r in mpps_forward_tx.list_rows(store, states=["sent"])] == [ids[0]]
    assert [r.id for r in mpps_forward_tx.list_rows(store, sop_instance_uid="B")] == [ids[1]]
    with pytest.raises(ValueError, match="never purged"):
        write(store, mpps_forward_tx.purge, ForwardState.PENDING, datetime.now(UTC))
    assert write(store, mpps_forward_tx.purge, ForwardState.SENT,
                 datetime.now(UTC) + timedelta(seconds=5)) == 1
    assert mpps_forward_tx.count_by_state(store) == {"pending": 1}
    with pytest.raises(ValueError, match="not an MPPS operation"):
        queue(store, [("C", "N-ACTION")])


async def test_two_forwarders_on_one_postgresql_send_each_request_once_in_order(pg_pair):
    a, b = pg_pair
    from tests.mpps.test_forward import UID_A, UID_B

    pacs = PacsScp()
    pacs.start()
    items = []
    for n in range(3):
        items += [(UID_A + str(n), N_CREATE), (UID_B + str(n), N_CREATE)]
    for n in range(3):
        items += [(UID_A + str(n), N_SET), (UID_B + str(n), N_SET),
                  (UID_A + str(n), N_SET)]
    # A small valid data set: the PACS decodes nothing, the forwarder does.
    from pydicom import Dataset
    from pynetdicom.dsutils import encode

    ds = Dataset()
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    queue(a, items, payload=encode(ds, False, True))
    settings = forward_settings(pacs, max_associations=3)
    one = MppsForwarder(a, settings, calling_ae="ONE", instance="one")
    two = MppsForwarder(b, settings, calling_ae="TWO", instance="two")
    await one.start()
    await two.start()
    try:
        await until(lambda: mpps_forward_tx.count_by_state(a).get("pending", 0) == 0)
    finally:
        await asyncio.gather(one.stop(), two.stop())
        pacs.stop()
    assert pacs.count() == len(items)  # once each
    for uid in {uid for uid, _ in items}:
        assert pacs.operations(uid) == [op for u, op in items if u == uid]
    assert one.stats.delivered + two.stats.delivered == len(items)
