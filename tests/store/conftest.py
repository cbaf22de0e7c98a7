from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bridge.store import SqliteStore, Store
from bridge.store.postgresql import PostgresStore

PG_BASE = "host=127.0.0.1 port=5432 dbname=test user=postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SqliteStore(tmp_path / "bridge.sqlite3")
        s.migrate()
        yield s
        s.close()
        return
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    s = PostgresStore(f"{PG_BASE} options='-c search_path={schema}'")
    s.migrate()
    yield s
    s.close()
    with psycopg.connect(PG_BASE, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    """A schema of its own in the test database, for several stores (several
    instances of the daemon) on one PostgreSQL database."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_BASE, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    yield f"{PG_BASE} options='-c search_path={schema}'"
    with psycopg.connect(PG_BASE, autocommit=True) as admin:
        admin.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def pg_pair(pg_dsn: str) -> Iterator[tuple[Store, Store]]:
    """Two stores on one PostgreSQL schema: what two instances of the daemon see."""
    a, b = PostgresStore(pg_dsn), PostgresStore(pg_dsn)
    a.migrate()
    b.migrate()
    yield a, b
    a.close()
    b.close()
