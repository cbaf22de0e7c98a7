"""The housekeeping loop: every ``housekeeping.interval_s`` (and once at start),
each idle rule (idle.py), then the purge (purge.py).

Threads: runs as a task on the daemon's asyncio loop; its store work goes
through ``submit`` (the daemon's CommitQueue), one transaction per rule and
one for the purge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bridge.maintenance.idle import expire_job
from bridge.maintenance.purge import PurgeCounts, purge_job
from bridge.maintenance.settings import HousekeepingSettings
from bridge.steps import Reporter
from bridge.store import Submit

log = logging.getLogger(__name__)


class Housekeeping:
    def __init__(self, settings: HousekeepingSettings, submit: Submit, *,
                 messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._submit = submit
        self._messages = messages
        self._notify = notify or (lambda: None)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._settings.enabled:
            self._task = asyncio.create_task(self._run(), name="housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:  # noqa: BLE001 - try again next interval
                log.error("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(self._settings.interval_s)

    async def run_once(self, now: datetime | None = None) -> tuple[int, PurgeCounts]:
        """One round: every idle rule, then the purge. Returns (items changed, purged)."""
        now = now or datetime.now(UTC)
        changed = queued = 0
        for rule in self._settings.idle_rules:
            n, m = await self._submit(expire_job(rule, self._messages, now))
            changed += n
            queued += m
        if changed:
            log.info("housekeeping: %d idle worklist item(s) changed status, %d status "
                     "message(s) queued", changed, queued)
        if queued:
            self._notify()
        counts = await self._submit(purge_job(self._settings, now))
        if any((counts.sent, counts.dead, counts.mpps, counts.steps)):
            log.info("housekeeping purged %d sent and %d dead outbox message(s), %d MPPS, "
                     "%d worklist item(s)", counts.sent, counts.dead, counts.mpps, counts.steps)
        return changed, counts
