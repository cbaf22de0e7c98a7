"""The MPPS forwarder: sends every accepted N-CREATE/N-SET on to the configured MPPS
SCPs (a PACS, a second RIS), as the modality sent it.

The MPPS handlers (service.py) queue one row per destination in the transaction
that stores the MPPS (bridge/store/mpps_forward_tx.py): the data set as received
(its bytes and transfer syntax) and the SOP Instance UID, which the forwarded
request carries too (the one the bridge made when the modality left it out).

Per destination, up to ``max_associations`` workers send side by side, each on
its own association. A dispatcher hands each worker the oldest due request of an
MPPS instance that no other worker is sending, so one instance's requests go in
the order they were received (N-CREATE before its N-SETs, the next only after
the previous one was answered or dead-lettered), while different instances
proceed in parallel.

Outcomes (the peer's DIMSE status, recorded as ``peer_status``):
- success, or a warning: delivered; so is 0x0111 (duplicate SOP Instance) to an
  N-CREATE: the peer has the instance already (a resend after a lost answer);
- any other status (a failure): a dead letter with the status and the peer's
  Error Comment; the instance's next request follows
  (``mwl-bridge mpps forward retry`` re-queues a dead letter);
- a network error (refused, timed out, the association rejected or aborted, no
  MPPS presentation context accepted, no answer): retried with backoff (initial,
  doubling, capped), and the destination pauses for that long; after
  ``max_attempts`` attempts the request becomes a dead letter.

Delivery is at least once: a request whose answer was lost is sent again.

Several instances on one database: rows are claimed with a lease before they
are sent, exactly as the HL7 outbox does (bridge/outbound/sender.py); a lease
covers the longest attempt (``lease_seconds``). On PostgreSQL new rows NOTIFY
every instance (the daemon wires ``Store.listen`` to ``wake``); polling every
``poll_interval_s`` is the fallback and sees lapsed claims.

Threads: the dispatcher and the workers are tasks on the daemon's event loop;
the DICOM exchange itself (pynetdicom is synchronous) and the store reads run in
worker threads (``asyncio.to_thread``), outcomes are written through ``submit``.
``wake()`` may be called from any thread (the MPPS handlers call it after their
commit).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dsutils import decode, encode
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]
from pynetdicom.status import GENERAL_STATUS, code_to_category

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.mpps.settings import ForwardDestination, MppsForwardSettings
from bridge.store import Submit, mpps_forward_tx, thread_submit
from bridge.store.base import Store, StoreTx
from bridge.store.mpps_forward_tx import N_CREATE, ForwardRow, NewForward
from bridge.store.sqltx import parse_stamp
from bridge.telemetry.metrics import ForwardQueue
from bridge.tls import client_context

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

MPPS = ModalityPerformedProcedureStep
# Proposed for the forwarded requests, each in a presentation context of its own, after
# the one the request came in (pynetdicom sends on the first accepted context): when
# the peer takes that one, the data set goes on byte for byte.
TRANSFER_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
# Added to a destination's longest attempt for its claims' lease (lease_seconds).
LEASE_MARGIN_S = 5.0
SUCCESS = 0x0000
DUPLICATE_INSTANCE = 0x0111


@dataclass(frozen=True, slots=True)
class Received:
    """A request's data set as the modality sent it."""

    payload: bytes
    transfer_syntax: str  # its UID


def received_as_is(ds: Dataset) -> Received:
    """For a data set that did not come over the network (a caller of
    ``MppsService.create``/``update`` without one): encoded here, Explicit VR
    Little Endian, in UTF-8."""
    copy = Dataset(ds)
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if keyword in copy:
            del copy[keyword]
    copy.SpecificCharacterSet = "ISO_IR 192"
    payload = encode(copy, False, True)
    if payload is None:
        raise ValueError("the MPPS data set cannot be encoded")
    return Received(payload, ExplicitVRLittleEndian)


def forward_rows(destinations: Sequence[str], uid: str, operation: str,
                 received: Received, mpps_id: int) -> list[NewForward]:
    """The rows the MPPS handler queues in its transaction: one per destination."""
    return [NewForward(destination=name, sop_instance_uid=uid, operation=operation,
                       transfer_syntax=received.transfer_syntax, payload=received.payload,
                       mpps_id=mpps_id) for name in destinations]


