"""The PostgreSQL backend, for sites that run the bridge next to a database server."""

from __future__ import annotations

from typing import Any

from bridge.store import migrations
from bridge.store.base import StoreError
from bridge.store.sql import SqlStore


class PostgresStore(SqlStore):
    dialect = migrations.POSTGRESQL
    param = "%s"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError:  # an optional extra: say how to get it
            raise StoreError("store.backend is postgresql but psycopg is not installed; "
                             "pip install 'mwl-bridge[postgresql]'") from None
        self._psycopg = psycopg
        self.dsn = dsn

    def _connect(self, *, writer: bool) -> Any:
        try:
            return self._psycopg.connect(self.dsn, autocommit=False)
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
