"""The outbox sender: delivers queued HL7 status messages over MLLP.

Per destination, up to ``max_connections`` workers send side by side, each on
its own connection. A dispatcher hands each worker the oldest due message of
an order that no other worker is sending, so the messages of one order go out
strictly in order (the next only after the previous one was acknowledged or
dead-lettered), while different orders proceed in parallel.

Outcomes (HL7 MSA-1):
- AA or CA: sent;
- AE, AR or CR: a dead letter, with MSA-3/ERR text as its reason; the order's
  next message follows (``mwl-bridge outbox retry`` re-queues a dead letter);
- a timeout, a lost or refused connection, a failed TLS handshake (an untrusted
  or misnamed receiver certificate, our client certificate refused), CE (commit
  error), a reply without MSA or one that acknowledges another control ID:
  retried with backoff (initial, doubling, capped), and the destination pauses
  for that long, so a receiver that is down costs one attempt per connection
  slot and backoff step, not one per message.

With ``tls.enabled`` a destination's connections are TLS (bridge/outbound/tls.py):
its SSLContext is built once, when the sender is made, so a bad certificate
file stops start-up rather than every delivery. Errors are recorded as the
message's last error (``mwl-bridge outbox list``) and logged with the control
ID and OpenSSL's reason, never message content.

Delivery is at least once: a message whose ACK was lost is sent again with the
same MSH-10, which a receiver uses to drop the duplicate.

Several instances on one database: the dispatcher claims each message in the
store before handing it to a worker (``outbox_tx.claim_heads``: only an order's
head, only without another live claim, with a lease of ``lease_s``), and a
worker records the outcome only while the claim is still its own. The lease
covers the longest attempt a worker can make (``lease_seconds``), so the claim
of a live instance never lapses mid-send; an instance that dies leaves claims
that lapse after that long, and a survivor then sends those messages (again,
with the same MSH-10, when the dead one had sent them but not recorded it).
Stopping gives the claims back at once. On PostgreSQL new rows NOTIFY every
instance (the daemon wires ``Store.listen`` to ``wake``); polling every
``poll_interval_s`` is the fallback and sees lapsed claims.

Threads: the sender runs on the daemon's asyncio loop. It reads the store in
worker threads (``asyncio.to_thread``) and writes outcomes through ``submit``
(the daemon's CommitQueue), never on the loop itself. ``wake()`` may be called
from any thread (the MPPS handlers call it after their commit).
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
from functools import partial
from typing import TYPE_CHECKING, Any

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.hl7.charset import CharsetError, codec_for, read_msh18
from bridge.hl7.client import MllpClient, ack_code_of, acked_control_id_of
from bridge.outbound.audited import export_event
from bridge.outbound.settings import OutboundDestination
from bridge.outbound.tls import destination_contexts, server_name
from bridge.store import Submit, outbox_tx, thread_submit
from bridge.store.base import Store, StoreTx
from bridge.store.outbox_tx import OutboxMessage
from bridge.store.sqltx import parse_stamp

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

# Added to a destination's longest attempt for its claims' lease (lease_seconds).
LEASE_MARGIN_S = 5.0

DONE_CODES = frozenset({"AA", "CA"})
DEAD_CODES = frozenset({"AE", "AR", "CR"})


@dataclass
class SenderStats:
    sent: int = 0
    dead: int = 0
    retries: int = 0
    lost_claims: int = 0  # outcomes not recorded: the claim had lapsed


class _Retry(Exception):
    """A transport-level failure: the message stays pending and is sent again."""


@dataclass
class _Conn:
    client: MllpClient | None = None
    last_used: float = 0.0


@dataclass
class _DestinationState:
    settings: OutboundDestination
    ssl: ssl.SSLContext | None = None  # None: plain MLLP
    busy: set[str] = field(default_factory=set)
    queue: asyncio.Queue[OutboxMessage] = field(default_factory=asyncio.Queue)
    paused_until: float = 0.0  # loop time
    failures: int = 0  # consecutive transport failures
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def lease_s(self) -> float:
        return lease_seconds(self.settings)


def lease_seconds(d: OutboundDestination) -> float:
    """How long a claim on a message for ``d`` holds: the longest a worker can take
    over one attempt (connect, TLS handshake and ACK wait, twice when a reused
    connection turns out closed), plus a margin. Also the longest a dead instance's
    claimed messages wait before a survivor sends them."""
    handshake = d.tls.handshake_timeout_s if d.tls.enabled else 0.0
    return 2 * (d.connect_timeout_s + handshake + d.ack_timeout_s) + LEASE_MARGIN_S


class OutboxSender:
    def __init__(self, store: Store, destinations: Sequence[OutboundDestination], *,
                 poll_interval_s: float, submit: Submit | None = None,
                 stop_grace_s: float = 5.0, instance: str = "",
                 metrics: Metrics | None = None, audit: AuditTrail = NO_AUDIT) -> None:
        self._store = store
        self._metrics = metrics  # sends, retries and dead letters per destination
        self._audit = audit  # an Export event per message delivered
        self._submit = submit or thread_submit(store)
        self._poll = poll_interval_s
        self._grace = stop_grace_s
        # Who claims messages in the store; unique per running daemon.
        self.instance = instance or f"sender-{uuid.uuid4().hex[:12]}"
        # All destinations, so that errors name each by its position in the config;
        # TlsConfigError (a bad certificate, key or CA file) is raised here, at start.
        contexts = destination_contexts(destinations)
        self._dests = [_DestinationState(d, contexts[d.name]) for d in destinations
                       if d.enabled]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.stats = SenderStats()

    @property
    def destinations(self) -> list[str]:
        return [d.settings.name for d in self._dests]

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._dests:
            # Claims left by an earlier run under the same (configured) instance id:
            # that process is gone, so they need not wait for their lease.
            try:
                await self._submit(lambda tx: outbox_tx.release_claims(tx, self.instance))
            except Exception as exc:  # noqa: BLE001 - they lapse by themselves
                log.warning("old outbox claims not released (%s)", type(exc).__name__)
        for dest in self._dests:
            dest.tasks.append(asyncio.create_task(self._dispatch(dest),
                                                  name=f"outbox:{dest.settings.name}"))
            for n in range(dest.settings.max_connections):
                dest.tasks.append(asyncio.create_task(
                    self._work(dest), name=f"outbox:{dest.settings.name}:{n + 1}"))
        if self._dests:
            log.info("outbox sender started for %s", ", ".join(self.destinations))

    def wake(self) -> None:
        """Look at the outbox now. Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for dest in self._dests:
            loop.call_soon_threadsafe(dest.wake.set)

    async def stop(self) -> None:
        """Stop handing out messages; let sends in flight finish (up to the grace
        period), then cancel. Unsent messages stay pending for the next start."""
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
            released = await self._submit(
                lambda tx: outbox_tx.release_claims(tx, self.instance))
            if released:
                log.info("outbox sender released %d claimed message(s)", released)
        except Exception as exc:  # noqa: BLE001 - the leases lapse by themselves
            log.warning("outbox claims not released (%s); they lapse after their lease",
                        type(exc).__name__)
        log.info("outbox sender stopped")

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
                free = dest.settings.max_connections - len(dest.busy)
                if free > 0:
                    try:
                        # A read first, so that an idle outbox costs no write; the
                        # claim then decides (another instance may have been quicker).
                        heads = await asyncio.to_thread(
                            outbox_tx.due_heads, self._store, name, now=datetime.now(UTC),
                            limit=free, busy_orders=frozenset(dest.busy))
                        if heads:
                            heads = await self._claim(dest, free)
                        else:
                            wait = await asyncio.to_thread(self._until_next_due, name)
                            if wait is not None:
                                timeout = min(timeout, max(wait, 0.01))
                    except Exception as exc:  # noqa: BLE001 - keep polling; the store may recover
                        log.error("outbox of %s cannot be read: %s", name, type(exc).__name__)
                        heads = []
                    for message in heads:
                        dest.busy.add(message.order_key)
                        dest.queue.put_nowait(message)
            try:
                await asyncio.wait_for(dest.wake.wait(), timeout)
            except TimeoutError:
                pass
        # Workers end when the queue is drained.
        for _ in range(dest.settings.max_connections):
            dest.queue.put_nowait(_STOP)

    async def _claim(self, dest: _DestinationState, limit: int) -> list[OutboxMessage]:
        name, lease = dest.settings.name, dest.lease_s
        busy = frozenset(dest.busy)

        def job(tx: StoreTx) -> list[OutboxMessage]:
            # Claimed ones of ours are never offered again (their lease is live), but
            # an order being sent here keeps its next message for later all the same.
            return outbox_tx.claim_heads(tx, name, instance=self.instance, limit=limit,
                                         lease_s=lease, now=datetime.now(UTC),
                                         busy_orders=busy)

        claimed: list[OutboxMessage] = await self._submit(job)
        return claimed

    def _until_next_due(self, name: str) -> float | None:
        due = outbox_tx.next_due(self._store, name)
        if due is None:
            return None
        return (parse_stamp(due) - datetime.now(UTC)).total_seconds()

    # --- workers ---

    async def _work(self, dest: _DestinationState) -> None:
        conn = _Conn()
        try:
            while True:
                message = await dest.queue.get()
                if message is _STOP:
                    return
                if self._stopping:  # handed out but not started: stays pending (and
                    dest.busy.discard(message.order_key)  # stop() gives the claim back)
                    continue
                try:
                    await self._deliver(dest, conn, message)
                finally:
                    dest.busy.discard(message.order_key)
                    dest.wake.set()
        finally:
            if conn.client is not None:
                await conn.client.close()

    async def _deliver(self, dest: _DestinationState, conn: _Conn,
                       message: OutboxMessage) -> None:
        s = dest.settings
        try:
            reply = await self._exchange(dest, conn, message)
            code = ack_code_of(reply)
            acked = acked_control_id_of(reply)
            if acked and acked != message.control_id:
                raise _Retry(f"the reply acknowledges {acked!r}, not {message.control_id!r}")
            if code in DONE_CODES:
                await self._record(message, outbox_tx.mark_sent, message.id, reply)
                dest.failures = 0
                self.stats.sent += 1
                self._count(s.name, "sent")
                self._audit.record_later(partial(export_event, message, s.name, s.host))
                log.debug("status message %s delivered to %s (%s)", message.control_id,
                          s.name, code)
                return
            if code in DEAD_CODES:
                reason = f"{code}: {_reply_text(reply, s.charset) or 'no reason given'}"
                await self._record(message, outbox_tx.mark_dead, message.id, reason, reply)
                dest.failures = 0
                self.stats.dead += 1
                self._count(s.name, "dead")
                log.warning("status message %s refused by %s (%s); kept as a dead letter "
                            "(mwl-bridge outbox list --state dead)", message.control_id,
                            s.name, code)
                return
            raise _Retry(f"reply {code or 'without MSA'}")
        except (_Retry, TimeoutError, ConnectionError, OSError) as exc:
            await self._retry(dest, message, _describe(exc))

    async def _exchange(self, dest: _DestinationState, conn: _Conn,
                        message: OutboxMessage) -> bytes:
        """Send on the worker's connection. A reused connection that turns out to be
        closed (receivers drop idle ones) is replaced once, at once, without backoff."""
        s = dest.settings
        now = time.monotonic()
        if conn.client is not None and now - conn.last_used > s.idle_close_s:
            await conn.client.close()
            conn.client = None
        for attempt in (1, 2):
            fresh = conn.client is None
            if fresh:
                try:
                    conn.client = await self._connect(dest)
                except (TimeoutError, OSError) as exc:
                    raise _Retry(_connect_error(s, exc)) from None
            client = conn.client
            assert client is not None
            try:
                reply = await client.send(message.payload, timeout=s.ack_timeout_s)
            except ConnectionError as exc:
                await client.close()
                conn.client = None
                if fresh and dest.ssl is not None and _closed_early(exc):
                    # TLS 1.3 completes the client's side of the handshake before the
                    # receiver checks our certificate; a refusal then looks like a
                    # closed connection, so say what it most likely is.
                    raise ConnectionError(f"{exc} (a TLS receiver does this when it "
                                          "refuses our client certificate)") from exc
                if fresh or attempt == 2:
                    raise
                continue
            except BaseException:
                await client.close()  # send() closed it already on timeout/cancel
                conn.client = None
                raise
            conn.last_used = time.monotonic()
            return reply
        raise ConnectionError("unreachable")  # the loop returns or raises

    @staticmethod
    async def _connect(dest: _DestinationState) -> MllpClient:
        s = dest.settings
        if dest.ssl is None:
            return await MllpClient.connect(s.host, s.port, timeout=s.connect_timeout_s)
        return await MllpClient.connect(
            s.host, s.port, timeout=s.connect_timeout_s + s.tls.handshake_timeout_s,
            ssl=dest.ssl, server_hostname=server_name(s))

    def _count(self, destination: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.outbox_outcome(destination, outcome)

    async def _retry(self, dest: _DestinationState, message: OutboxMessage,
                     error: str) -> None:
        s = dest.settings
        dest.failures += 1
        delay = min(s.backoff_max_s, s.backoff_initial_s * 2 ** (dest.failures - 1))
        loop = asyncio.get_running_loop()
        dest.paused_until = max(dest.paused_until, loop.time() + delay)
        self.stats.retries += 1
        self._count(s.name, "retry")
        log.warning("status message %s to %s not delivered (%s); retry %d in %.1f s",
                    message.control_id, s.name, error, message.attempts + 1, delay)
        next_attempt = datetime.now(UTC) + timedelta(seconds=delay)
        try:
            await self._record(message, outbox_tx.mark_retry, message.id, error,
                               next_attempt)
        except Exception as exc:  # noqa: BLE001 - the message stays pending either way
            log.error("outbox retry of message %d not recorded: %s", message.id, exc)

    async def _record(self, message: OutboxMessage, fn: Callable[..., bool], *args: Any
                      ) -> None:
        """Record an outcome, as the claim's holder only (a message claimed by nobody,
        e.g. in tests that hand one over directly, by anyone)."""
        holder = message.claimed_by or None

        def job(tx: StoreTx) -> bool:
            return fn(tx, *args, claimed_by=holder)

        if not await self._submit(job) and holder is not None:
            self.stats.lost_claims += 1
            log.warning("status message %s: the claim lapsed before its outcome was "
                        "recorded; the instance that took it over sends it again",
                        message.control_id)


_STOP: Any = object()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, ssl.SSLError):
        # A TLS alert read after our side of the handshake (TLS 1.3 checks the
        # client certificate then); OpenSSL's reason says more than str(exc).
        return f"TLS handshake failed: {_tls_reason(exc)}"
    return str(exc) or type(exc).__name__


