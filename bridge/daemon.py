"""The one place that wires the listeners, the SCP, the store and the mappings.

Start order: store (migrated) -> mappings -> writer -> SCP -> MLLP. Stop
order is the reverse, so no ACK is ever written for work that was not
committed, and every accepted frame gets its ACK before the writer stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from bridge.config import Settings
from bridge.hl7 import MllpServer
from bridge.hl7.access import guard_sources
from bridge.mapping import MappingReloader, MappingSet
from bridge.orders.ingest import Ingest
from bridge.outbound.pipeline import StatusPipeline
from bridge.store import CommitQueue, Store, open_store
from bridge.tls import server_context
from bridge.worklist import WorklistSCP

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._mappings: MappingReloader | None = None  # hot reload: SIGHUP, file changes
        self.mllp_port = 0
        self.dicom_port = 0

    def current_mappings(self) -> MappingSet:
        assert self._mappings is not None, "mappings are loaded before the listener starts"
        return self._mappings.current()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._mappings = MappingReloader(s.mapping)
        store: Store = await asyncio.to_thread(open_store, s)
        commits = CommitQueue(store, max_batch=s.store.max_batch)
        # MPPS on the SCP's AE, the outbox sender, housekeeping (docs/mpps-outbound.md).
        pipeline = StatusPipeline.build(s, store, submit=commits.submit)
        commits.start()
        scp = WorklistSCP(store, s.dicom, s.worklist, extra_services=pipeline.dicom_services)
        mllp: MllpServer | None = None
        ingest: Ingest | None = None
        reload_watch: asyncio.Task[None] | None = None
        try:
            await pipeline.start()
            scp.start()
            ingest = Ingest(self.current_mappings, commits, s.mllp, log_phi=s.logging.log_phi,
                            orders=s.orders)
            await ingest.open()  # resend cache from the message log; retention purge
            mllp = await MllpServer.start(
                guard_sources(ingest, s.mllp.allow), host=s.mllp.host, port=s.mllp.port,
                max_frame_bytes=s.mllp.max_frame_bytes, idle_timeout_s=s.mllp.idle_timeout_s,
                ssl=server_context(s.mllp.tls, "mllp.tls"),
                ssl_handshake_timeout_s=s.mllp.tls.handshake_timeout_s)
            self.mllp_port = mllp.port
            self.dicom_port = scp.port
            log.info("mappings active: %s", ", ".join(self.current_mappings().names))
            log.info("ready: MLLP on %s:%d, DICOM AE %s on %s:%d, store %s", s.mllp.host,
                     mllp.port, s.dicom.ae_title, s.dicom.host, scp.port, s.store.backend)
            if on_ready is not None:
                on_ready(self)
            self._install_signals()
            reload_watch = asyncio.create_task(self._mappings.watch())
            await self._stop.wait()
            log.info("stopping")
        finally:
            if reload_watch is not None:
                reload_watch.cancel()
            if mllp is not None:
                await mllp.close()
            if ingest is not None:
                await ingest.close()
            await asyncio.to_thread(scp.stop)
            await pipeline.stop()
            await asyncio.to_thread(commits.stop)
            store.close()
            log.info("stopped")

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_stop)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
        if self._mappings is not None:
            try:
                loop.add_signal_handler(signal.SIGHUP, self._mappings.request)
            except (NotImplementedError, RuntimeError):  # not the main thread
                pass
