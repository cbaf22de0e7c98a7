"""Purges: delivered outbox messages, dead letters, final MPPS instances and
(when configured) worklist items in a terminal status, each after its own
number of days. Forwarded and dead MPPS-forward rows go with the outbox's sent
and dead messages (same settings). Pending rows of either queue are never purged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bridge.maintenance.settings import HousekeepingSettings
from bridge.steps import TERMINAL
from bridge.store import mpps_forward_tx, mpps_tx, outbox_tx
from bridge.store.base import StoreTx
from bridge.store.sqltx import stamp


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    sent: int = 0
    dead: int = 0
    mpps: int = 0
    steps: int = 0
    forward_sent: int = 0  # MPPS-forward rows
    forward_dead: int = 0


def purge_job(settings: HousekeepingSettings, now: datetime
              ) -> Callable[[StoreTx], PurgeCounts]:
    def before(days: float) -> datetime:
        return now - timedelta(days=days)

    def job(tx: StoreTx) -> PurgeCounts:
        s = settings
        forward = mpps_forward_tx.ForwardState
        return PurgeCounts(
            sent=outbox_tx.purge(tx, outbox_tx.OutboxState.SENT, before(s.purge_sent_days))
            if s.purge_sent_days else 0,
            dead=outbox_tx.purge(tx, outbox_tx.OutboxState.DEAD, before(s.purge_dead_days))
            if s.purge_dead_days else 0,
            mpps=mpps_tx.purge_mpps(tx, changed_before=stamp(before(s.purge_mpps_days)))
            if s.purge_mpps_days else 0,
            steps=mpps_tx.purge_steps(tx, statuses=TERMINAL,
                                      changed_before=stamp(before(s.purge_steps_days)))
            if s.purge_steps_days else 0,
            forward_sent=mpps_forward_tx.purge(tx, forward.SENT, before(s.purge_sent_days))
            if s.purge_sent_days else 0,
            forward_dead=mpps_forward_tx.purge(tx, forward.DEAD, before(s.purge_dead_days))
            if s.purge_dead_days else 0,
        )

    return job
