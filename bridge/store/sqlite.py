"""The embedded default backend: one SQLite file in WAL mode."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bridge.store import cipher, migrations
from bridge.store.base import Cursor, StoreError
from bridge.store.private import create_private_file, make_private_dir
from bridge.store.sql import SqlStore


class SqliteStore(SqlStore):
    dialect = migrations.SQLITE
    param = "?"

    def __init__(self, path: Path, *, key: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.key = key  # a SQLCipher key (bridge/store/cipher.py); None: plain SQLite
        make_private_dir(self.path.parent)  # 0700 when made here (bridge/store/private.py)

    def _connect(self, *, writer: bool) -> sqlite3.Connection:  # or sqlcipher3's
        # Made 0600 here whatever the umask; SQLite gives -wal and -shm the same mode.
        create_private_file(self.path)
        # isolation_level=None would autocommit; the default deferred mode plus
        # explicit commit() gives the transaction boundaries write() promises.
        conn: sqlite3.Connection = cipher.connect(self.path, self.key, timeout=30.0,
                                                  check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
        except Exception as exc:
            conn.close()
            if not cipher.is_db_error(exc):
                raise
            hint = "" if self.key is not None else (
                " (an encrypted store? set store.sqlcipher_key_file or _env)")
            raise StoreError(f"{self.path}: cannot open the store: {exc}{hint}") from None
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
