"""The SQL of a claimed delivery queue, shared by the HL7 outbox (outbox_tx.py) and
the MPPS forwarding outbox (mpps_forward_tx.py); see sqltx.py for the threading rule.

Such a table holds one row per request to deliver to ``destination``, in a state
``pending``, ``sent`` or ``dead``, with ``attempts``, ``next_attempt_at``,
``updated_at``, ``last_error`` and a claim (``claimed_by``, ``lease_until``). The
rows of one key (``Queue.key``: an order, an MPPS instance) and destination go out
strictly in id order, so only the head of a key (its oldest pending row) is
claimable, and only while nobody holds a live lease on it (by the database's
clock); an outcome is recorded only by the claim's holder. On PostgreSQL the rows
are picked with ``FOR UPDATE SKIP LOCKED``; SQLite has one writer, so a plain
UPDATE in its transaction does the same.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import clock, reading, skip_locked, stamp

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


class QueueState(StrEnum):
    """A row's state (each queue names it: OutboxState, ForwardState)."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


PENDING, DEAD = QueueState.PENDING.value, QueueState.DEAD.value


@dataclass(frozen=True, slots=True)
class Queue(Generic[R]):
    """One claimed queue: its table, the column whose rows go out in id order, and
    how a row (``columns``, in that order) becomes a record."""

    table: str
    key: str
    columns: tuple[str, ...]
    record: Callable[[Sequence[Any]], R]

    def select(self, alias: str = "") -> str:
        return ", ".join(f"{alias}.{c}" if alias else c for c in self.columns)


def _holder(claimed_by: str | None, p: str) -> tuple[str, tuple[str, ...]]:
    """The WHERE part that limits an outcome to the claim's holder (None: anyone)."""
    if claimed_by is None:
        return "", ()
    return f" AND claimed_by = {p}", (claimed_by,)


# --- inside a write transaction ---

def settle(tx: StoreTx, table: str, row_id: int, values: Mapping[str, Any], *,
           claimed_by: str | None, pending_only: bool = True) -> bool:
    """Record an attempt's outcome: one more attempt, ``values`` set, the claim given
    up. Only on a pending row (unless ``pending_only`` is False) and, with
    ``claimed_by``, only while that instance still holds the claim (False: it
    lapsed and another instance took the row over; its outcome counts)."""
    cur, p = tx.cur, tx.param
    assigned = "".join(f"{column} = {p}, " for column in values)
    where = f" AND state = {p}" if pending_only else ""
    held, who = _holder(claimed_by, p)
    cur.execute(f"UPDATE {table} SET attempts = attempts + 1, {assigned}claimed_by = '', "
                f"lease_until = '' WHERE id = {p}{where}{held}",
                (*values.values(), row_id, *((PENDING,) if pending_only else ()), *who))
    return bool(cur.rowcount)


def retry(tx: StoreTx, table: str, row_id: int, error: str, next_attempt: datetime, *,
          claimed_by: str | None) -> bool:
    """Not delivered: pending again from ``next_attempt``, for whichever instance
    claims it then (the claim is given up)."""
    return settle(tx, table, row_id, {"updated_at": stamp(), "next_attempt_at": stamp(next_attempt),
                                      "last_error": error}, claimed_by=claimed_by)


