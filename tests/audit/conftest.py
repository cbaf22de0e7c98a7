from __future__ import annotations

from tests.store.conftest import pg_dsn, pg_pair, store  # noqa: F401 - both backends
