"""Group commit between the asyncio loop and the store's single writer.

MLLP handlers on the event loop ``await queue.submit(job)``; one thread takes
whatever jobs are waiting, runs them in one transaction (a savepoint each) and
commits once. Under load from several connections one fsync then serves many
ACKs; with a single sender a batch is one job and nothing waits for a timer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bridge.store.base import Store, StoreTx

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

_STOP = object()

# How asyncio code runs a write job and awaits its committed result: a
# CommitQueue's ``submit`` in the daemon, ``thread_submit`` elsewhere.
Submit = Callable[[Callable[[StoreTx], Any]], Awaitable[Any]]


def thread_submit(store: Store) -> Submit:
    """A ``submit`` without a CommitQueue: one transaction per job, in a thread."""

    async def submit(job: Callable[[StoreTx], Any]) -> Any:
        (result,) = await asyncio.to_thread(store.write, [job])
        if isinstance(result, BaseException):
            raise result
        return result

    return submit


class CommitQueue:
    def __init__(self, store: Store, *, max_batch: int = 64,
                 metrics: Metrics | None = None) -> None:
        self._store = store
        self._metrics = metrics  # commit latency and batch sizes
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self.batches = 0
        self.jobs_done = 0

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        """The writer thread is alive (started and not stopped)."""
        return self._thread.is_alive()

    async def submit(self, job: Callable[[StoreTx], Any]) -> Any:
        """Run ``job`` in the next batch; return its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((job, loop, future))
        return await future

    def stop(self) -> None:
        """Finish the jobs already queued, then end the writer thread."""
        if self._thread.is_alive():
            self._jobs.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._jobs.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._jobs.get_nowait())
                except queue.Empty:
                    break
            if _STOP in batch:
                stopping = True
                batch = [b for b in batch if b is not _STOP]
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[tuple[Callable[[StoreTx], Any], Any, Any]]) -> None:
        started = time.perf_counter()
        ok = True
        try:
            results = self._store.write([job for job, _, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter learns the batch failed
            log.error("store commit failed for %d message(s): %s", len(batch), exc)
            results = [exc] * len(batch)
            ok = False
        if self._metrics is not None:
            self._metrics.commit(time.perf_counter() - started, len(batch), ok=ok)
        self.batches += 1
        self.jobs_done += len(batch)
        # One wake-up per event loop for the whole batch, not one per job: each
        # call_soon_threadsafe takes the GIL and writes to the loop's self-pipe, and
        # under load the writer waited on exactly that (py-spy, docs/performance.md).
        settled: dict[Any, list[tuple[asyncio.Future[Any], Any]]] = {}
        for (_, loop, future), result in zip(batch, results, strict=True):
            settled.setdefault(loop, []).append((future, result))
        for loop, pairs in settled.items():
            loop.call_soon_threadsafe(_settle_all, pairs)


def _settle_all(pairs: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, result in pairs:
        _settle(future, result)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.cancelled():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)
