"""Housekeeping for sites without MPPS, and for old rows.

Every ``housekeeping.interval_s`` (and once at start):

1. Idle items: each rule of ``housekeeping.idle_rules`` sets the status of
   the items of its stations/modalities whose scheduled start and last change
   are both older than ``idle_hours`` (e.g. SCHEDULED -> DISCONTINUED after 24 h
   on CR01). With ``notify: true`` the change is also reported to the outbound
   destinations (COMPLETED -> CM, DISCONTINUED -> DC), in the same transaction.
2. Purge: delivered outbox messages, dead letters, final MPPS instances and
   (when configured) worklist items in a terminal status, each after its own
   number of days. Pending outbox messages are never purged.

Threads: runs as a task on the daemon's asyncio loop; its store work goes
through ``submit`` (the daemon's CommitQueue), one transaction per rule and
one for the purge.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydicom import Dataset

from bridge.mpps.settings import HousekeepingSettings, IdleRule
from bridge.outbound.events import StatusChange, StatusMessages, order_key
from bridge.outbound.sender import Submit
from bridge.store import mpps_tx, outbox_tx
from bridge.store.base import StoreTx
from bridge.store.sqltx import stamp

log = logging.getLogger(__name__)

_ORC5 = {"COMPLETED": "CM", "DISCONTINUED": "DC"}


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    sent: int = 0
    dead: int = 0
    mpps: int = 0
    steps: int = 0


def expire_job(rule: IdleRule, messages: StatusMessages | None, now: datetime,
               ) -> Callable[[StoreTx], tuple[int, int]]:
    """The store job for one idle rule: (items changed, messages queued)."""
    local_now = now.astimezone()
    cutoff = local_now - timedelta(hours=rule.idle_hours)

    def job(tx: StoreTx) -> tuple[int, int]:
        steps = mpps_tx.idle_steps(
            tx, statuses=rule.statuses, stations=rule.stations, modalities=rule.modalities,
            changed_before=stamp(cutoff), starting_before=f"{cutoff:%Y%m%d%H%M%S}")
        changes = []
        for step in steps:
            updated = mpps_tx.set_step_status(tx, step, rule.set_status)
            if rule.notify and messages is not None:
                changes.append(StatusChange(
                    order=updated.item, mpps=Dataset(), status=_ORC5[rule.set_status],
                    sps_status=rule.set_status, scheduled=True,
                    order_key=order_key(updated.item, f"step:{step.id}"), step_id=step.id))
        rows = [r for c in changes for r in messages.for_change(c, now=local_now)] \
            if messages is not None else []
        outbox_tx.enqueue(tx, rows)
        return len(steps), len(rows)

    return job


def purge_job(settings: HousekeepingSettings, now: datetime
              ) -> Callable[[StoreTx], PurgeCounts]:
    def before(days: float) -> datetime:
        return now - timedelta(days=days)

    def job(tx: StoreTx) -> PurgeCounts:
        s = settings
        return PurgeCounts(
            sent=outbox_tx.purge(tx, outbox_tx.OutboxState.SENT, before(s.purge_sent_days))
            if s.purge_sent_days else 0,
            dead=outbox_tx.purge(tx, outbox_tx.OutboxState.DEAD, before(s.purge_dead_days))
            if s.purge_dead_days else 0,
            mpps=mpps_tx.purge_mpps(tx, changed_before=stamp(before(s.purge_mpps_days)))
            if s.purge_mpps_days else 0,
            steps=mpps_tx.purge_steps(tx, changed_before=stamp(before(s.purge_steps_days)))
            if s.purge_steps_days else 0,
        )

    return job


class Housekeeping:
    def __init__(self, settings: HousekeepingSettings, submit: Submit, *,
                 messages: StatusMessages | None = None,
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
