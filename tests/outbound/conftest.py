from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.store import SqliteStore, Store, outbox_tx
from bridge.store.outbox_tx import NewMessage
from tests.store.conftest import store  # noqa: F401 - both backends, for the outbox SQL

from .mllp_receiver import MllpReceiver

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "mappings" / "outbound"


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "bridge.sqlite3")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def receiver() -> Iterator[MllpReceiver]:
    r = MllpReceiver()
    r.start()
    yield r
    r.stop()


def hl7(control_id: str, order: str, event: str) -> bytes:
    """A small status message; the receiver only needs a readable MSH."""
    return (f"MSH|^~\\&|MWLBRIDGE|RAD|RIS|HOSP|20261128093000||ORM^O01|{control_id}|P|2.3.1\r"
            f"ORC|SC|{order}|||{event}\r").encode()


def queue(target: Store, destination: str, items: list[tuple[str, str]]) -> list[int]:
    """Queue (order, event) pairs in this order; control IDs are ORDER-EVENT."""
    rows = [NewMessage(destination=destination, order_key=f"order:{o}", event=e,
                       message_type="ORM^O01", control_id=f"{o}-{e}",
                       payload=hl7(f"{o}-{e}", o, e)) for o, e in items]
    (ids,) = target.write([lambda tx: outbox_tx.enqueue(tx, rows)])
    assert not isinstance(ids, BaseException), ids
    return ids
