"""The outbox tables on SQLite and PostgreSQL: heads per order, retry, requeue, purge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.store import outbox_tx
from bridge.store.outbox_tx import NewMessage, OutboxState

from .conftest import queue


def write(store, fn, *args):
    (result,) = store.write([lambda tx: fn(tx, *args)])
    if isinstance(result, BaseException):
        raise result
    return result


def heads(store, busy=()):
    return [m.control_id for m in outbox_tx.due_heads(
        store, "ris", now=datetime.now(UTC) + timedelta(seconds=1), limit=10,
        busy_orders=frozenset(busy))]


def test_the_head_of_each_order_oldest_first_and_busy_orders_skipped(store):
    queue(store, "ris", [("A", "IP"), ("B", "IP"), ("A", "CM"), ("C", "IP")])
    queue(store, "pacs", [("Z", "IP")])
    assert heads(store) == ["A-IP", "B-IP", "C-IP"]
    assert heads(store, busy={"order:A"}) == ["B-IP", "C-IP"]
    ids = {m.control_id: m.id for m in outbox_tx.list_messages(store)}
    write(store, outbox_tx.mark_sent, ids["A-IP"], b"MSA|AA")
    assert heads(store) == ["B-IP", "A-CM", "C-IP"]
    write(store, outbox_tx.mark_dead, ids["B-IP"], "AE: no such order", b"MSA|AE")
    assert heads(store) == ["A-CM", "C-IP"]


def test_a_message_waiting_for_its_retry_holds_back_its_order_only(store):
    queue(store, "ris", [("A", "IP"), ("A", "CM"), ("B", "IP")])
    ids = {m.control_id: m.id for m in outbox_tx.list_messages(store)}
    later = datetime.now(UTC) + timedelta(minutes=5)
    write(store, outbox_tx.mark_retry, ids["A-IP"], "timed out", later)
    assert heads(store) == ["B-IP"]
    (a_ip,) = [m for m in outbox_tx.list_messages(store) if m.control_id == "A-IP"]
    assert (a_ip.attempts, a_ip.last_error, a_ip.state) == (1, "timed out", "pending")
    assert outbox_tx.next_due(store, "ris") <= a_ip.next_attempt_at
    # An operator's retry makes it due now.
    assert write(store, outbox_tx.requeue, [ids["A-IP"]]) == [ids["A-IP"]]
    assert heads(store) == ["A-IP", "B-IP"]


def test_requeue_takes_dead_letters_back_but_not_sent_or_unbuildable_ones(store):
    queue(store, "ris", [("A", "IP"), ("B", "IP")])
    unbuildable = NewMessage(destination="ris", order_key="order:C", event="IP",
                             message_type="OMI^O23", control_id="C-IP", payload=b"",
                             dead_reason="cannot build: IPC-1.1 is required but has no value")
    write(store, outbox_tx.enqueue, [unbuildable])
    ids = {m.control_id: m.id for m in outbox_tx.list_messages(store)}
    write(store, outbox_tx.mark_dead, ids["A-IP"], "AR: busy", b"")
    write(store, outbox_tx.mark_sent, ids["B-IP"], b"")
    assert write(store, outbox_tx.requeue, list(ids.values())) == [ids["A-IP"]]
    got = {m.control_id: (m.state, m.last_error) for m in outbox_tx.list_messages(store)}
    assert got == {"A-IP": ("pending", "AR: busy"), "B-IP": ("sent", ""),
                   "C-IP": ("dead", "cannot build: IPC-1.1 is required but has no value")}
    assert outbox_tx.count_by_state(store) == {"pending": 1, "sent": 1, "dead": 1}


def test_control_ids_are_unique_per_destination(store):
    queue(store, "ris", [("A", "IP")])
    again = NewMessage(destination="ris", order_key="order:A", event="IP",
                       message_type="ORM^O01", control_id="A-IP", payload=b"x")
    (result,) = store.write([lambda tx: outbox_tx.enqueue(tx, [again])])
    assert "IntegrityError" in {c.__name__ for c in type(result).__mro__}
    queue(store, "pacs", [("A", "IP")])


def test_purge_deletes_old_sent_and_dead_never_pending(store):
    queue(store, "ris", [("A", "IP"), ("B", "IP"), ("C", "IP")])
    ids = {m.control_id: m.id for m in outbox_tx.list_messages(store)}
    write(store, outbox_tx.mark_sent, ids["A-IP"], b"")
    write(store, outbox_tx.mark_dead, ids["B-IP"], "AE", b"")
    future = datetime.now(UTC) + timedelta(days=1)
    assert write(store, outbox_tx.purge, OutboxState.SENT, future) == 1
    assert write(store, outbox_tx.purge, OutboxState.DEAD, datetime.now(UTC)
                 - timedelta(days=1)) == 0
    assert write(store, outbox_tx.purge, OutboxState.DEAD, future) == 1
    assert [m.control_id for m in outbox_tx.list_messages(store)] == ["C-IP"]
    with pytest.raises(ValueError, match="pending messages are never purged"):
        write(store, outbox_tx.purge, OutboxState.PENDING, future)
