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
from datetime import UTC, datetime

from bridge.store.base import Cursor, Store
from bridge.store.sql import SqlStore

STAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def stamp(when: datetime | None = None) -> str:
    """A UTC timestamp in the store's sortable text form (as ``created_at`` columns)."""
    when = datetime.now(UTC) if when is None else when.astimezone(UTC)
    return when.strftime(STAMP_FORMAT)


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, STAMP_FORMAT).replace(tzinfo=UTC)


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
