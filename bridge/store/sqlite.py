"""The embedded default backend: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.store import migrations
from bridge.store.base import Cursor
from bridge.store.sql import SqlStore


class SqliteStore(SqlStore):
    dialect = migrations.SQLITE
    param = "?"

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:
        # isolation_level=None would autocommit; the default deferred mode plus
        # explicit commit() gives the transaction boundaries write() promises.
        conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: the WAL is fsynced at every commit, so an ACK sent after commit
        # survives power loss, not only a crash of this process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        # GLOB and = stay case-sensitive; LIKE is not used (ASCII-only folding).
        return conn

    def _begin(self, cur: Cursor) -> None:
        # Without it the first SAVEPOINT would open the transaction and its
        # RELEASE would commit: one fsync per message instead of per batch.
        cur.execute("BEGIN IMMEDIATE")

    def _item_text_sql(self, tags: list[str]) -> str:
        path = "$" + "".join(f'."{t}".Value[0]' for t in tags)
        return f"json_extract(item, '{path}')"

    def _name_sql(self, key: str) -> str:
        return "json_extract(names_norm, '$.\"" + key + "\"')"

    def _wildcard_sql(self, column: str, pattern: str) -> tuple[str, list[str]]:
        # DICOM's * and ? are GLOB's own; only '[' needs escaping for GLOB.
        escaped = pattern.replace("[", "[[]")
        return f"{column} GLOB ?", [escaped]
