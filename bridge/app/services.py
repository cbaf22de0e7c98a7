"""The daemon's service set: the one place that constructs its services.

Every long-running part of the daemon is a ``Service`` with an async
``start``/``stop``. ``build_services`` makes them from the settings, an open
store and the loaded mappings, in the order the daemon starts them; the daemon
stops them in reverse:

    1. store-writer     the CommitQueue thread (group commit)
    2. outbox-sender    delivers status messages queued in the outbox
    3. housekeeping     idle rules and purges (bridge/maintenance/)
    4. retention        the message log's purge (bridge/maintenance/)
    5. dicom            the worklist SCP, with the MPPS SCP on its AE
    6. mllp             the HL7 listener (its intake warms the resend cache first)
    7. mapping-reload   hot reload of the mapping files

Starting the writer first and the MLLP listener last, and stopping them in
reverse, means no ACK is ever written for work that was not committed, and
every accepted frame gets its ACK before the writer stops.

``build_intake`` is also what ``mwl-bridge messages replay`` runs, so a replay
goes through the very wiring the daemon uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Protocol

from bridge.app.settings import Settings
from bridge.hl7 import AckControlIds, MllpServer
from bridge.hl7.access import guard_sources
from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.retention import Retention
from bridge.mapping import MappingReloader, MappingSet
from bridge.mpps.service import MppsService
from bridge.orders.ingest import Ingest
from bridge.outbound.destinations import status_messages
from bridge.outbound.sender import OutboxSender
from bridge.store import CommitQueue, Store
from bridge.tls import server_context
from bridge.worklist import WorklistSCP
from bridge.worklist.scp import DicomService


class Service(Protocol):
    """One long-running part of the daemon."""

    @property
    def name(self) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@dataclass
class Hooks:
    """A Service made of two coroutines (most parts have their own start/stop shapes)."""

    name: str
    on_start: Callable[[], Awaitable[None]]
    on_stop: Callable[[], Awaitable[None]]

    async def start(self) -> None:
        await self.on_start()

    async def stop(self) -> None:
        await self.on_stop()


def load_mappings(settings: Settings) -> MappingReloader:
    """The mapping set, loaded now (MappingLoadError: the daemon must not start), and
    kept following the files (the mapping-reload service, SIGHUP)."""
    return MappingReloader(settings.mapping)


def build_intake(settings: Settings, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 ack_ids: AckControlIds) -> Ingest:
    """The MLLP frame handler: decode, map, apply, record, ACK."""
    return Ingest(mappings, commits, settings.mllp, log_phi=settings.logging.log_phi,
                  orders=settings.orders, ack_ids=ack_ids)


@asynccontextmanager
async def replay_intake(settings: Settings, store: Store, mappings: MappingSet
                        ) -> AsyncIterator[Ingest]:
    """The daemon's intake on its own writer, for ``mwl-bridge messages replay``
    (which may run beside the daemon: the store serialises the two writers)."""
    commits = CommitQueue(store, max_batch=1)
    commits.start()
    try:
        yield build_intake(settings, lambda: mappings, commits, AckControlIds())
    finally:
        await asyncio.to_thread(commits.stop)


@dataclass
class MllpService:
    """The HL7 listener; ``port`` is known once started (the config may say 0)."""

    settings: Settings
    intake: Ingest
    ack_ids: AckControlIds
    name: str = "mllp"
    port: int = 0
    _server: MllpServer | None = field(default=None, init=False)

    async def start(self) -> None:
        m = self.settings.mllp
        await self.intake.open()  # the resend cache, before the first frame
        self._server = await MllpServer.start(
            guard_sources(self.intake, m.allow, self.ack_ids), host=m.host, port=m.port,
            max_frame_bytes=m.max_frame_bytes, idle_timeout_s=m.idle_timeout_s,
            ssl=server_context(m.tls, "mllp.tls"),
            ssl_handshake_timeout_s=m.tls.handshake_timeout_s)
        self.port = self._server.port

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.close()
            self._server = None
        await self.intake.close()


@dataclass
class DicomScpService:
    """The worklist SCP (pynetdicom threads) with its other services on the same AE."""

    scp: WorklistSCP
    name: str = "dicom"
    port: int = 0

    async def start(self) -> None:
        self.scp.start()
        self.port = self.scp.port

    async def stop(self) -> None:
        await asyncio.to_thread(self.scp.stop)


@dataclass
class ServiceSet:
    """The daemon's services in start order, and the two whose ports the daemon reports."""

    services: list[Service]
    mllp: MllpService
    dicom: DicomScpService


def _writer(commits: CommitQueue) -> Service:
    async def start() -> None:
        commits.start()

    async def stop() -> None:
        await asyncio.to_thread(commits.stop)  # finishes the jobs already queued

    return Hooks("store-writer", start, stop)


def _task(name: str, start: Callable[[], None], stop: Callable[[], Awaitable[None]]
          ) -> Service:
    async def on_start() -> None:
        start()

    return Hooks(name, on_start, stop)


def build_services(settings: Settings, store: Store, mappings: MappingReloader
                   ) -> ServiceSet:
    """Every service of the daemon, wired, in start order (see the module docstring).

    Raises MappingLoadError for a broken outbound profile or destination, and
    bridge.tls.TlsConfigError for an unreadable TLS file or a bad setting.
    """
    s = settings
    commits = CommitQueue(store, max_batch=s.store.max_batch)
    # One reporter for every source of status changes (bridge.steps.Reporter).
    reporter = status_messages(s.outbound)
    # The whole list: the sender skips disabled ones, and names each by position.
    sender = OutboxSender(store, s.outbound.destinations, submit=commits.submit,
                          poll_interval_s=s.outbound.poll_interval_s)
    housekeeping = Housekeeping(s.housekeeping, commits.submit, messages=reporter,
                                notify=sender.wake)
    retention = Retention(commits, s.orders.messages)
    dicom_services: Sequence[DicomService] = (
        [MppsService(store, s.mpps, messages=reporter, notify=sender.wake)]
        if s.mpps.enabled else [])
    dicom = DicomScpService(WorklistSCP(store, s.dicom, s.worklist, services=dicom_services))
    ack_ids = AckControlIds()  # one MSH-10 source for every ACK this daemon sends
    mllp = MllpService(s, build_intake(s, mappings.current, commits, ack_ids), ack_ids)
    watch: list[asyncio.Task[None]] = []

    async def watch_start() -> None:
        watch.append(asyncio.create_task(mappings.watch(), name="mapping-reload"))

    async def watch_stop() -> None:
        for task in watch:
            task.cancel()
        await asyncio.gather(*watch, return_exceptions=True)
        watch.clear()

    return ServiceSet(
        services=[
            _writer(commits),
            Hooks("outbox-sender", sender.start, sender.stop),
            _task("housekeeping", housekeeping.start, housekeeping.stop),
            _task("retention", retention.start, retention.stop),
            dicom,
            mllp,
            Hooks("mapping-reload", watch_start, watch_stop),
        ],
        mllp=mllp, dicom=dicom)
