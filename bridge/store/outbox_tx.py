"""The durable outbox of outbound HL7 messages (see sqltx.py for the threading rule).

A row is one message for one destination. ``order_key`` names the order it
is about: the sender delivers the messages of one order and destination
strictly in id order (the next one only after the previous one was
acknowledged or dead-lettered), and different orders independently.

States: ``pending`` (waiting or being retried), ``sent`` (AA/CA received),
``dead`` (AE/AR, or it could not be built; ``last_error`` says why).

Several instances on one database (PostgreSQL) share the outbox through claims:
an instance sends a message only after ``claim_heads`` wrote its name into
``claimed_by`` with a lease (``lease_until``, from the database's clock). Only
the head of an order (its oldest pending message) can be claimed, and only
while nobody holds a live lease on it, so one order's messages go out in
order whichever instance sends them; a dead instance's claims lapse and a
survivor takes them over. An outcome is recorded only by the claim's holder
(``mark_*`` with ``claimed_by``). On PostgreSQL the rows are picked with
``FOR UPDATE SKIP LOCKED``; SQLite has one writer, so a plain UPDATE in its
transaction does the same. ``enqueue`` NOTIFYs ``OUTBOX_CHANNEL`` so that
every instance's sender wakes at once (PostgreSQL; elsewhere they poll).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import clock, notify, reading, skip_locked, stamp

# The NOTIFY channel of new outbox rows; the payload is the destination's name.
OUTBOX_CHANNEL = "mwl_outbox"


class OutboxState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue, built inside the transaction that caused it."""

    destination: str
    order_key: str
    event: str  # IP, CM, DC, ...
    message_type: str  # e.g. ORM^O01
    control_id: str  # MSH-10
    payload: bytes  # encoded in the destination's character set, CR segment ends
    mpps_id: int | None = None
    step_id: int | None = None
    dead_reason: str = ""  # set: queue it dead at once (it could not be built)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    destination: str
    order_key: str
    event: str
    message_type: str
    control_id: str
    state: str
    attempts: int
    next_attempt_at: str
    created_at: str
    updated_at: str
    sent_at: str
    last_error: str
    mpps_id: int | None
    step_id: int | None
    payload: bytes
    ack: bytes
    claimed_by: str = ""  # the instance sending it ('' when nobody is)
    lease_until: str = ""  # the claim holds until then (database clock)


_COLUMNS = ("id, destination, order_key, event, message_type, control_id, state, attempts, "
            "next_attempt_at, created_at, updated_at, sent_at, last_error, mpps_id, step_id, "
            "payload, ack, claimed_by, lease_until")


def _message(row: Sequence[Any]) -> OutboxMessage:
    return OutboxMessage(
        id=int(row[0]), destination=str(row[1]), order_key=str(row[2]), event=str(row[3]),
        message_type=str(row[4]), control_id=str(row[5]), state=str(row[6]),
        attempts=int(row[7]), next_attempt_at=str(row[8]), created_at=str(row[9]),
        updated_at=str(row[10]), sent_at=str(row[11]), last_error=str(row[12]),
        mpps_id=None if row[13] is None else int(row[13]),
        step_id=None if row[14] is None else int(row[14]),
        payload=bytes(row[15]), ack=bytes(row[16]), claimed_by=str(row[17]),
        lease_until=str(row[18]))


# --- inside a write transaction ---

def enqueue(tx: StoreTx, messages: Iterable[NewMessage]) -> list[int]:
    cur, p = tx.cur, tx.param
    ids = []
    now = stamp()
    woken: set[str] = set()
    for m in messages:
        state = OutboxState.DEAD if m.dead_reason else OutboxState.PENDING
        cur.execute(
            "INSERT INTO outbox (destination, order_key, event, message_type, control_id, state,"
            " attempts, next_attempt_at, created_at, updated_at, sent_at, last_error, mpps_id,"
            f" step_id, payload, ack) VALUES ({', '.join([p] * 16)}) RETURNING id",
            (m.destination, m.order_key, m.event, m.message_type, m.control_id, state.value, 0,
             now, now, now, "", m.dead_reason, m.mpps_id, m.step_id, m.payload, b""))
        ids.append(int(cur.fetchone()[0]))
        if state is OutboxState.PENDING and m.destination not in woken:
            woken.add(m.destination)
            notify(tx, OUTBOX_CHANNEL, m.destination)  # delivered at commit
    return ids


def _holder(claimed_by: str | None) -> tuple[str, tuple[str, ...]]:
    """The WHERE part that limits an outcome to the claim's holder (None: anyone)."""
    if claimed_by is None:
        return "", ()
    return " AND claimed_by = {p}", (claimed_by,)


