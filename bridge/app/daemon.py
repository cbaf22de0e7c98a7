"""The daemon: open the store, load the mappings, start the service set, wait, stop.

The services and their start order are in services.py (the one module that
constructs them); this module runs them: start in order, stop in reverse,
even when a start fails half-way, then close the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from bridge.app.services import Service, ServiceSet, build_services, load_mappings
from bridge.app.settings import Settings
from bridge.mapping import MappingReloader, MappingSet
from bridge.store import Store, open_store
from bridge.store.private import check_private

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = asyncio.Event()
        self._mappings: MappingReloader | None = None  # hot reload: SIGHUP, file changes
        self.mllp_port = 0
        self.dicom_port = 0
        self.ready = False  # every service started
        self.services: ServiceSet | None = None  # once wired: metrics, readiness, ...

    def current_mappings(self) -> MappingSet:
        assert self._mappings is not None, "mappings are loaded before the listener starts"
        return self._mappings.current()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_ready: Callable[[Daemon], None] | None = None) -> None:
        s = self.settings
        # 0700 when made here; a folder or SQLite file others may read is a WARNING, or
        # with store.strict_permissions a StoreError (bridge/store/private.py).
        db = s.sqlite_path if s.store.backend == "sqlite" else None
        for problem in check_private(s.data_dir, db, strict=s.store.strict_permissions):
            log.warning("patient data readable by other users: %s", problem)
        self._mappings = load_mappings(s)  # before the store: a broken file stops start
        store: Store = await asyncio.to_thread(open_store, s.store, s.data_dir)
        started: list[Service] = []
        try:
            wired = build_services(s, store, self._mappings)
            self.services = wired
            for service in wired.services:
                await service.start()
                started.append(service)
            self.mllp_port = wired.mllp.port
            self.dicom_port = wired.dicom.port
            # Before the ready line: a SIGTERM right after it must stop cleanly too.
            self._install_signals()
            log.info("mappings active: %s", ", ".join(self.current_mappings().names))
            # Tests and bench scripts parse this line's beginning: add only at its end.
            log.info("ready: MLLP on %s:%d, DICOM AE %s on %s:%d, store %s%s", s.mllp.host,
                     self.mllp_port, s.dicom.ae_title, s.dicom.host, self.dicom_port,
                     s.store.backend,
                     f", console on {wired.console.url}" if wired.console is not None else "")
            self.ready = True
            if on_ready is not None:
                on_ready(self)
            await self._stop.wait()
            log.info("stopping")
        finally:
            for service in reversed(started):
                await service.stop()
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
