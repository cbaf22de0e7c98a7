"""Small helpers shared by the store modules that add tables beside the worklist
(mpps_tx.py, outbox_tx.py): timestamps, and raw SQL access outside a write
transaction (inside one, a job has ``tx.cur`` and ``tx.param``: base.StoreTx).

Threading: the same rule as base.py. Functions taking ``tx`` run inside
``Store.write`` jobs (the single writer); functions taking ``store`` are
reads on the pooled reader connections and are safe from any thread, but
block: call them from a worker thread, never on the asyncio loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from bridge.store.base import Cursor, Store, StoreTx
from bridge.store.sql import SqlStore

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(when: datetime | None = None) -> str:
    """A UTC timestamp in the store's sortable text form (as ``created_at`` columns)."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)


_PG_STAMP = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'
POSTGRESQL = "postgresql"


def clock(tx: StoreTx, *ahead_s: float) -> list[str]:
    """Now, and now plus each of ``ahead_s`` seconds, as store timestamps.

    On PostgreSQL from the database server's clock, so that leases that several
    hosts compare (outbox claims, the maintenance leader) never depend on how well
    their clocks agree; on SQLite (one host) from this process's.
    """
    if tx.dialect != POSTGRESQL:
        now = datetime.now(UTC)
        return [stamp(now), *(stamp(now + timedelta(seconds=s)) for s in ahead_s)]
    cols = ", ".join([f"to_char(t, '{_PG_STAMP}')"] + [
        f"to_char(t + make_interval(secs => {tx.param}), '{_PG_STAMP}')" for _ in ahead_s])
    tx.cur.execute(f"SELECT {cols} FROM (SELECT clock_timestamp() AT TIME ZONE 'UTC' AS t) c",
                   tuple(float(s) for s in ahead_s))
    return [str(v) for v in tx.cur.fetchone()]


def skip_locked(tx: StoreTx) -> str:
    """`` FOR UPDATE SKIP LOCKED`` where rows can be locked (PostgreSQL); SQLite has
    one writer at a time, whose transaction (BEGIN IMMEDIATE) excludes the others."""
    return " FOR UPDATE SKIP LOCKED" if tx.dialect == POSTGRESQL else ""


def for_update(tx: StoreTx) -> str:
    """`` FOR UPDATE`` on PostgreSQL: a read that a decision and a write follow."""
    return " FOR UPDATE" if tx.dialect == POSTGRESQL else ""


def notify(tx: StoreTx, channel: str, payload: str = "") -> None:
    """NOTIFY ``channel`` when the transaction commits (PostgreSQL: the listeners of
    every instance wake at once, Store.listen); nothing elsewhere."""
    if tx.dialect == POSTGRESQL:
        tx.cur.execute(f"SELECT pg_notify({tx.param}, {tx.param})", (channel, payload))


def sql_store(store: Store) -> SqlStore:
    if not isinstance(store, SqlStore):
        raise TypeError("this store operation needs an SQL store (SQLite or PostgreSQL)")
    return store


@contextmanager
def reading(store: Store) -> Iterator[tuple[Cursor, str]]:
    """A cursor on a pooled reader connection, and the parameter mark."""
    s = sql_store(store)
    with s._reader() as conn:
        yield conn.cursor(), s.param
