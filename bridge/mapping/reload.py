"""Hot reload: the daemon's mapping set follows the files, and a broken file changes nothing.

The daemon asks ``current()`` for each message. A reload builds a complete new
set off the event loop and swaps it in with one assignment, so a message is
mapped wholly by the old set or wholly by the new one, and no connection or
association notices. A set that fails to load is logged, problem by problem
with file, line and key, and the old set stays active.

Triggers: ``request()`` (the daemon calls it on SIGHUP), and a change of any
file the set was built from (mapping files, the listing of mapping folders,
lookup tables, hook files), checked every ``reload_poll_s`` seconds by
comparing modification times and sizes: portable, and cheap for a few files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from bridge.mapping.engine import MappingSet
from bridge.mapping.errors import MappingLoadError
from bridge.mapping.loader import MAPPING_SUFFIXES, load_configured
from bridge.mapping.settings import MappingSettings

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]


class MappingReloader:
    """Holds the active MappingSet and replaces it when the files change."""

    def __init__(self, settings: MappingSettings,
                 loader: Callable[[MappingSettings], MappingSet] = load_configured) -> None:
        """Load the set once; MappingLoadError propagates (the daemon must not start)."""
        self._settings = settings
        self._loader = loader
        self._current = loader(settings)
        self._fingerprint = self._scan(self._current)
        # What the active set was built from, and its number (0 for the first load):
        # worker processes (bridge.orders.workers) load the same files and compare.
        self.loaded: Fingerprint = self._fingerprint
        self.version = 0
        self._stamp = (self.version, self.loaded)
        self._requested: asyncio.Event | None = None
        self.reloads = 0  # successful reloads, for tests and operators' curiosity
        self.rejected = 0  # reloads refused because a file was broken

    @property
    def settings(self) -> MappingSettings:
        return self._settings

    def current(self) -> MappingSet:
        return self._current

    def stamp(self) -> tuple[int, Fingerprint]:
        """The active set's version and what it was built from, read together."""
        return self._stamp

    def reload(self, reason: str = "requested") -> bool:
        """Load the files now; True when the new set is active. Thread-safe for one caller."""
        fingerprint = self._scan(None)
        try:
            new = self._loader(self._settings)
        except MappingLoadError as exc:
            # Remember the broken state: it is reported once, not on every poll.
            self._fingerprint = fingerprint
            self.rejected += 1
            for err in exc.errors:
                log.error("mapping reload rejected: %s", err)
            log.error("mapping reload (%s) rejected with %d problem(s); still active: %s",
                      reason, len(exc.errors), ", ".join(self._current.names))
            return False
        except Exception:  # a loader bug must not take the daemon down with it
            self._fingerprint = fingerprint
            self.rejected += 1
            log.exception("mapping reload (%s) failed; still active: %s", reason,
                          ", ".join(self._current.names))
            return False
        self._current = new
        self._fingerprint = self.loaded = self._scan(new)
        self.version += 1
        self._stamp = (self.version, self.loaded)
        self.reloads += 1
        log.info("mappings reloaded (%s); active: %s", reason, ", ".join(new.names))
        return True

    def request(self) -> None:
        """Ask the watch task to reload (from a signal handler on the event loop)."""
        if self._requested is not None:
            self._requested.set()

    def changed(self) -> bool:
        return self._scan(None) != self._fingerprint

    async def watch(self) -> None:
        """Reload on request() and, when reload_poll_s > 0, when a file changes; forever."""
        self._requested = asyncio.Event()
        poll = self._settings.reload_poll_s or None
        while True:
            try:
                await asyncio.wait_for(self._requested.wait(), timeout=poll)
            except TimeoutError:
                pass
            if self._requested.is_set():
                self._requested.clear()
                await asyncio.to_thread(self.reload, "SIGHUP")
            elif await asyncio.to_thread(self.changed):
                await asyncio.to_thread(self.reload, "files changed")

    # -- what the set was built from

    def _scan(self, mappings: MappingSet | None) -> Fingerprint:
        return scan_files(self._settings, mappings if mappings is not None else self._current)


def scan_files(settings: MappingSettings, mappings: MappingSet | None) -> Fingerprint:
    """Modification times and sizes of what a set is built from: the configured paths,
    the mapping files in their folders and, given a set, the files it read."""
    paths: set[Path] = set()
    for path in settings.paths:
        paths.add(path)
        if path.is_dir():
            paths.update(p for p in path.iterdir() if p.suffix.lower() in MAPPING_SUFFIXES)
    for mapping in mappings.mappings if mappings is not None else ():
        paths.add(mapping.path)
        paths.update(mapping.sources)
    out = []
    for path in sorted(paths):
        try:
            st = os.stat(path)
        except OSError:
            out.append((str(path), -1, -1))
            continue
        # A folder's mtime changes when a file is added, removed or renamed in it.
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)
