"""The claimed-queue SQL both delivery queues share (bridge/store/claims.py), through
each queue's own module, on SQLite and PostgreSQL: a claim skips the keys this
instance is busy with and gives back the heads of theirs it took on the way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.store import Store, mpps_forward_tx, outbox_tx
from bridge.store.mpps_forward_tx import N_CREATE, N_SET, NewForward
from bridge.store.outbox_tx import NewMessage


def write(store: Store, fn, *args, **kw):
    (result,) = store.write([lambda tx: fn(tx, *args, **kw)])
    if isinstance(result, BaseException):
        raise result
    return result


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=1)


def test_an_outbox_claim_skips_busy_orders_and_leaves_their_next_message_unclaimed(store):
    msgs = [NewMessage(destination="ris", order_key=f"order:{o}", event=e,
                       message_type="ORM^O01", control_id=f"{o}-{e}", payload=b"MSH|")
            for o, e in (("A", "IP"), ("A", "CM"), ("B", "IP"), ("C", "IP"))]
    ids = dict(zip(("A-IP", "A-CM", "B-IP", "C-IP"), write(store, outbox_tx.enqueue, msgs),
                   strict=True))
    # A-IP was sent by this instance, whose worker still counts order A as busy:
    # A-CM is now the head of A, but must wait for the worker to let A go.
    write(store, outbox_tx.mark_sent, ids["A-IP"], b"MSA|AA")
    got = write(store, outbox_tx.claim_heads, "ris", instance="one", limit=1, lease_s=30,
                now=soon(), busy_orders=frozenset({"order:A"}))
    assert [(m.control_id, m.claimed_by) for m in got] == [("B-IP", "one")]
    claimed = {m.control_id: m.claimed_by for m in outbox_tx.list_messages(store)}
    assert claimed == {"A-IP": "", "A-CM": "", "B-IP": "one", "C-IP": ""}
    # Without the busy order, A-CM is claimable again (its claim was given back).
    got = write(store, outbox_tx.claim_heads, "ris", instance="two", limit=5, lease_s=30,
                now=soon())
    assert [m.control_id for m in got] == ["A-CM", "C-IP"]


def test_a_forward_claim_skips_busy_instances(store):
    rows = [NewForward(destination="pacs", sop_instance_uid=uid, operation=op,
                       transfer_syntax="1.2.840.10008.1.2.1", payload=f"{uid}/{op}".encode())
            for uid, op in (("1.1", N_CREATE), ("1.1", N_SET), ("1.2", N_CREATE))]
    first, second, other = write(store, mpps_forward_tx.enqueue, rows)
    write(store, mpps_forward_tx.mark_sent, first, 0)
    got = write(store, mpps_forward_tx.claim_heads, "pacs", instance="one", limit=5,
                lease_s=30, now=soon(), busy=frozenset({"1.1"}))
    assert [r.id for r in got] == [other]
    row = mpps_forward_tx.get_row(store, second)
    assert row is not None and (row.state, row.claimed_by) == ("pending", "")
