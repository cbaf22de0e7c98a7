"""The order side in process: a real store (SQLite and PostgreSQL), the real Ingest,
behind a real MLLP listener on a free port, driven by real MLLP clients."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.hl7 import MllpClient, MllpServer, Segment, parse_message
from bridge.hl7.mllp import Frame, FrameDecoder, OversizeFrame
from bridge.hl7.settings import MllpSettings
from bridge.maintenance.retention import Retention
from bridge.mapping import MappingSet, load_mappings
from bridge.orders.ingest import Ingest
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, StepRow, Store
from bridge.store.orders_tx import LoggedMessage, OrdersTx, PatientRecord
from tests.store.conftest import store  # noqa: F401 - both backends

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "hl7"


@functools.cache
def shipped_mappings() -> MappingSet:
    return load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def renamed(name: str, control_id: str) -> bytes:
    """A fixture under another MSH-10: a new message with the same content."""
    first, sep, rest = fixture(name).partition(b"\r")
    fields = first.split(b"|")
    fields[9] = control_id.encode()
    return b"|".join(fields) + sep + rest


@dataclass(frozen=True)
class Ack:
    raw: bytes
    code: str
    control_id: str
    err: Segment | None

    @property
    def location(self) -> str:
        return self.err.raw(2) if self.err is not None else ""

    @property
    def error_code(self) -> int:
        return int(self.err.value(3, 1)) if self.err is not None else 0

    @property
    def text(self) -> str:
        return self.err.value(8) if self.err is not None else ""

    def __repr__(self) -> str:
        return f"Ack({self.code}, {self.error_code}, {self.location!r}, {self.text!r})"


async def read_acks(reader: asyncio.StreamReader, count: int, wait_s: float = 30.0
                    ) -> list[Ack]:
    """The next ``count`` ACK frames read from a raw connection (pipelined sends)."""
    decoder = FrameDecoder(1 << 20)
    frames: list[Frame | OversizeFrame] = []
    while len(frames) < count:
        data = await asyncio.wait_for(reader.read(65536), wait_s)
        assert data, "connection closed early"
        frames += decoder.feed(data)
    assert all(isinstance(f, Frame) for f in frames), frames
    return [read_ack(f.payload) for f in frames if isinstance(f, Frame)]


def read_ack(raw: bytes) -> Ack:
    msg = parse_message(raw.decode("latin-1"))
    msa = msg.first("MSA")
    assert msa is not None
    return Ack(raw, msa.value(1), msa.value(2), msg.first("ERR"))


async def ack_of(client: MllpClient, payload: bytes, wait_s: float = 30.0) -> Ack:
    """Send one message on ``client`` and read its ACK."""
    return read_ack(await client.send(payload, timeout=wait_s))


class OrderSide:
    """What Bridge and test_workers.py's Rig share: the store, the MLLP listener and
    the clients opened to it (closed by the fixture that made them)."""

    store: Store
    server: MllpServer
    clients: list[MllpClient]

    async def client(self) -> MllpClient:
        c = await MllpClient.connect("127.0.0.1", self.server.port)
        self.clients.append(c)
        return c

    def read(self, fn: Callable[[OrdersTx], Any]) -> Any:
        return self.store.write_one(lambda tx: fn(OrdersTx(tx)))


@dataclass
class Bridge(OrderSide):
    store: Store
    commits: CommitQueue
    ingest: Ingest
    server: MllpServer
    retention: Retention
    clients: list[MllpClient] = field(default_factory=list)

    async def send(self, message: str | bytes, client: MllpClient | None = None) -> Ack:
        """``message`` (a fixture's name, or bytes) on ``client``, else the first one."""
        raw = fixture(message) if isinstance(message, str) else message
        c = client or (self.clients[0] if self.clients else await self.client())
        return await ack_of(c, raw)

    def steps(self) -> list[StepRow]:
        return self.store.list_steps(limit=1000)

    def by_sps(self) -> dict[str, StepRow]:
        return {str(r.item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID): r
                for r in self.steps()}

    def messages(self, **kw: Any) -> list[LoggedMessage]:
        return self.read(lambda o: o.list_messages(limit=1000, **kw))

    def patient(self, patient_id: str, issuer: str = "HOSP") -> PatientRecord | None:
        return self.read(lambda o: o.patient(patient_id, issuer))

    def state(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row a message may change, but the message log: the worklist (its items,
        stations and history), the patients and the outbox. A rejected message must
        leave it as it was."""
        def snapshot(o: OrdersTx) -> dict[str, list[tuple[Any, ...]]]:
            rows = {}
            for table in STATE_TABLES:
                o.tx.cur.execute(f"SELECT * FROM {table}")
                rows[table] = sorted((tuple(r) for r in o.tx.cur.fetchall()), key=repr)
            return rows
        return self.read(snapshot)


STATE_TABLES = ("procedure_step", "procedure_step_station", "step_history", "patient",
                "outbox")


BridgeFactory = Callable[..., Any]


@pytest.fixture
async def make_bridge(store: Store) -> AsyncIterator[BridgeFactory]:  # noqa: F811
    """Start the order side on ``store``; keyword arguments override ``orders`` settings."""
    started: list[Bridge] = []

    async def make(mappings: MappingSet | None = None, mllp: MllpSettings | None = None,
                   **orders: Any) -> Bridge:
        settings = OrdersSettings.model_validate(orders)
        commits = CommitQueue(store)
        commits.start()
        mapping_set = mappings or shipped_mappings()
        # The order tests read ERR-2/3/8 whatever the fixture's version, so every
        # sender gets both generations of ERR here; the ACK per version (the default)
        # is tested in test_ack_strict_peers.py with MllpSettings().
        mllp = mllp if mllp is not None else MllpSettings(ack_err_both=["*"])
        ingest = Ingest(lambda: mapping_set, commits, mllp, orders=settings)
        await ingest.open()
        # The daemon runs message retention as its own service (bridge/app/services.py).
        retention = Retention(commits, settings.messages)
        retention.start()
        server = await MllpServer.start(ingest, host="127.0.0.1", port=0,
                                        max_frame_bytes=1 << 20, idle_timeout_s=60)
        b = Bridge(store, commits, ingest, server, retention)
        started.append(b)
        return b

    yield make
    for b in started:
        for c in b.clients:
            await c.close()
        await b.server.close()
        await b.ingest.close()
        await b.retention.stop()
        b.commits.stop()


@pytest.fixture
async def bridge(make_bridge: BridgeFactory) -> Bridge:
    return await make_bridge()
