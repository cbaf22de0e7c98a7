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
from bridge.mapping import MappingSet, load_mappings
from bridge.orders import Ingest
from bridge.store import CommitQueue, Store, open_store
from bridge.worklist import WorklistSCP

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._mappings: MappingSet | None = None
        self.mllp_port = 0
        self.dicom_port = 0

    def current_mappings(self) -> MappingSet:
        assert self._mappings is not None, "mappings are loaded before the listener starts"
        return self._mappings

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        self._mappings = load_mappings(s.mapping.paths,
                                       default_station_aet=s.mapping.default_station_aet)
        store: Store = await asyncio.to_thread(open_store, s)
        commits = CommitQueue(store, max_batch=s.store.max_batch)
        commits.start()
        scp = WorklistSCP(store, s.dicom, s.worklist)
        mllp: MllpServer | None = None
        try:
            scp.start()
            ingest = Ingest(self.current_mappings, commits, s.mllp, log_phi=s.logging.log_phi)
            mllp = await MllpServer.start(
                ingest, host=s.mllp.host, port=s.mllp.port,
                max_frame_bytes=s.mllp.max_frame_bytes, idle_timeout_s=s.mllp.idle_timeout_s)
            self.mllp_port = mllp.port
            self.dicom_port = scp.port
            log.info("mappings active: %s", ", ".join(self._mappings.names))
            log.info("ready: MLLP on %s:%d, DICOM AE %s on %s:%d, store %s", s.mllp.host,
                     mllp.port, s.dicom.ae_title, s.dicom.host, scp.port, s.store.backend)
            if on_ready is not None:
                on_ready(self)
            self._install_signals()
            await self._stop.wait()
            log.info("stopping")
        finally:
            if mllp is not None:
                await mllp.close()
            await asyncio.to_thread(scp.stop)
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
