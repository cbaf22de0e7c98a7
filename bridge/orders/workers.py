"""Deciding frames in worker processes: decode, tokenize and map on every core.

The event loop keeps framing, the resend cache and the ACKs; the store writer
keeps the commits; what lies between (bridge.orders.decide, under the
interpreter lock a millisecond or more per order) runs in a pool of processes.

- Start: a worker is started when a frame waits and fewer than the pool's size
  run, from a forkserver (never fork: the store writer and pynetdicom are
  threads), which imports this module once, so a worker starts without
  importing the bridge again. A daemon that is never busy starts no process.
- Transport: one pipe per worker, one frame at a time each, written and read on
  the event loop (no helper threads taking turns at the interpreter lock).
- What crosses: the frame and the mapping version in; the decision out, with
  each item's Dataset and the few answers the write job asks of its message
  (apply.DetachedStep), never the parsed message or the mapping.
- Hot reload: each frame carries the daemon's mapping version and what that set
  was built from (MappingReloader.stamp). A worker on another version loads the
  files itself and compares; if it cannot build the very same set (a file
  changed again, or is broken now), it answers "stale" and the frame is decided
  in the daemon's own process, with the daemon's set.
- A worker that dies (killed, out of memory) is seen at once (its pipe reads
  EOF); its frame goes first to a new worker. A frame on which ATTEMPTS workers
  died is answered AR by Ingest (WorkerLost) and kept as a dead letter, never
  lost. A worker that cannot answer (WorkerFault) leaves the frame to the daemon,
  and so does a worker that dies before it says it is ready; after
  MAX_FAILED_STARTS of those in a row (a broken install) none are started again.

``workers: auto`` is one worker fewer than the cores (none on one core: one
core stays the event loop's and the store writer's). With three cores or more
it takes frames over INLINE_BYTES, and small ones when another frame is in
flight and a worker is idle; when all are busy, the daemon decides the frame
itself, and a lone sender pays no hop to a process and back. On two cores its
one worker takes only frames over INLINE_BYTES, so that a large message does
not hold the interpreter lock the event loop needs; small frames stay in the
daemon, where they cost half the CPU. A daemon that is never busy starts no
worker; until one is up (the first in about a second: the forkserver imports
the bridge), the daemon decides itself. ``workers: N`` sends every frame to N
workers, queued when all are busy; ``workers: 0`` decides everything in the
daemon (the fallback path).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import multiprocessing
import os
import pickle
import signal
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal, Protocol

from bridge.hl7.settings import MllpSettings
from bridge.logsafe import shown
from bridge.mapping import MappingSet, load_configured
from bridge.mapping.reload import Fingerprint, scan_files
from bridge.mapping.settings import MappingSettings
from bridge.orders.apply import DetachedStep, OrderStep, OrderWork
from bridge.orders.decide import Decided, Decider
from bridge.orders.intake import Intake
from bridge.orders.settings import OrdersSettings

log = logging.getLogger(__name__)

# A frame up to this size may be decided in the daemon when nothing else is in flight
# (workers: auto); a larger one always goes to a worker when there is a pool.
INLINE_BYTES = 64 * 1024
ATTEMPTS = 2  # workers that may die on a frame before it is answered AR
MAX_FAILED_STARTS = 3  # workers in a row that die starting up before the pool gives up


Use = Literal["all", "busy", "large"]  # the frames a pool decides (DecidePool.wanted)


class WorkerLost(Exception):
    """The worker process deciding a frame died, and the one after it too."""


class WorkerFault(Exception):
    """A worker could not answer (a bug, or no worker could start): decide in the daemon."""


class MappingSource(Protocol):
    """The daemon's mappings as workers follow them (a MappingReloader)."""

    @property
    def settings(self) -> MappingSettings: ...

    def stamp(self) -> tuple[int, Fingerprint]: ...


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def pool_size(setting: int | Literal["auto"], cpus: int | None = None) -> tuple[int, Use]:
    """Workers for ``orders.workers``, and which frames they get (DecidePool.wanted)."""
    if setting != "auto":
        return setting, "all"
    n = cpus if cpus is not None else cores()
    # One core stays the daemon's (event loop, store writer), which also decides frames
    # whenever every worker is busy. With one worker (two cores) small frames stay in
    # the daemon: through a worker a frame costs about twice the CPU (pickling both
    # ways) and the event loop and the writer thread hand the interpreter lock to each
    # other more often; measured on two cores, 0.7 of the throughput (docs/performance.md).
    return n - 1, "busy" if n >= 3 else "large"


