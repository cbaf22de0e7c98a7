"""The PostgreSQL backend, for sites that run the bridge next to a database server."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from bridge.store import migrations
from bridge.store.base import StoreError
from bridge.store.sql import SqlStore

log = logging.getLogger(__name__)

# SQLSTATEs that mean "another writer got there first": unique_violation,
# serialization_failure, deadlock_detected (SqlStore.write runs the batch again).
_CONFLICTS = frozenset({"23505", "40001", "40P01"})
# The schema upgrade's lock: one per schema, so that instances on the same
# database wait for each other and tests in their own schemas do not.
_MIGRATION_LOCK = "hashtext('mwl-bridge schema ' || coalesce(current_schema(), ''))"


class PostgresStore(SqlStore):
    dialect = migrations.POSTGRESQL
    param = "%s"

    def __init__(self, dsn: str, *, password: str | None = None) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:  # an optional extra: say how to get it
            raise StoreError("store.backend is postgresql but psycopg is not installed; "
                             "pip install 'mwl-bridge[postgresql]'") from None
        self._psycopg = psycopg
        self.dsn = dsn
        # store.postgresql_password_file: given to libpq beside the DSN, never in it.
        self._auth: dict[str, Any] = {} if password is None else {"password": password}

    def _connect(self, *, writer: bool) -> Any:
        try:
            return self._psycopg.connect(self.dsn, autocommit=False, **self._auth)
        except self._psycopg.Error as exc:
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from None

    def _item_text_sql(self, tags: list[str]) -> str:
        path = ",".join(f"{t},Value,0" for t in tags)
        return f"(item::jsonb #>> '{{{path}}}')"

    def _name_sql(self, key: str) -> str:
        return f"(names_norm::jsonb ->> '{key}')"

    def _wildcard_sql(self, column: str, pattern: str) -> tuple[str, list[str]]:
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        like = escaped.replace("*", "%").replace("?", "_")
        return f"{column} LIKE %s ESCAPE '\\'", [like]

    def _is_conflict(self, exc: BaseException) -> bool:
        seen: BaseException | None = exc
        for _ in range(5):  # the error itself, or what a job wrapped it in
            if seen is None:
                return False
            if getattr(seen, "sqlstate", None) in _CONFLICTS:
                return True
            seen = seen.__cause__ or seen.__context__
        return False

    @contextmanager
    def _migration_lock(self, conn: Any) -> Iterator[None]:
        # A session lock (it outlives each migration's commit); the others block here
        # until the first has migrated, then read the new version and do nothing.
        conn.execute(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
        conn.commit()
        try:
            yield
        finally:
            try:
                conn.rollback()
                conn.execute(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                conn.commit()
            except self._psycopg.Error:  # the session ends with the connection anyway
                pass

    def listen(self, channel: str, on_notify: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_notify(payload)`` from a thread of its own for every NOTIFY on
        ``channel`` (and once after each (re)connect, for what was missed)."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", channel):
            raise ValueError(f"not a channel name: {channel!r}")
        stop = threading.Event()
        psycopg = self._psycopg

        def run() -> None:
            conn: Any = None
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = psycopg.connect(self.dsn, autocommit=True, **self._auth)
                        conn.execute(f"LISTEN {channel}")
                        on_notify("")
                    for note in conn.notifies(timeout=0.5):
                        on_notify(note.payload)
                except psycopg.Error as exc:
                    log.warning("listening for %s failed (%s); polling until it is back",
                                channel, type(exc).__name__)
                    if conn is not None:
                        conn.close()
                        conn = None
                    stop.wait(2.0)
            if conn is not None:
                conn.close()

        thread = threading.Thread(target=run, name=f"listen-{channel}", daemon=True)
        thread.start()

        def close() -> None:
            stop.set()
            thread.join(timeout=5)

        return close