def claim_heads(tx: StoreTx, queue: Queue[R], destination: str, *, instance: str, limit: int,
                lease_s: float, now: datetime | None, busy: Collection[str] = ()) -> list[R]:
    """Claim up to ``limit`` due heads of ``destination`` for ``instance``, oldest first.

    A head is due by ``next_attempt_at`` against ``now`` (the sender's clock, which
    wrote it); a lease is live by the database's clock. The claim lasts ``lease_s``.
    Keys in ``busy`` (being sent by this instance) are skipped: their next row waits
    for the one in flight (heads of theirs claimed on the way are given back at once).
    """
    if limit <= 0:
        return []
    cur, p = tx.cur, tx.param
    t, key = queue.table, queue.key
    db_now, until = clock(tx, lease_s)
    cur.execute(
        f"SELECT {queue.select('q')} FROM {t} q WHERE q.destination = {p} AND q.state = {p} "
        f"AND q.next_attempt_at <= {p} AND (q.claimed_by = '' OR q.lease_until < {p}) "
        f"AND NOT EXISTS (SELECT 1 FROM {t} i WHERE i.destination = q.destination "
        f"AND i.state = q.state AND i.{key} = q.{key} AND i.id < q.id) "
        f"ORDER BY q.id LIMIT {int(limit + len(busy))}{skip_locked(tx)}",
        (destination, PENDING, stamp(now), db_now))
    rows = cur.fetchall()
    at_id, at_key = queue.columns.index("id"), queue.columns.index(key)
    for r in rows:
        cur.execute(f"UPDATE {t} SET claimed_by = {p}, lease_until = {p} WHERE id = {p}",
                    (instance, until, int(r[at_id])))
    keep = [r for r in rows if str(r[at_key]) not in busy][:limit]
    if len(keep) < len(rows):
        kept = {int(r[at_id]) for r in keep}
        release_claims(tx, t, instance, [int(r[at_id]) for r in rows if int(r[at_id]) not in kept])
    return [replace(queue.record(r), claimed_by=instance, lease_until=until) for r in keep]


def release_claims(tx: StoreTx, table: str, instance: str,
                   ids: Iterable[int] | None = None) -> int:
    """Give up ``instance``'s claims on pending rows (all, or those in ``ids``), so
    another instance may send them at once instead of after the lease."""
    cur, p = tx.cur, tx.param
    sql = (f"UPDATE {table} SET claimed_by = '', lease_until = '' WHERE claimed_by = {p} "
           f"AND state = {p}")
    if ids is None:
        cur.execute(sql, (instance, PENDING))
        return int(cur.rowcount or 0)
    n = 0
    for row_id in ids:
        cur.execute(sql + f" AND id = {p}", (instance, PENDING, row_id))
        n += int(cur.rowcount or 0)
    return n


def requeue(tx: StoreTx, table: str, ids: Iterable[int], *, reset_attempts: bool = False,
            unless_empty: str = "") -> list[int]:
    """Dead or waiting rows -> pending, due now (``reset_attempts``: attempts from 0;
    ``unless_empty``: a bytes column that must not be empty). Returns the ids that
    changed."""
    cur, p = tx.cur, tx.param
    also_set = ", attempts = 0" if reset_attempts else ""
    also_where = f" AND {unless_empty} <> {p}" if unless_empty else ""
    changed = []
    now = stamp()
    for row_id in ids:
        cur.execute(f"UPDATE {table} SET state = {p}, next_attempt_at = {p}, updated_at = {p}"
                    f"{also_set} WHERE id = {p} AND state IN ({p}, {p}){also_where}",
                    (PENDING, now, now, row_id, DEAD, PENDING,
                     *((b"",) if unless_empty else ())))
        if cur.rowcount:
            changed.append(row_id)
    return changed


def purge(tx: StoreTx, table: str, state: str, older_than: datetime, *, noun: str) -> int:
    """Delete rows in ``state`` last changed before ``older_than``; never pending ones
    (``noun`` names them in that error)."""
    if state == PENDING:
        raise ValueError(f"pending {noun} are never purged")
    cur, p = tx.cur, tx.param
    cur.execute(f"DELETE FROM {table} WHERE state = {p} AND updated_at < {p}",
                (state, stamp(older_than)))
    return int(cur.rowcount or 0)


# --- reads (any thread; blocking) ---

def _is_head(queue: Queue[Any]) -> str:
    """SQL for the reads: row ``q`` is the head of its key (the oldest row in its state
    for its destination). claim_heads says the same with NOT EXISTS."""
    t, key = queue.table, queue.key
    return (f"q.id = (SELECT MIN(i.id) FROM {t} i WHERE i.destination = q.destination "
            f"AND i.state = q.state AND i.{key} = q.{key})")