@dataclass(eq=False, slots=True)
class _Task:
    payload: bytes
    peer: str
    future: asyncio.Future[Decided | None]
    attempts: int = 0  # workers that died holding it


@dataclass(eq=False, slots=True)
class _Proc:
    process: BaseProcess
    conn: Connection
    task: _Task | None = None
    ready: bool = False  # said so after its start-up


class DecidePool:
    """Up to ``size`` worker processes deciding frames, one frame each at a time.

    Everything happens on the event loop: a frame is written to an idle worker's
    pipe, and its answer read when the pipe is readable (no helper threads, whose
    turns at the interpreter lock would add to every ACK). A worker is started
    when a frame waits and fewer than ``size`` run; one that dies is replaced.
    """

    def __init__(self, size: int, mappings: MappingSource, mllp: MllpSettings,
                 orders: OrdersSettings, *, log_phi: bool = False, use: Use = "all"
                 ) -> None:
        if size < 1:
            raise ValueError("a DecidePool needs at least one worker")
        self.size = size
        self.use = use
        self._mappings = mappings
        self._initargs = (mappings.settings, mllp, orders, log_phi)
        self._shared = _shared(orders)
        self._procs: list[_Proc] = []
        self._idle: list[_Proc] = []
        self._waiting: deque[_Task] = deque()
        self._starting = 0
        self._closed = False
        self._target: Callable[..., None] = _serve
        self.failed_starts = 0  # workers in a row that died before they were ready
        self.decided = 0  # frames a worker decided
        self.stale = 0  # of those, handed back: the worker could not build the daemon's set
        self.replaced = 0  # workers that died and were replaced

    @property
    def pids(self) -> list[int]:
        return [p.process.pid for p in self._procs if p.process.pid is not None]

    def wanted(self, size: int, in_flight: int) -> bool:
        """Whether a frame of ``size`` bytes goes to a worker, with ``in_flight`` frames
        (itself included) between arrival and ACK.

        ``all``: every frame. ``busy``: a large frame always (off the event loop); a
        small one when another frame is in flight and a worker is idle; when every
        worker is busy, the daemon decides it itself rather than queue it, so the
        pool adds cores to the daemon's own. ``large``: only large frames.
        """
        if self._broken:
            return False
        if self.use == "all":
            return True
        large = size > INLINE_BYTES
        if not large and (in_flight <= 1 or self.use == "large"):
            return False
        if self._idle:
            return True
        if self._can_start():
            # A start takes a moment (the first about a second: the forkserver imports
            # the bridge): the daemon decides meanwhile, rather than keep the frame waiting.
            self._starting += 1
            asyncio.get_running_loop().create_task(self._start_one())
        return large and bool(self._procs)  # a large one waits for a worker, if there is one

    @property
    def _broken(self) -> bool:
        return self.failed_starts >= MAX_FAILED_STARTS

    def _can_start(self) -> bool:
        return (not self._closed and not self._broken
                and len(self._procs) + self._starting < self.size)

    async def decide(self, payload: bytes, peer: str) -> Decided | None:
        """The decision of a worker; None when the frame is to be decided in the daemon
        (stale mappings in the worker); WorkerLost when ATTEMPTS workers died on it;
        WorkerFault when the worker could not answer (a bug: decide it in the daemon)."""
        if self._closed or self._broken:
            raise WorkerFault("the worker pool is closed, or its workers do not start")
        task = _Task(payload, peer, asyncio.get_running_loop().create_future())
        self._waiting.append(task)
        self._dispatch()
        answer = await task.future
        self.decided += 1
        if answer is None:
            self.stale += 1
        return answer

    async def close(self) -> None:
        self._closed = True
        procs, self._procs, self._idle = self._procs, [], []
        for proc in procs:
            self._forget(proc)  # the worker reads EOF and exits
        for task in self._waiting:
            if not task.future.done():
                task.future.set_exception(WorkerFault("the worker pool closed"))
        self._waiting.clear()
        for proc in procs:
            await asyncio.to_thread(_reap, proc.process)

    def _dispatch(self) -> None:
        while self._waiting and self._idle:
            task = self._waiting.popleft()
            if task.future.done():  # its connection went away meanwhile
                continue
            self._send(self._idle.pop(), task)
        if self._waiting and self._can_start():
            self._starting += 1
            asyncio.get_running_loop().create_task(self._start_one())

    def _send(self, proc: _Proc, task: _Task) -> None:
        version, fingerprint = self._mappings.stamp()
        proc.task = task
        try:
            # The worker is idle, so it is reading: a large frame does not block for long.
            proc.conn.send_bytes(pickle.dumps((task.payload, task.peer, version, fingerprint),
                                              protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            self._died(proc)

    async def _start_one(self) -> None:
        context = multiprocessing.get_context("forkserver")
        # Imported once in the forkserver: each worker forks from it ready to work.
        context.set_forkserver_preload([__name__])
        ours, theirs = context.Pipe()
        process = context.Process(target=self._target, args=(theirs, *self._initargs),
                                  name="mwl-bridge-decide", daemon=True)
        try:
            # In a thread: the first start also starts the forkserver (about a second).
            await asyncio.to_thread(process.start)
        except Exception as exc:  # noqa: BLE001 - frames wait for the next start, or fail
            log.error("could not start a worker process: %s", exc)
            self._starting -= 1
            ours.close()
            self._fail_waiting(WorkerFault(f"could not start a worker process: {exc}"))
            return
        finally:
            theirs.close()  # the worker's end: its death must read as EOF here
        self._starting -= 1
        proc = _Proc(process, ours)
        if self._closed:
            self._forget(proc)
            return
        self._procs.append(proc)
        # Idle once it says it is ready: a worker that cannot start is told apart from
        # one that died on a frame.
        asyncio.get_running_loop().add_reader(ours.fileno(), self._readable, proc)

    def _readable(self, proc: _Proc) -> None:
        try:
            data = proc.conn.recv_bytes()
        except (EOFError, OSError):
            self._died(proc)
            return
        if not proc.ready:
            proc.ready = True
            self.failed_starts = 0
            self._idle.append(proc)
            self._dispatch()
            return
        task, proc.task = proc.task, None
        self._idle.append(proc)
        self._dispatch()
        if task is None or task.future.done():
            return
        try:
            kind, value = _Reader(io.BytesIO(data), self._shared).load()
        except Exception as exc:  # noqa: BLE001 - decided in the daemon instead
            task.future.set_exception(WorkerFault(f"unreadable answer: {exc}"))
            return
        if kind == "ok":
            task.future.set_result(value)
        else:
            task.future.set_exception(WorkerFault(str(value)))

    def _died(self, proc: _Proc) -> None:
        if proc not in self._procs:
            return
        self._procs.remove(proc)
        if proc in self._idle:
            self._idle.remove(proc)
        self._forget(proc)
        asyncio.get_running_loop().create_task(asyncio.to_thread(_reap, proc.process))
        if not proc.ready:
            self._start_failed(proc)
            return
        self.replaced += 1
        task, proc.task = proc.task, None
        if task is not None and not task.future.done():
            task.attempts += 1
            log.warning("worker process %s stopped while deciding a frame of %d bytes from "
                        "%s (attempt %d of %d)", proc.process.pid, len(task.payload),
                        shown(task.peer), task.attempts, ATTEMPTS)
            if task.attempts >= ATTEMPTS:
                task.future.set_exception(WorkerLost(
                    f"the worker process deciding this message stopped, {ATTEMPTS} times; "
                    "the message was not applied; please resend"))
            else:
                self._waiting.appendleft(task)  # first in line for the new worker
        else:
            log.warning("worker process %s stopped", proc.process.pid)
        self._dispatch()

    def _forget(self, proc: _Proc) -> None:
        with contextlib.suppress(ValueError, OSError):  # closed already
            asyncio.get_running_loop().remove_reader(proc.conn.fileno())
        proc.conn.close()

    def _start_failed(self, proc: _Proc) -> None:
        self.failed_starts += 1
        log.error("worker process %s stopped before it was ready (its stderr says why)%s",
                  proc.process.pid, "; no more are started: frames are decided in the daemon"
                  if self._broken else "")
        self._fail_waiting(WorkerFault("a worker process could not start"))
        self._dispatch()

    def _fail_waiting(self, exc: Exception) -> None:
        if self._procs or self._starting:
            return  # the running workers will take them
        while self._waiting:
            task = self._waiting.popleft()
            if not task.future.done():
                task.future.set_exception(exc)


def _shared(orders: OrdersSettings) -> dict[Hashable, object]:
    """The settings objects both sides hold, by the name a decision uses for them: they
    cross as a name (pickle's persistent IDs), not as a copy (a tenth of the cost of
    reading a decision back, on the event loop)."""
    shared: dict[Hashable, object] = {"orders": orders}
    shared.update({("rule", i): rule for i, rule in enumerate(orders.order_control)})
    return shared


class _Reader(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, shared: dict[Hashable, object]) -> None:
        super().__init__(file)
        self._shared = shared

    def persistent_load(self, pid: Any) -> object:
        return self._shared[pid]


class _Writer(pickle.Pickler):
    def __init__(self, file: io.BytesIO, shared: dict[int, Hashable]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._shared = shared

    def persistent_id(self, obj: Any) -> Hashable | None:
        return self._shared.get(id(obj))


def _reap(process: BaseProcess) -> None:
    process.join(5)
    if process.is_alive():
        process.kill()
        process.join()


# --- in the worker process ---------------------------------------------------------------

class _Worker:
    """A worker's mappings, at the daemon's version, and its Decider."""

    def __init__(self, mappings: MappingSettings, mllp: MllpSettings,
                 orders: OrdersSettings, log_phi: bool) -> None:
        self._settings = mappings
        self._set: MappingSet | None = None
        self._loaded: Fingerprint = ()
        self._failed: tuple[int, Fingerprint] | None = None
        self.version = -1  # matched to the daemon's by the first frame
        self.decider = Decider(Intake(self._current, orders), mllp, log_phi=log_phi)

    def _current(self) -> MappingSet:
        assert self._set is not None  # catch_up came first
        return self._set

    def catch_up(self, version: int, fingerprint: Fingerprint) -> bool:
        """Whether this worker now holds the daemon's set ``version``."""
        if version == self.version:
            return True
        if self._set is None or self._loaded != fingerprint:
            attempt = (version, scan_files(self._settings, None))
            if attempt == self._failed:  # the same files failed for this version
                return False
            try:
                new = load_configured(self._settings)
            except Exception as exc:  # noqa: BLE001 - the daemon decides meanwhile
                log.warning("worker %d could not load the mappings (%s); the daemon "
                            "decides until they load", os.getpid(), type(exc).__name__)
                self._failed = attempt
                return False
            loaded = scan_files(self._settings, new)
            if loaded != fingerprint:  # files changed after the daemon loaded them
                self._failed = attempt
                return False
            self._set, self._loaded = new, loaded
        self.version = version
        return True


_worker: _Worker | None = None


def _serve(conn: Connection, mappings: MappingSettings, mllp: MllpSettings,
           orders: OrdersSettings, log_phi: bool) -> None:
    """A worker's life: one frame in, its decision out, until the daemon hangs up."""
    global _worker
    # Ctrl-C reaches the whole process group; the daemon decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The daemon's handlers are not here: warnings (mapping faults) go to stderr.
    logging.basicConfig(level=logging.WARNING,
                        format="mwl-bridge worker %(process)d %(levelname)s %(name)s: "
                               "%(message)s")
    _worker = _Worker(mappings, mllp, orders, log_phi)
    shared = {id(obj): name for name, obj in _shared(orders).items()}
    conn.send_bytes(b"ready")
    while True:
        try:
            payload, peer, version, fingerprint = pickle.loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            out = io.BytesIO()
            _Writer(out, shared).dump(("ok", _decide(payload, peer, version, fingerprint)))
            answer = out.getvalue()
        except Exception as exc:  # noqa: BLE001 - the daemon decides it instead
            answer = pickle.dumps(("fault", f"{type(exc).__name__}: {exc}"))
        conn.send_bytes(answer)


def _decide(payload: bytes, peer: str, version: int, fingerprint: Fingerprint
            ) -> Decided | None:
    worker = _worker
    assert worker is not None
    if not worker.catch_up(version, fingerprint):
        return None
    decided = worker.decider.decide(payload, peer)
    work = decided.work
    if isinstance(work, OrderWork):
        work.steps = [OrderStep(DetachedStep(s.mapped), s.rule, s.control) for s in work.steps]
    return decided
