"""Persistent worklist items and message log, behind one small interface."""

from __future__ import annotations

from bridge.config import Settings
from bridge.store.base import (
    InboundMessage,
    StepRow,
    Store,
    StoreError,
    StoreTx,
    UpsertOutcome,
)
from bridge.store.commit_queue import CommitQueue
from bridge.store.query import (
    AnyOf,
    Column,
    Exact,
    ItemPath,
    Match,
    NoneOf,
    Range,
    Wildcard,
    WorklistQuery,
)
from bridge.store.sqlite import SqliteStore

__all__ = [
    "AnyOf", "Column", "CommitQueue", "Exact", "InboundMessage", "ItemPath", "Match", "NoneOf",
    "Range", "SqliteStore", "StepRow", "Store", "StoreError", "StoreTx", "UpsertOutcome",
    "Wildcard", "WorklistQuery", "open_store",
]


def open_store(settings: Settings) -> Store:
    """The configured backend, migrated to the newest schema."""
    if settings.store.backend == "postgresql":
        from bridge.store.postgresql import PostgresStore

        store: Store = PostgresStore(settings.store.postgresql_dsn)
    else:
        store = SqliteStore(settings.sqlite_path)
    store.migrate()
    return store
