"""The outbox as the metrics read it on each scrape, on both store backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.app.health import outbox_reader, store_reachable
from bridge.store import Store, outbox_tx
from bridge.store.base import StoreTx
from bridge.store.sqltx import stamp
from bridge.telemetry import Metrics, OutboxQueue
from tests.outbound.conftest import queue


def test_pending_dead_and_the_age_of_the_oldest_pending_per_destination(store: Store):
    read = outbox_reader(store)
    assert read() == []
    ids = queue(store, "ris", [("C1", "ORD1"), ("C2", "ORD1"), ("C3", "ORD2")])
    queue(store, "lab", [("L1", "ORD9")])

    def kill(tx: StoreTx) -> None:
        outbox_tx.mark_dead(tx, ids[2], "AE: refused")

    store.write([kill])
    got = {q.destination: q for q in read()}
    assert got["ris"].pending == 2 and got["ris"].dead == 1
    assert got["lab"] == OutboxQueue("lab", 1, 0, got["lab"].oldest_pending_age_s)
    age = got["ris"].oldest_pending_age_s
    assert age is not None and 0 <= age < 60

    def sent(tx: StoreTx) -> None:
        outbox_tx.mark_sent(tx, ids[0], b"MSA|AA|C1")
        outbox_tx.mark_sent(tx, ids[1], b"MSA|AA|C2")

    store.write([sent])
    got = {q.destination: q for q in read()}
    assert got["ris"] == OutboxQueue("ris", 0, 1, None)

    m = Metrics(destinations=["ris", "lab"])
    m.watch_outbox(read)
    body = m.render()[0].decode()
    assert 'mwl_bridge_outbox_dead{destination="ris"} 1.0' in body
    assert 'mwl_bridge_outbox_pending{destination="lab"} 1.0' in body
    assert store_reachable(store)()


def test_an_old_pending_message_shows_its_age(store: Store):
    (mid,) = queue(store, "ris", [("OLD", "ORD1")])
    then = stamp(datetime.now(UTC) - timedelta(minutes=15))

    def backdate(tx: StoreTx) -> None:
        tx.cur.execute(f"UPDATE outbox SET created_at = {tx.param} WHERE id = {tx.param}",
                       (then, mid))

    store.write([backdate])
    (q,) = outbox_reader(store)()
    assert q.oldest_pending_age_s is not None and 890 < q.oldest_pending_age_s < 960