def _closed_early(exc: ConnectionError) -> bool:
    """The receiver hung up (closed or reset) instead of replying."""
    return isinstance(exc, ConnectionResetError) or "closed the connection" in str(exc)


def _connect_error(s: OutboundDestination, exc: BaseException) -> str:
    """What the outbox records and logs for a failed connect (no message content)."""
    cause = exc.__cause__
    if isinstance(cause, ssl.SSLError):  # MllpClient.connect wraps it in ConnectionError
        # The reason first: `outbox list` shows the first 60 characters.
        return f"TLS handshake failed: {_tls_reason(cause)}"
    text = _describe(exc)
    where = f"{s.host}:{s.port}"
    return text if where in text else f"cannot connect to {where}: {text}"


def _tls_reason(exc: ssl.SSLError) -> str:
    """OpenSSL's reason code, and for a certificate the verification result."""
    reason = exc.reason or type(exc).__name__
    detail = getattr(exc, "verify_message", None)
    return f"{reason}: {detail}" if detail else str(reason)


def _reply_text(reply: bytes, charset: str) -> str:
    """MSA-3 and ERR texts of a negative ACK, for the dead letter's reason.

    Read in the character set the reply's MSH-18 names, else in the destination's
    ``charset`` (what we sent; most ACKs carry no MSH-18), else as Latin-1, which reads
    any byte: a reason is for an operator, and a wrong guess must not lose it."""
    text = _decoded(reply, charset).lstrip("\ufeff \t\r\n\x0b")  # blank lines before MSH
    sep = text[3:4] if text.startswith("MSH") else "|"
    parts: list[str] = []
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        fields = line.split(sep)
        if fields[0] == "MSA" and len(fields) > 3 and fields[3]:
            parts.append(fields[3])
        elif fields[0] == "ERR":
            detail = [f for f in (fields[3] if len(fields) > 3 else "",
                                  fields[8] if len(fields) > 8 else "",
                                  fields[1] if len(fields) > 1 else "") if f]
            if detail:
                parts.append(" ".join(detail[:2]))
    return "; ".join(parts)[:500]


def _decoded(reply: bytes, charset: str) -> str:
    for name in (read_msh18(reply), charset):
        if not name:  # no MSH-18 (or none read): the next guess
            continue
        try:
            return reply.decode(codec_for(name, default="latin-1", aliases={}))
        except (CharsetError, UnicodeDecodeError):
            continue
    return reply.decode("latin-1")
