"""The housekeeping loop: every ``housekeeping.interval_s`` (and once at start),
each idle rule (idle.py), then the purge (purge.py).

Threads: runs as a task on the daemon's asyncio loop; its store work goes
through ``submit`` (the daemon's CommitQueue), one transaction per rule and
one for the purge.

With several instances, only the maintenance leader runs a round (``leader``,
bridge/maintenance/leader.py), and each job checks in its own transaction that
the role is still this instance's; a new leader runs a round at once (``kick``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from bridge.maintenance.idle import expire_job
from bridge.maintenance.purge import PurgeCounts, purge_job
from bridge.maintenance.settings import HousekeepingSettings
from bridge.periodic import Periodic
from bridge.steps import Reporter
from bridge.store import Submit
from bridge.store.base import StoreTx

log = logging.getLogger(__name__)
T = TypeVar("T")


class Leader(Protocol):
    """Whether this instance runs maintenance (bridge.maintenance.leader.Leadership)."""

    def is_leader(self) -> bool: ...

    def holds(self, tx: StoreTx) -> bool:
        """Inside a job's transaction: the role is still this instance's."""


def guarded(leader: Leader | None, job: Callable[[StoreTx], T], idle: T
            ) -> Callable[[StoreTx], T]:
    """``job``, run only while ``leader`` holds the role in the job's transaction."""
    if leader is None:
        return job

    def run(tx: StoreTx) -> T:
        return job(tx) if leader.holds(tx) else idle

    return run


def _failed(exc: Exception) -> None:
    log.error("housekeeping failed: %s", type(exc).__name__)  # tried again next interval


class Housekeeping:
    def __init__(self, settings: HousekeepingSettings, submit: Submit, *,
                 messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None,
                 leader: Leader | None = None) -> None:
        self._settings = settings
        self._submit = submit
        self._messages = messages
        self._notify = notify or (lambda: None)
        self._leader = leader
        self._periodic = Periodic("housekeeping", settings.interval_s, self.run_once,
                                  on_error=_failed,
                                  is_leader=None if leader is None else leader.is_leader)

    def start(self) -> None:
        if self._settings.enabled:
            self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def kick(self) -> None:
        """Run a round now (this instance just became the maintenance leader)."""
        self._periodic.kick()

    async def run_once(self, now: datetime | None = None) -> tuple[int, PurgeCounts]:
        """One round: every idle rule, then the purge. Returns (items changed, purged)."""
        now = now or datetime.now(UTC)
        changed = queued = 0
        for rule in self._settings.idle_rules:
            n, m = await self._submit(guarded(self._leader,
                                              expire_job(rule, self._messages, now), (0, 0)))
            changed += n
            queued += m
        if changed:
            log.info("housekeeping: %d idle worklist item(s) changed status, %d status "
                     "message(s) queued", changed, queued)
        if queued:
            self._notify()
        counts = await self._submit(guarded(self._leader, purge_job(self._settings, now),
                                            PurgeCounts()))
        if counts != PurgeCounts():
            log.info("housekeeping purged %d sent and %d dead outbox message(s), %d MPPS, "
                     "%d worklist item(s), %d sent and %d dead MPPS-forward row(s)",
                     counts.sent, counts.dead, counts.mpps, counts.steps, counts.forward_sent,
                     counts.forward_dead)
        return changed, counts
