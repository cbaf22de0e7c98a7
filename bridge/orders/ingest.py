"""From one MLLP frame to a durable decision and its ACK.

The order of work is the guarantee:

1. an exact resend of a recently accepted message is answered from memory
   with its original ACK (bridge.orders.replay): no decoding, no mapping;
2. decode, tokenize, and decide what the message is (bridge.orders.decide and
   bridge.orders.intake: routing, mapping, order control table, patient format
   checks), in a worker process when there is a pool (bridge.orders.workers);
3. one write job per message (bridge.orders.apply) checks for a replay
   again, applies the lifecycle, and records the message with its ACK, all
   in one transaction; the ACK is sent only after that commit.

A frame is never acknowledged AA before its data is on disk, a rejected
message is kept whole with its reason (a dead letter), and a crash between
commit and ACK is harmless: the sender resends, and the resend is answered
with the original ACK.

One message must not stall the others. Its structure is bounded before it is
mapped (the mllp.max_* limits: AE with an ERR naming the limit and where), its
items before they are stored (orders.max_item_bytes), and the CPU work of a
frame over INLINE_BYTES runs off the event loop: its decision in a worker
process (or, with orders.workers 0, in a worker thread, LARGE_WORKERS of them,
which also fingerprint it in both cases), so the event loop keeps reading and
answering other connections meanwhile. Each connection still waits for its
frame's ACK before the next frame is read, so ACKs stay in order per
connection, and the ACK still follows the commit.

Nothing a peer sent is logged raw: control IDs, message types and rejection
texts go through bridge.logsafe.shown (one line, control characters escaped,
cut short).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.hl7 import (
    AckControlIds,
    ErrorDetail,
    Segment,
    build_ack,
    encode_text,
    read_header_bytes,
)
from bridge.hl7.ack import enhanced_acks
from bridge.hl7.mllp import join_messages
from bridge.hl7.settings import MllpSettings
from bridge.logsafe import shown
from bridge.mapping import MappingSet
from bridge.orders import errors
from bridge.orders.apply import Envelope, Outcome, Work, message_job
from bridge.orders.audited import hl7_builder
from bridge.orders.decide import Decided, Decider
from bridge.orders.errors import Rejection
from bridge.orders.intake import Intake
from bridge.orders.replay import RecentAcks, ReplayKey, content_hash, replay_key
from bridge.orders.settings import OrdersSettings
from bridge.orders.workers import INLINE_BYTES, DecidePool, WorkerLost
from bridge.store import CommitQueue, InboundMessage, StoreTx
from bridge.store.orders_tx import OrdersTx

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# Without a pool of worker processes (orders.workers: 0), a frame up to INLINE_BYTES
# is decided on the event loop (about a millisecond for a typical order: a thread
# hop would cost more than it saves); a larger one in a worker thread. With a pool,
# these threads only fingerprint large frames. More would not decide faster (one
# interpreter lock), only let more large messages hold memory at once.
LARGE_WORKERS = 2
LOG_TEXT_CHARS = 300  # of a rejection's log text (it may name peer values, e.g. MSH-9)


class Ingest:
    """The FrameHandler behind the MLLP listener."""

    def __init__(self, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 settings: MllpSettings, *, log_phi: bool = False,
                 orders: OrdersSettings | None = None,
                 ack_ids: AckControlIds | None = None,
                 metrics: Metrics | None = None, pool: DecidePool | None = None,
                 audit: AuditTrail = NO_AUDIT) -> None:
        self._commits = commits
        self._audit = audit  # an Order or Patient Record event per message stored
        self._metrics = metrics  # messages by type and outcome, ACK latency
        self._settings = settings
        self._err_both = frozenset(a.casefold() for a in settings.ack_err_both)
        self._enhanced = frozenset(a.casefold() for a in settings.enhanced_ack)
        self._log_phi = log_phi
        self._orders = orders or OrdersSettings()
        self._intake = Intake(mappings, self._orders)
        self._decider = Decider(self._intake, settings, log_phi=log_phi)
        self._pool = pool  # worker processes that decide frames (bridge.orders.workers)
        self._in_flight = 0  # frames between arrival and ACK
        self._recent = RecentAcks(self._orders.messages.replay_cache)
        self._ack_ids = ack_ids or AckControlIds()
        self._large: ThreadPoolExecutor | None = None  # made on the first large frame

    async def open(self) -> None:
        """Warm the resend cache from the message log."""
        size = self._orders.messages.replay_cache
        if size > 0:
            rows = await self._commits.submit(
                lambda tx: OrdersTx(tx).recent_applied(size))
            for application, facility, control_id, digest, ack in rows:
                if digest:
                    self._recent.put(ReplayKey(application, facility, control_id), digest, ack)
        if self._orders.accession_other_patient == "allow_with_warning":
            log.warning("orders.accession_other_patient is allow_with_warning: an Accession "
                        "Number may be reused for another patient; every such message is "
                        "flagged")

    async def close(self) -> None:
        """Release the worker threads and processes; the listener service calls it after
        the listener closed, so no frame is being decided any more."""
        if self._pool is not None:
            await self._pool.close()
        if self._large is not None:
            self._large.shutdown(wait=False, cancel_futures=True)
            self._large = None

    async def _cpu(self, payload: bytes, fn: Callable[..., T], *args: object) -> T:
        """``fn(*args)``: here for a small frame, in a worker thread for a large one."""
        if len(payload) <= INLINE_BYTES:
            return fn(*args)
        if self._large is None:
            self._large = ThreadPoolExecutor(LARGE_WORKERS, thread_name_prefix="hl7-large")
        return await asyncio.get_running_loop().run_in_executor(self._large, fn, *args)

    @property
    def pool(self) -> DecidePool | None:
        return self._pool

    @property
    def cached_resends(self) -> int:
        return self._recent.hits

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        started = time.perf_counter()
        outcome = await self.process(payload, peer)
        self._count(payload, outcome, started)
        return outcome.ack or None

    def _count(self, payload: bytes, outcome: Outcome, started: float) -> None:
        if self._metrics is None:
            return
        header = read_header_bytes(payload)
        kind = "" if header is None else "^".join(
            v for v in (header.value(9, 1), header.value(9, 2)) if v)
        self._metrics.message(kind, outcome.ack_code, time.perf_counter() - started,
                              resend=outcome.replayed)

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        started = time.perf_counter()
        header = read_header_bytes(head)
        log.warning("frame of %d bytes from %s is over the %d byte limit", size, peer,
                    self._settings.max_frame_bytes)
        if header is None:
            return None
        rejection = Rejection("AR", errors.INTERNAL_ERROR, "",
                              f"message of {size} bytes exceeds the maximum frame size of "
                              f"{self._settings.max_frame_bytes} bytes")
        # Only the head is kept: the whole frame is what the limit protects against.
        # No replay check: the head's hash says nothing about the whole message.
        outcome = await self._submit(head, peer, datetime.now(UTC), header, rejection,
                                     codec="ascii", digest="", mapping="")
        self._count(head, outcome, started)
        return outcome.ack or None

    async def process(self, payload: bytes, peer: str, *, replay_of: int | None = None
                      ) -> Outcome:
        """Decide and store one message; the Outcome carries the ACK to send.

        ``replay_of`` is set when an operator replays a dead letter
        (``mwl-bridge messages replay``); such a message skips the resend cache.
        """
        self._in_flight += 1
        try:
            return await self._process(payload, peer, replay_of)
        finally:
            self._in_flight -= 1

    async def _process(self, payload: bytes, peer: str, replay_of: int | None) -> Outcome:
        received_at = datetime.now(UTC)
        digest, key = await self._cpu(payload, _fingerprint, payload)
        if key is not None and replay_of is None:
            cached = self._recent.get(key)
            if cached is not None and cached[0] == digest:
                self._recent.hits += 1
                log.info("message %s from %s is a resend: answered with the original ACK",
                         shown(key.control_id), peer)
                return Outcome(cached[1], "AA", None, "resend (from memory)", replayed=True)
        decided = await self._decide(payload, peer)
        if decided.header is None:
            return await self._not_hl7(payload, peer, received_at)
        assert decided.work is not None
        return await self._submit(payload, peer, received_at, decided.header, decided.work,
                                  codec=decided.codec, digest=digest, mapping=decided.mapping,
                                  key=key, replay_of=replay_of)

    async def _decide(self, payload: bytes, peer: str) -> Decided:
        """Decide here, in a thread, or in a worker process (bridge.orders.workers)."""
        pool = self._pool
        if pool is None or not pool.wanted(len(payload), self._in_flight):
            return await self._cpu(payload, self._decider.decide, payload, peer)
        try:
            decided = await pool.decide(payload, peer)
        except WorkerLost as exc:
            header = read_header_bytes(payload)
            log.error("a frame of %d bytes from %s was not decided: %s", len(payload), peer,
                      exc)
            return Decided(header, Rejection("AR", errors.INTERNAL_ERROR, "", str(exc)))
        except Exception:  # a pool fault (a result that would not pickle): decide here
            log.exception("a worker process failed on a frame from %s; deciding it in the "
                          "daemon", peer)
            decided = None
        if decided is None:  # the worker could not build this daemon's mapping set
            return await self._cpu(payload, self._decider.decide, payload, peer)
        return decided

    async def _submit(self, payload: bytes, peer: str, received_at: datetime, header: Segment,
                      work: Work | Rejection, *, codec: str, digest: str, mapping: str,
                      key: ReplayKey | None = None, replay_of: int | None = None) -> Outcome:
        def make_ack(code: str, errs: Sequence[ErrorDetail]) -> bytes:
            return self._ack(header, code, errors=errs, codec=codec)

        envelope = Envelope(record=_record(payload, peer, received_at, header, mapping),
                            digest=digest, make_ack=make_ack, replay_of=replay_of)
        control_id = shown(header.value(10))
        try:
            outcome: Outcome = await self._commits.submit(message_job(envelope, work))
        except Exception as exc:  # noqa: BLE001 - the sender must retry: say so with AR
            log.error("store failed for message %s from %s: %s", control_id, peer, exc)
            error = ErrorDetail(code=errors.INTERNAL_ERROR, location="",
                                text="message not stored: application internal error; "
                                     "please resend")
            return Outcome(make_ack("AR", [error]), "AR", None, "store failed")
        self._audit.record_later(hl7_builder(payload, peer, outcome))
        kind = shown(envelope.record.message_type)
        # The same facts as fields, for logging.format json (bridge/app/logs.py).
        fields = {"control_id": control_id, "message_type": kind, "peer": peer,
                  "ack_code": outcome.ack_code}
        if outcome.replayed:
            log.info("message %s (%s) from %s is a resend of message #%s: answered with the "
                     "original ACK", control_id, kind, peer, outcome.message_id, extra=fields)
        elif outcome.rejection is not None:
            r = outcome.rejection
            log.info("message %s (%s) from %s rejected: %s %d at %s: %s", control_id, kind,
                     peer, r.ack_code, r.code, shown(r.location or "-"),
                     shown(r.log_text, LOG_TEXT_CHARS), extra={**fields, "error_code": r.code})
        else:
            flags = f" [flags: {', '.join(outcome.flags)}]" if outcome.flags else ""
            log.info("message %s (%s) from %s accepted%s: %s%s", control_id, kind, peer,
                     f" by {mapping}" if mapping else "", outcome.summary, flags,
                     extra={**fields, "mapping": mapping})
        if outcome.ack_code == "AA" and key is not None and digest:
            self._recent.put(key, digest, outcome.ack)
        return outcome

    async def _not_hl7(self, payload: bytes, peer: str, received_at: datetime) -> Outcome:
        log.warning("frame of %d bytes from %s is not HL7 (no readable MSH); closing "
                    "the connection", len(payload), peer)
        record = InboundMessage(
            received_at=received_at, peer=peer, sending_application="", sending_facility="",
            control_id="", message_type="", raw=payload, ack_code="", ack=b"",
            error="not HL7: no readable MSH segment")
        try:
            await self._commits.submit(lambda tx: _keep(tx, record))
        except Exception as exc:  # noqa: BLE001 - the connection is closed anyway
            log.error("could not keep a frame that is not HL7: %s", exc)
        return Outcome(b"", "", None, "not HL7")

    def _ack(self, header: Segment, code: str, *, codec: str,
             errors: Sequence[ErrorDetail] = ()) -> bytes:
        both = "*" in self._err_both or header.value(3, 1).casefold() in self._err_both

        def one(ack_code: str, errs: Sequence[ErrorDetail]) -> bytes:
            now = datetime.now()
            text = build_ack(header, ack_code, errors=errs, control_id=self._ack_ids.next(now),
                             now=now, err_fields="both" if both else "version")
            return encode_text(text, codec)

        # Enhanced acknowledgement mode (MSH-15/16) for the senders mllp.enhanced_ack names.
        if {"*", header.value(3, 1).casefold()} & self._enhanced:
            return join_messages(enhanced_acks(header, code, errors, one))
        return one(code, errors)


def _fingerprint(payload: bytes) -> tuple[str, ReplayKey | None]:
    return content_hash(payload), replay_key(payload)


def _keep(tx: StoreTx, record: InboundMessage) -> int:
    return tx.record_message(record)


def _record(payload: bytes, peer: str, received_at: datetime, header: Segment,
            mapping: str) -> InboundMessage:
    code, event = header.value(9, 1), header.value(9, 2)
    return InboundMessage(
        received_at=received_at, peer=peer, sending_application=header.value(3),
        sending_facility=header.value(4), control_id=header.value(10),
        message_type=f"{code}^{event}" if event else code, raw=payload, ack_code="",
        ack=b"", mapping=mapping)