def destination_contexts(settings: MppsForwardSettings) -> dict[str, ssl.SSLContext | None]:
    """Each enabled destination's TLS context by name (None: plain DICOM), built at
    start-up (and by ``mwl-bridge check-config``), so that a missing certificate or
    key file stops start-up, named by its setting. Raises bridge.tls.TlsConfigError."""
    return {d.name: client_context(d.tls, f"mpps.forward.destinations[{i}].tls")
            for i, d in enumerate(settings.destinations) if d.enabled}


def lease_seconds(d: ForwardDestination) -> float:
    """How long a claim on a row for ``d`` holds: the longest a worker can take over
    one attempt (connect, TLS, association and the response, twice when a kept
    association turns out gone), plus a margin."""
    handshake = d.tls.handshake_timeout_s if d.tls.enabled else 0.0
    return 2 * (2 * d.connect_timeout_s + handshake + d.response_timeout_s) + LEASE_MARGIN_S


def queue_reader(store: Store) -> Callable[[], list[ForwardQueue]]:
    """The forwarding queue per destination, for the metrics (a store read)."""

    def read() -> list[ForwardQueue]:
        return [ForwardQueue(name, pending, dead)
                for name, (pending, dead) in mpps_forward_tx.queue_stats(store).items()]

    return read


@dataclass
class ForwardStats:
    delivered: int = 0
    dead: int = 0
    retries: int = 0
    lost_claims: int = 0


class _Retry(Exception):
    """A network-level failure: the request stays pending and is sent again."""


class _Undeliverable(Exception):
    """The stored data set cannot be decoded or encoded: a dead letter at once."""


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    comment: str


@dataclass
class _Link:
    """One worker's association, kept open between requests (``idle_release_s``)."""

    assoc: Association | None = None
    last_used: float = 0.0
    syntax: str = ""  # the transfer syntax proposed first on ``assoc``


@dataclass
class _DestinationState:
    settings: ForwardDestination
    calling_ae: str
    ssl: ssl.SSLContext | None
    busy: set[str] = field(default_factory=set)
    queue: asyncio.Queue[ForwardRow] = field(default_factory=asyncio.Queue)
    paused_until: float = 0.0  # loop time
    failures: int = 0  # consecutive network failures
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lease_s(self) -> float:
        return lease_seconds(self.settings)


