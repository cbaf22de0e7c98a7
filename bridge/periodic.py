"""A round of work repeated on the daemon's asyncio loop: once at start, then every
``interval_s``, or at once when kicked (the instance just became the maintenance
leader). With ``is_leader``, a round runs only while it says this instance leads.

A round that fails is handed to ``on_error`` (the owner logs it its own way) and
the next one runs as planned: the daemon keeps running. Used by the maintenance
leader's loops (bridge/maintenance/housekeeping.py, bridge/reconcile/loop.py).
A base module: it imports nothing of the bridge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


class Periodic:
    def __init__(self, name: str, interval_s: float, run: Callable[[], Awaitable[object]], *,
                 on_error: Callable[[Exception], None],
                 is_leader: Callable[[], bool] | None = None) -> None:
        self._name = name
        self._interval_s = interval_s
        self._run_round = run
        self._on_error = on_error
        self._is_leader = is_leader
        self._task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def kick(self) -> None:
        """Run a round now."""
        self._kick.set()

    async def _run(self) -> None:
        while True:
            self._kick.clear()
            try:
                if self._is_leader is None or self._is_leader():
                    await self._run_round()
            except Exception as exc:  # noqa: BLE001 - the owner logs it; try again next interval
                self._on_error(exc)
            try:
                await asyncio.wait_for(self._kick.wait(), self._interval_s)
            except TimeoutError:
                pass
