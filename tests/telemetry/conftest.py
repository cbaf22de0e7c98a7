"""Fixtures shared with other test folders."""

from tests.store.conftest import store  # noqa: F401 - both backends, for the outbox reader