class MppsForwarder:
    """Delivers the forwarding queue; see the module docstring."""

    def __init__(self, store: Store, settings: MppsForwardSettings, *, calling_ae: str,
                 submit: Submit | None = None, instance: str = "",
                 stop_grace_s: float = 5.0, metrics: Metrics | None = None,
                 audit: AuditTrail = NO_AUDIT) -> None:
        self._store = store
        self._audit = audit  # a Procedure Record per request delivered or given up
        self._submit = submit or thread_submit(store)
        self._poll = settings.poll_interval_s
        self._grace = stop_grace_s
        self._metrics = metrics
        self.instance = instance or f"forward-{uuid.uuid4().hex[:12]}"
        contexts = destination_contexts(settings)  # TlsConfigError here, at start
        self._dests = [_DestinationState(d, d.calling_ae_title or calling_ae, contexts[d.name])
                       for d in settings.destinations if d.enabled]
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats = ForwardStats()

    @property
    def destinations(self) -> list[str]:
        """The enabled destinations' names: the MPPS handlers queue a row for each."""
        return [d.settings.name for d in self._dests]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if not self._dests:
            return
        # Claims left by an earlier run under the same instance id: that process is gone.
        try:
            await self._submit(lambda tx: mpps_forward_tx.release_claims(tx, self.instance))
        except Exception as exc:  # noqa: BLE001 - they lapse by themselves
            log.warning("old MPPS forward claims not released (%s)", type(exc).__name__)
        for dest in self._dests:
            name = dest.settings.name
            dest.tasks.append(asyncio.create_task(self._dispatch(dest),
                                                  name=f"mpps-forward:{name}"))
            for n in range(dest.settings.max_associations):
                dest.tasks.append(asyncio.create_task(
                    self._work(dest), name=f"mpps-forward:{name}:{n + 1}"))
        log.info("MPPS forwarding started to %s", ", ".join(
            f"{d.settings.name} ({d.settings.ae_title}@{d.settings.host}:{d.settings.port})"
            for d in self._dests))

    def wake(self) -> None:
        """Look at the queue now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for dest in self._dests:
            loop.call_soon_threadsafe(dest.wake.set)

    async def stop(self) -> None:
        """Stop handing out requests; let those in flight finish (up to the grace
        period), release the associations. Unsent requests stay pending."""
        self._stopping = True
        for dest in self._dests:
            dest.wake.set()
        tasks = [t for d in self._dests for t in d.tasks]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:  # another instance may send them now rather than after the lease
            await self._submit(lambda tx: mpps_forward_tx.release_claims(tx, self.instance))
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            log.warning("MPPS forward claims not released (%s); they lapse after their "
                        "lease", type(exc).__name__)
        log.info("MPPS forwarding stopped")

    # --- dispatcher ---

    async def _dispatch(self, dest: _DestinationState) -> None:
        name = dest.settings.name
        loop = asyncio.get_running_loop()
        while not self._stopping:
            dest.wake.clear()
            timeout = self._poll
            pause = dest.paused_until - loop.time()
            if pause > 0:
                timeout = min(timeout, pause)
            else:
                free = dest.settings.max_associations - len(dest.busy)
                if free > 0:
                    try:
                        # A read first, so an idle queue costs no write.
                        heads = await asyncio.to_thread(
                            mpps_forward_tx.due_heads, self._store, name,
                            now=datetime.now(UTC), limit=free, busy=frozenset(dest.busy))
                        if heads:
                            heads = await self._claim(dest, free)
                        else:
                            wait = await asyncio.to_thread(self._until_next_due, name)
                            if wait is not None:
                                timeout = min(timeout, max(wait, 0.01))
                    except Exception as exc:  # noqa: BLE001 - keep polling; the store may recover
                        log.error("MPPS forward queue of %s cannot be read: %s", name,
                                  type(exc).__name__)
                        heads = []
                    for row in heads:
                        dest.busy.add(row.sop_instance_uid)
                        dest.queue.put_nowait(row)
            try:
                await asyncio.wait_for(dest.wake.wait(), timeout)
            except TimeoutError:
                pass
        for _ in range(dest.settings.max_associations):
            dest.queue.put_nowait(_STOP)

    async def _claim(self, dest: _DestinationState, limit: int) -> list[ForwardRow]:
        name, lease = dest.settings.name, dest.lease_s
        busy = frozenset(dest.busy)

        def job(tx: StoreTx) -> list[ForwardRow]:
            return mpps_forward_tx.claim_heads(tx, name, instance=self.instance, limit=limit,
                                               lease_s=lease, now=datetime.now(UTC), busy=busy)

        claimed: list[ForwardRow] = await self._submit(job)
        return claimed

    def _until_next_due(self, name: str) -> float | None:
        due = mpps_forward_tx.next_due(self._store, name)
        if due is None:
            return None
        return (parse_stamp(due) - datetime.now(UTC)).total_seconds()

    # --- workers ---

    async def _work(self, dest: _DestinationState) -> None:
        link = _Link()
        try:
            while True:
                row = await dest.queue.get()
                if row is _STOP:
                    return
                if self._stopping:  # handed out but not started: stays pending
                    dest.busy.discard(row.sop_instance_uid)
                    continue
                try:
                    await self._deliver(dest, link, row)
                finally:
                    dest.busy.discard(row.sop_instance_uid)
                    dest.wake.set()
        finally:
            if link.assoc is not None:
                await asyncio.to_thread(_release, link)

    async def _deliver(self, dest: _DestinationState, link: _Link, row: ForwardRow) -> None:
        s = dest.settings
        try:
            answer = await asyncio.to_thread(_exchange, dest, link, row)
        except _Retry as exc:
            await self._retry(dest, row, str(exc))
            return
        except _Undeliverable as exc:
            await self._dead(dest, row, str(exc), None)
            return
        dest.failures = 0
        status = answer.status
        if status == SUCCESS or code_to_category(status) == "Warning" or (
                row.operation == N_CREATE and status == DUPLICATE_INSTANCE):
            note = "" if status == SUCCESS else _status_text(status, answer.comment)
            if await self._record(row, mpps_forward_tx.mark_sent, row.id, status, note):
                self.stats.delivered += 1
                self._count(s.name, "delivered")
                self._audit_row(dest, row, "")
            log.debug("MPPS %s %s forwarded to %s (0x%04X)", row.operation,
                      row.sop_instance_uid, s.name, status)
            return
        await self._dead(dest, row, _status_text(status, answer.comment), status)

    async def _dead(self, dest: _DestinationState, row: ForwardRow, reason: str,
                    status: int | None) -> None:
        name = dest.settings.name
        if await self._record(row, mpps_forward_tx.mark_dead, row.id, reason, status):
            self.stats.dead += 1
            self._count(name, "failed")
            self._audit_row(dest, row, reason)
        # The status only: a peer's Error Comment may quote a value.
        log.warning("MPPS %s of %s not forwarded to %s (%s); kept as a dead letter "
                    "(mwl-bridge mpps forward list --state dead)", row.operation,
                    row.sop_instance_uid, name,
                    "no status" if status is None else f"status 0x{status:04X}")

    def _audit_row(self, dest: _DestinationState, row: ForwardRow, failure: str) -> None:
        s = dest.settings
        self._audit.forwarded(calling_ae=dest.calling_ae, destination_ae=s.ae_title,
                              host=s.host, create=row.operation == N_CREATE,
                              mpps_uid=row.sop_instance_uid, reason=failure)

    async def _retry(self, dest: _DestinationState, row: ForwardRow, error: str) -> None:
        s = dest.settings
        dest.failures += 1
        delay = min(s.backoff_max_s, s.backoff_initial_s * 2 ** (dest.failures - 1))
        loop = asyncio.get_running_loop()
        dest.paused_until = max(dest.paused_until, loop.time() + delay)
        if row.attempts + 1 >= s.max_attempts:
            await self._dead(dest, row, f"gave up after {row.attempts + 1} attempt(s): "
                                        f"{error}", None)
            return
        self.stats.retries += 1
        self._count(s.name, "retry")
        log.warning("MPPS %s of %s not forwarded to %s (%s); retry %d in %.1f s",
                    row.operation, row.sop_instance_uid, s.name, error, row.attempts + 1,
                    delay)
        next_attempt = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            await self._record(row, mpps_forward_tx.mark_retry, row.id, error, next_attempt)
        except Exception as exc:  # noqa: BLE001 - the row stays pending either way
            log.error("MPPS forward retry of row %d not recorded: %s", row.id,
                      type(exc).__name__)

    async def _record(self, row: ForwardRow, fn: Callable[..., bool], *args: Any) -> bool:
        """Record an outcome, as the claim's holder only (a row claimed by nobody, e.g.
        in tests that hand one over directly, by anyone)."""
        holder = row.claimed_by or None

        def job(tx: StoreTx) -> bool:
            return fn(tx, *args, claimed_by=holder)

        done: bool = await self._submit(job)
        if not done and holder is not None:
            self.stats.lost_claims += 1
            log.warning("MPPS forward row %d: the claim lapsed before its outcome was "
                        "recorded; the instance that took it over sends it again", row.id)
        return done

    def _count(self, destination: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.forward_outcome(destination, outcome)


_STOP: Any = object()


def _ae(d: ForwardDestination, calling_ae: str, syntax: str) -> AE:
    ae = AE(ae_title=calling_ae)
    for ts in dict.fromkeys((syntax, *TRANSFER_SYNTAXES)):
        ae.add_requested_context(MPPS, [ts])
    handshake = d.tls.handshake_timeout_s if d.tls.enabled else 0.0
    ae.connection_timeout = d.connect_timeout_s + handshake
    ae.acse_timeout = d.connect_timeout_s
    ae.dimse_timeout = d.response_timeout_s
    # A kept association is released by us after idle_release_s; this is the backstop.
    ae.network_timeout = d.idle_release_s + d.response_timeout_s
    return ae


# --- the DICOM exchange (worker threads) ---

def _exchange(dest: _DestinationState, link: _Link, row: ForwardRow) -> _Answer:
    """Send ``row`` on the worker's association and return the peer's status. A kept
    association that turns out gone is replaced once, at once."""
    s = dest.settings
    if link.assoc is not None and (not link.assoc.is_established
                                   or time.monotonic() - link.last_used > s.idle_release_s
                                   or link.syntax != row.transfer_syntax):
        _release(link)
    ds = _dataset(row)
    for attempt in (1, 2):
        fresh = link.assoc is None
        if fresh:
            link.assoc = _associate(dest, row.transfer_syntax)
            link.syntax = row.transfer_syntax
        assoc = link.assoc
        assert assoc is not None
        try:
            if row.operation == N_CREATE:
                status, _ = assoc.send_n_create(ds, MPPS, UID(row.sop_instance_uid))
            else:
                status, _ = assoc.send_n_set(ds, MPPS, UID(row.sop_instance_uid))
        except ValueError as exc:  # pynetdicom: the data set cannot be encoded
            raise _Undeliverable(f"cannot be encoded for the peer: {exc}") from None
        except (OSError, RuntimeError) as exc:
            _abort(link)
            raise _Retry(f"the association to {_where(s)} failed: "
                         f"{type(exc).__name__}") from None
        if "Status" in status:
            link.last_used = time.monotonic()
            return _Answer(int(status.Status), str(status.get("ErrorComment", "") or ""))
        # No answer: timed out, or the association ended under us.
        was_up = assoc.is_established
        _abort(link)
        if fresh or attempt == 2 or was_up:
            raise _Retry(f"no answer from {_where(s)} within {s.response_timeout_s:g} s"
                         if was_up else f"the association to {_where(s)} ended before "
                         "an answer")
    raise _Retry("unreachable")  # the loop returns or raises


def _associate(dest: _DestinationState, syntax: str) -> Association:
    s = dest.settings
    kwargs: dict[str, Any] = {"ae_title": s.ae_title}
    if dest.ssl is not None:
        kwargs["tls_args"] = (dest.ssl, s.tls.server_hostname or s.host)
    assoc = _ae(s, dest.calling_ae, syntax).associate(s.host, s.port, **kwargs)
    if assoc.is_established:
        return assoc
    rsp = getattr(assoc.acceptor, "primitive", None)
    if assoc.is_rejected and rsp is not None:
        raise _Retry(f"association rejected by {_where(s)}: {rsp.reason_str} "
                     f"({rsp.result_str}, {rsp.source_str})")
    if rsp is not None and getattr(rsp, "result", None) == 0:
        raise _Retry(f"{_where(s)} accepted no MPPS presentation context")
    if assoc.is_aborted and rsp is not None:
        raise _Retry(f"association aborted by {_where(s)}")
    tls = " (TLS)" if dest.ssl is not None else ""
    raise _Retry(f"cannot connect{tls} to {_where(s)}")


def _where(s: ForwardDestination) -> str:
    return f"{s.ae_title}@{s.host}:{s.port}"


def _release(link: _Link) -> None:
    assoc, link.assoc = link.assoc, None
    if assoc is not None and assoc.is_established:
        assoc.release()


def _abort(link: _Link) -> None:
    assoc, link.assoc = link.assoc, None
    if assoc is not None and assoc.is_established:
        assoc.abort()


def _dataset(row: ForwardRow) -> Dataset:
    """The stored data set, decoded without touching its values: elements stay raw
    (and are written back byte for byte when the peer picks the syntax they came in)."""
    syntax = UID(row.transfer_syntax)
    try:
        return decode(BytesIO(row.payload), syntax.is_implicit_VR, syntax.is_little_endian,
                      syntax.is_deflated)
    except Exception as exc:  # noqa: BLE001 - whatever is stored, say so and go on
        raise _Undeliverable(f"the stored data set cannot be decoded "
                             f"({type(exc).__name__})") from None


def _status_text(status: int, comment: str) -> str:
    """'0x0110 Failure (Processing Failure): <the peer's Error Comment>'."""
    category, meaning = GENERAL_STATUS.get(status, (code_to_category(status), ""))
    text = f"0x{status:04X} {category}" + (f" ({meaning})" if meaning else "")
    return f"{text}: {comment.strip()}" if comment.strip() else text
