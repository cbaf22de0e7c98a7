"""Message retention: accepted messages and dead letters are purged after their days.

Purging runs at start and then every ``orders.messages.purge_interval_s``, in
small batches through the store's writer, so a large backlog never holds the
writer long enough to delay an ACK noticeably. Worklist items are not purged
here; only their link to the message that last changed them is cleared.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

from bridge.maintenance.housekeeping import Leader, guarded
from bridge.store import CommitQueue, Store, StoreTx
from bridge.store.orders_tx import ACCEPTED, REJECTED, OrdersTx

log = logging.getLogger(__name__)


class MessageLogSettings(Protocol):
    """What retention reads of ``orders.messages`` (bridge.orders.settings), where the
    message log is configured; a protocol so maintenance needs nothing of orders."""

    @property
    def accepted_days(self) -> float: ...

    @property
    def rejected_days(self) -> float: ...

    @property
    def purge_interval_s(self) -> float: ...

BATCH = 500


def _cutoffs(settings: MessageLogSettings, now: datetime
             ) -> list[tuple[tuple[str, ...], str, str]]:
    out: list[tuple[tuple[str, ...], str, str]] = []
    for codes, days, what in ((ACCEPTED, settings.accepted_days, "accepted"),
                              (REJECTED, settings.rejected_days, "rejected")):
        if days > 0:
            out.append((codes, (now - timedelta(days=days)).isoformat(), what))
    return out


def _purge_job(codes: tuple[str, ...], before: str) -> Callable[[StoreTx], int]:
    def job(tx: StoreTx) -> int:
        return OrdersTx(tx).purge_messages(codes, before, BATCH)

    return job


def purge_now(store: Store, settings: MessageLogSettings, now: datetime | None = None
              ) -> dict[str, int]:
    """Purge synchronously (``mwl-bridge messages purge``); counts by kind."""
    counts: dict[str, int] = {}
    for codes, before, what in _cutoffs(settings, now or datetime.now(UTC)):
        total = 0
        while True:
            n = store.write_one(_purge_job(codes, before))
            total += n
            if n < BATCH:
                break
        counts[what] = total
    return counts


class Retention:
    """The periodic purge inside the daemon (on the maintenance leader only, when
    ``leader`` is given: several instances on one database)."""

    def __init__(self, commits: CommitQueue, settings: MessageLogSettings, *,
                 leader: Leader | None = None) -> None:
        self._commits = commits
        self._settings = settings
        self._leader = leader
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._settings.accepted_days > 0 or self._settings.rejected_days > 0:
            self._task = asyncio.create_task(self._run(), name="message-retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def purge_once(self, now: datetime | None = None) -> dict[str, int]:
        counts: dict[str, int] = {}
        for codes, before, what in _cutoffs(self._settings, now or datetime.now(UTC)):
            total = 0
            while True:
                n = await self._commits.submit(guarded(self._leader,
                                                       _purge_job(codes, before), 0))
                total += n
                if n < BATCH:
                    break
                await asyncio.sleep(0)  # let waiting messages into the next batch
            counts[what] = total
        return counts

    async def _run(self) -> None:
        while True:
            try:
                if self._leader is not None and not self._leader.is_leader():
                    counts = {}
                else:
                    counts = await self.purge_once()
                if any(counts.values()):
                    log.info("message retention: purged %s",
                             ", ".join(f"{n} {what}" for what, n in counts.items()))
            except Exception as exc:  # noqa: BLE001 - retry at the next interval
                log.error("message retention failed: %s", exc)
            await asyncio.sleep(self._settings.purge_interval_s)