def mark_sent(tx: StoreTx, message_id: int, ack: bytes, *, claimed_by: str | None = None
              ) -> bool:
    """Delivered. With ``claimed_by``, only while that instance still holds the claim
    (False: it lapsed and another instance took the message over; its outcome counts)."""
    cur, p = tx.cur, tx.param
    now = stamp()
    held, who = _holder(claimed_by)
    cur.execute(f"UPDATE outbox SET state = {p}, attempts = attempts + 1, updated_at = {p}, "
                f"sent_at = {p}, last_error = '', ack = {p}, claimed_by = '', lease_until = ''"
                f" WHERE id = {p} AND state = {p}{held.format(p=p)}",
                (OutboxState.SENT.value, now, now, ack, message_id, OutboxState.PENDING.value,
                 *who))
    return bool(cur.rowcount)


def mark_dead(tx: StoreTx, message_id: int, reason: str, ack: bytes = b"", *,
              claimed_by: str | None = None) -> bool:
    cur, p = tx.cur, tx.param
    held, who = _holder(claimed_by)
    cur.execute(f"UPDATE outbox SET state = {p}, attempts = attempts + 1, updated_at = {p}, "
                f"last_error = {p}, ack = {p}, claimed_by = '', lease_until = '' "
                f"WHERE id = {p}{held.format(p=p)}",
                (OutboxState.DEAD.value, stamp(), reason, ack, message_id, *who))
    return bool(cur.rowcount)


def mark_retry(tx: StoreTx, message_id: int, error: str, next_attempt: datetime, *,
               claimed_by: str | None = None) -> bool:
    """Not delivered: pending again from ``next_attempt``, for whichever instance
    claims it then (the claim is given up)."""
    cur, p = tx.cur, tx.param
    held, who = _holder(claimed_by)
    cur.execute(f"UPDATE outbox SET attempts = attempts + 1, updated_at = {p}, "
                f"next_attempt_at = {p}, last_error = {p}, claimed_by = '', lease_until = '' "
                f"WHERE id = {p} AND state = {p}{held.format(p=p)}",
                (stamp(), stamp(next_attempt), error, message_id, OutboxState.PENDING.value,
                 *who))
    return bool(cur.rowcount)


def claim_heads(tx: StoreTx, destination: str, *, instance: str, limit: int, lease_s: float,
                now: datetime | None = None) -> list[OutboxMessage]:
    """Claim up to ``limit`` due heads of ``destination`` for ``instance``, oldest first.

    A head is the oldest pending message of its order; it is claimable when it is
    due (``next_attempt_at``, by ``now``: the sender's clock, which wrote it) and
    nobody holds a live lease on it (by the database's clock). The claim lasts
    ``lease_s`` seconds: the sender's longest attempt, so a live instance never
    loses a claim in the middle of a send.
    """
    if limit <= 0:
        return []
    cur, p = tx.cur, tx.param
    db_now, until = clock(tx, lease_s)
    cols = ", ".join("o." + c.strip() for c in _COLUMNS.split(","))
    cur.execute(
        f"SELECT {cols} FROM outbox o WHERE o.destination = {p} AND o.state = {p} "
        f"AND o.next_attempt_at <= {p} AND (o.claimed_by = '' OR o.lease_until < {p}) "
        "AND NOT EXISTS (SELECT 1 FROM outbox i WHERE i.destination = o.destination "
        "AND i.state = o.state AND i.order_key = o.order_key AND i.id < o.id) "
        f"ORDER BY o.id LIMIT {int(limit)}{skip_locked(tx)}",
        (destination, OutboxState.PENDING.value, stamp(now), db_now))
    rows = [_message(r) for r in cur.fetchall()]
    for m in rows:
        cur.execute(f"UPDATE outbox SET claimed_by = {p}, lease_until = {p} WHERE id = {p}",
                    (instance, until, m.id))
    return [replace(m, claimed_by=instance, lease_until=until) for m in rows]


def release_claims(tx: StoreTx, instance: str, ids: Iterable[int] | None = None) -> int:
    """Give up ``instance``'s claims on pending messages (all, or those in ``ids``),
    so another instance may send them at once instead of after the lease."""
    cur, p = tx.cur, tx.param
    sql = (f"UPDATE outbox SET claimed_by = '', lease_until = '' WHERE claimed_by = {p} "
           f"AND state = {p}")
    if ids is None:
        cur.execute(sql, (instance, OutboxState.PENDING.value))
        return int(cur.rowcount or 0)
    n = 0
    for message_id in ids:
        cur.execute(sql + f" AND id = {p}", (instance, OutboxState.PENDING.value, message_id))
        n += int(cur.rowcount or 0)
    return n


