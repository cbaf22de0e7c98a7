from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from bridge.outbound.sender import OutboxSender
from bridge.outbound.settings import OutboundDestination
from bridge.store import SqliteStore, Store, outbox_tx
from bridge.store.outbox_tx import NewMessage
from tests.store.conftest import store  # noqa: F401 - both backends, for the outbox SQL

from .mllp_receiver import MllpReceiver, Received

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


def destination(port: int, **kw: object) -> OutboundDestination:
    base: dict[str, object] = dict(name="ris", port=port, ack_timeout_s=0.5,
                                   connect_timeout_s=0.5, backoff_initial_s=0.05,
                                   backoff_max_s=0.2, max_connections=2)
    base.update(kw)
    return OutboundDestination.model_validate(base)


def rows(target: Store) -> dict[str, outbox_tx.OutboxMessage]:
    return {m.control_id: m for m in outbox_tx.list_messages(target, limit=1000)}


def states(target: Store) -> dict[str, str]:
    return {m.control_id: m.state for m in outbox_tx.list_messages(target, limit=1000)}


def pending(target: Store) -> int:
    return outbox_tx.count_by_state(target).get("pending", 0)


def assert_in_order(received: list[Received], order: str, events: list[str]) -> None:
    """Every arrival of an earlier event precedes every arrival of a later one."""
    ids = [f"{order}-{e}" for e in events]
    positions = [[i for i, m in enumerate(received) if m.control_id == cid] for cid in ids]
    for cid, pos in zip(ids, positions, strict=True):
        assert pos, f"{cid} never arrived"
    for earlier, later in itertools.pairwise(positions):
        assert max(earlier) < min(later), [m.control_id for m in received]


@asynccontextmanager
async def running(sender: OutboxSender, *receivers: MllpReceiver) -> AsyncIterator[OutboxSender]:
    """The sender, started; on the way out it stops, then the receivers given stop too."""
    await sender.start()
    try:
        yield sender
    finally:
        await sender.stop()
        for r in receivers:
            r.stop()
