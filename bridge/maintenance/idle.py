"""Idle rules: for sites without MPPS, steps nobody touched change status.

Each rule of ``housekeeping.idle_rules`` sets the status of the items of its
stations/modalities whose scheduled start and last change are both older than
``idle_hours`` (e.g. SCHEDULED -> DISCONTINUED after 24 h on CR01), through
``bridge.steps.change_status``: the conflict rule applies, and with
``notify: true`` the change is reported to the outbound destinations
(COMPLETED -> CM, DISCONTINUED -> DC) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from bridge.maintenance.settings import IdleRule
from bridge.steps import Reporter, Source, StepState, change_status, next_status
from bridge.store import mpps_tx
from bridge.store.base import StoreTx
from bridge.store.sqltx import stamp


def expire_job(rule: IdleRule, reporter: Reporter | None, now: datetime,
               ) -> Callable[[StoreTx], tuple[int, int]]:
    """The store job for one idle rule: (items changed, messages queued)."""
    local_now = now.astimezone()
    cutoff = local_now - timedelta(hours=rule.idle_hours)

    # The conflict rule depends only on the current status, so the statuses it would
    # keep (a terminal one, say) are left out of the query: rows that can never change
    # must not fill the batch and starve the ones that can.
    statuses = [s for s in rule.statuses if next_status(s, rule.set_status).changed]

    def job(tx: StoreTx) -> tuple[int, int]:
        if not statuses:
            return 0, 0
        steps = mpps_tx.idle_steps(
            tx, statuses=statuses, stations=rule.stations, modalities=rule.modalities,
            changed_before=stamp(cutoff), starting_before=f"{cutoff:%Y%m%d%H%M%S}")
        changed = queued = 0
        for step in steps:
            update = change_status(tx, StepState(step.id, step.sps_status, step.item),
                                   rule.set_status, source=Source.IDLE_RULE,
                                   reporter=reporter if rule.notify else None, now=local_now,
                                   note=f"idle for {rule.idle_hours:g} h")
            changed += update.decision.changed
            queued += update.queued
        return changed, queued

    return job