def requeue(tx: StoreTx, ids: Iterable[int]) -> list[int]:
    """Dead or waiting messages -> pending, due now. Returns the ids that changed.

    A dead message without a payload (it could not be built) is left alone.
    """
    cur, p = tx.cur, tx.param
    changed = []
    now = stamp()
    for message_id in ids:
        cur.execute(f"UPDATE outbox SET state = {p}, next_attempt_at = {p}, updated_at = {p} "
                    f"WHERE id = {p} AND state IN ({p}, {p}) AND payload <> {p}",
                    (OutboxState.PENDING.value, now, now, message_id, OutboxState.DEAD.value,
                     OutboxState.PENDING.value, b""))
        if cur.rowcount:
            changed.append(message_id)
    return changed


def purge(tx: StoreTx, state: OutboxState, older_than: datetime) -> int:
    """Delete messages in ``state`` last changed before ``older_than``; never pending ones."""
    if state is OutboxState.PENDING:
        raise ValueError("pending messages are never purged")
    cur, p = tx.cur, tx.param
    cur.execute(f"DELETE FROM outbox WHERE state = {p} AND updated_at < {p}",
                (state.value, stamp(older_than)))
    return int(cur.rowcount or 0)


# --- reads (any thread; blocking) ---

def due_heads(store: Store, destination: str, *, now: datetime, limit: int,
              busy_orders: Collection[str] = ()) -> list[OutboxMessage]:
    """The oldest pending message of each order of ``destination`` that is due now
    and not claimed (or whose claim has lapsed, by ``now``).

    Orders in ``busy_orders`` (being sent right now) are skipped. Oldest first.
    A read: what ``claim_heads`` would likely claim, without writing.
    """
    with reading(store) as (cur, p):
        cur.execute(
            f"SELECT {', '.join('o.' + c.strip() for c in _COLUMNS.split(','))} FROM outbox o "
            f"WHERE o.destination = {p} AND o.state = {p} AND o.id = ("
            "SELECT MIN(i.id) FROM outbox i WHERE i.destination = o.destination "
            "AND i.state = o.state AND i.order_key = o.order_key) "
            f"AND o.next_attempt_at <= {p} AND (o.claimed_by = '' OR o.lease_until < {p}) "
            f"ORDER BY o.id LIMIT {int(limit + len(busy_orders))}",
            (destination, OutboxState.PENDING.value, stamp(now), stamp(now)))
        heads = [_message(r) for r in cur.fetchall()]
    return [m for m in heads if m.order_key not in busy_orders][:limit]


def next_due(store: Store, destination: str) -> str | None:
    """The earliest ``next_attempt_at`` of any pending message of ``destination``."""
    with reading(store) as (cur, p):
        cur.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE destination = {p} "
                    f"AND state = {p}", (destination, OutboxState.PENDING.value))
        row = cur.fetchone()
        return row[0] if row and row[0] else None


def list_messages(store: Store, *, states: Collection[str] = (), destination: str = "",
                  limit: int = 100) -> list[OutboxMessage]:
    where: list[str] = []
    params: list[str] = []
    with reading(store) as (cur, p):
        if states:
            where.append(f"state IN ({', '.join([p] * len(states))})")
            params.extend(states)
        if destination:
            where.append(f"destination = {p}")
            params.append(destination)
        sql = f"SELECT {_COLUMNS} FROM outbox"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur.execute(sql + f" ORDER BY id LIMIT {int(limit)}", params)
        return [_message(r) for r in cur.fetchall()]


def get_message(store: Store, message_id: int) -> OutboxMessage | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = {p}", (message_id,))
        row = cur.fetchone()
        return None if row is None else _message(row)


def count_by_state(store: Store) -> dict[str, int]:
    with reading(store) as (cur, _):
        cur.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state")
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}


def queue_stats(store: Store) -> dict[str, tuple[int, int, str | None]]:
    """Per destination: (pending, dead, created_at of the oldest pending message or None).

    For the metrics, read on each scrape: the counts come from the queue index, and
    only pending rows are read for their age.
    """
    out: dict[str, tuple[int, int, str | None]] = {}
    with reading(store) as (cur, p):
        cur.execute(f"SELECT destination, state, COUNT(*) FROM outbox WHERE state IN ({p}, {p}) "
                    "GROUP BY destination, state",
                    (OutboxState.PENDING.value, OutboxState.DEAD.value))
        counts = cur.fetchall()
        cur.execute(f"SELECT destination, MIN(created_at) FROM outbox WHERE state = {p} "
                    "GROUP BY destination", (OutboxState.PENDING.value,))
        oldest = {str(r[0]): (str(r[1]) if r[1] else None) for r in cur.fetchall()}
    for destination, state, count in counts:
        pending, dead, _ = out.get(str(destination), (0, 0, None))
        if state == OutboxState.PENDING.value:
            pending = int(count)
        else:
            dead = int(count)
        out[str(destination)] = (pending, dead, oldest.get(str(destination)))
    return out
