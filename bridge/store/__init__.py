"""Persistent worklist items and message log, behind one small interface."""

from __future__ import annotations

from pathlib import Path

from bridge.store.base import (
    InboundMessage,
    StepFilter,
    StepRow,
    Store,
    StoreError,
    StoreTx,
    UpsertOutcome,
)
from bridge.store.commit_queue import CommitQueue, Submit, thread_submit
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
from bridge.store.settings import StoreSettings
from bridge.store.sqlite import SqliteStore

__all__ = [
    "AnyOf", "Column", "CommitQueue", "Exact", "InboundMessage", "ItemPath", "Match", "NoneOf",
    "Range", "SqliteStore", "StepFilter", "StepRow", "Store", "StoreError", "StoreTx", "Submit",
    "UpsertOutcome", "Wildcard", "WorklistQuery", "open_store", "thread_submit",
]


def open_store(settings: StoreSettings, data_dir: Path) -> Store:
    """The configured backend, migrated to the newest schema."""
    if settings.backend == "postgresql":
        from bridge.store.postgresql import PostgresStore

        store: Store = PostgresStore(settings.postgresql_dsn,
                                     password=settings.postgresql_password())
    else:
        store = SqliteStore(settings.sqlite_file(data_dir), key=settings.sqlcipher_key())
    store.migrate()
    return store