def due_heads(store: Store, queue: Queue[R], destination: str, *, now: datetime, limit: int,
              busy: Collection[str] = ()) -> list[R]:
    """The head of each key of ``destination`` that is due by ``now`` and not under a
    live claim (by ``now``); keys in ``busy`` (being sent now) are skipped. Oldest
    first. A read: what ``claim_heads`` would likely claim, without writing."""
    t, key = queue.table, queue.key
    with reading(store) as (cur, p):
        cur.execute(
            f"SELECT {queue.select('q')} FROM {t} q WHERE q.destination = {p} "
            f"AND q.state = {p} AND {_is_head(queue)} "
            f"AND q.next_attempt_at <= {p} AND (q.claimed_by = '' OR q.lease_until < {p}) "
            f"ORDER BY q.id LIMIT {int(limit + len(busy))}",
            (destination, PENDING, stamp(now), stamp(now)))
        rows = cur.fetchall()
    at = queue.columns.index(key)
    return [queue.record(r) for r in rows if str(r[at]) not in busy][:limit]


def next_due(store: Store, queue: Queue[Any], destination: str) -> str | None:
    """When a head of ``destination`` may next be claimed: the earliest, over the keys'
    heads, of ``next_attempt_at``, or of ``lease_until`` for a head under a claim
    that lasts longer (the claim condition of ``claim_heads``).

    Only heads and their claims count: a row queued behind its key's head, or a head
    being sent (here or by another instance), is not claimable before the head is
    settled, which wakes the sender anyway (or before the claim lapses). Counting
    them, a dispatcher with a free connection found a due time in the past and read
    the store a hundred times a second for as long as the send took.
    """
    with reading(store) as (cur, p):
        cur.execute(
            f"SELECT MIN(CASE WHEN q.claimed_by <> '' AND q.lease_until > q.next_attempt_at "
            f"THEN q.lease_until ELSE q.next_attempt_at END) FROM {queue.table} q "
            f"WHERE q.destination = {p} AND q.state = {p} AND {_is_head(queue)}",
            (destination, PENDING))
        row = cur.fetchone()
        return row[0] if row and row[0] else None


def list_rows(store: Store, queue: Queue[R], *, states: Collection[str] = (),
              equal: Mapping[str, str] | None = None, limit: int = 100) -> list[R]:
    """Rows in ``states`` (any, if empty) whose columns match ``equal`` (those given
    a non-empty value), by id."""
    where: list[str] = []
    params: list[str] = []
    with reading(store) as (cur, p):
        if states:
            where.append(f"state IN ({', '.join([p] * len(states))})")
            params.extend(states)
        for column, value in (equal or {}).items():
            if value:
                where.append(f"{column} = {p}")
                params.append(value)
        sql = f"SELECT {queue.select()} FROM {queue.table}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur.execute(sql + f" ORDER BY id LIMIT {int(limit)}", params)
        return [queue.record(r) for r in cur.fetchall()]


def get_row(store: Store, queue: Queue[R], row_id: int) -> R | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {queue.select()} FROM {queue.table} WHERE id = {p}", (row_id,))
        row = cur.fetchone()
        return None if row is None else queue.record(row)


def count_by_state(store: Store, table: str) -> dict[str, int]:
    with reading(store) as (cur, _):
        cur.execute(f"SELECT state, COUNT(*) FROM {table} GROUP BY state")
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}


def pending_and_dead(cur: Any, p: str, table: str) -> dict[str, tuple[int, int]]:
    """Per destination: (pending, dead) rows, counted from the queue index."""
    out: dict[str, tuple[int, int]] = {}
    cur.execute(f"SELECT destination, state, COUNT(*) FROM {table} WHERE state IN ({p}, {p}) "
                "GROUP BY destination, state", (PENDING, DEAD))
    for destination, state, count in cur.fetchall():
        pending, dead = out.get(str(destination), (0, 0))
        if state == PENDING:
            pending = int(count)
        else:
            dead = int(count)
        out[str(destination)] = (pending, dead)
    return out
