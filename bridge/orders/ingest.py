"""From one MLLP frame to a durable decision and its ACK.

The order of work is the guarantee:

1. an exact resend of a recently accepted message is answered from memory
   with its original ACK (bridge.orders.replay): no decoding, no mapping;
2. decode, tokenize, and decide what the message is (bridge.orders.intake:
   routing, mapping, order control table, patient format checks);
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
frame over INLINE_BYTES (fingerprint, decoding, tokenizing, mapping) runs in a
worker thread (LARGE_WORKERS of them), so the event loop keeps reading and
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
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from bridge.hl7 import (
    AckControlIds,
    CharsetError,
    ErrorDetail,
    HL7LimitError,
    HL7ParseError,
    Limits,
    Segment,
    build_ack,
    decode_frame,
    echo,
    encode_text,
    parse_message,
    read_header,
    read_header_bytes,
)
from bridge.hl7.settings import MllpSettings
from bridge.logsafe import shown
from bridge.mapping import MappingSet
from bridge.orders import errors
from bridge.orders.apply import Envelope, Outcome, Work, message_job
from bridge.orders.errors import Rejection
from bridge.orders.intake import Intake
from bridge.orders.replay import RecentAcks, ReplayKey, content_hash, replay_key
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, InboundMessage, StoreTx
from bridge.store.orders_tx import OrdersTx

if TYPE_CHECKING:
    from bridge.telemetry import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

# A frame up to this size is decided on the event loop (about a millisecond for a
# typical order: a thread hop would cost more than it saves); a larger one in a
# worker thread.
INLINE_BYTES = 64 * 1024
# Worker threads for large frames. More would not decide faster (one interpreter
# lock), only let more large messages hold memory at once.
LARGE_WORKERS = 2
# MSH-10 is ST, at most 199 characters from v2.7 on (20 before). A longer one is
# no control ID, and it would be kept in the resend cache and the message log.
MAX_CONTROL_ID = 199
LOG_TEXT_CHARS = 300  # of a rejection's log text (it may name peer values, e.g. MSH-9)


@dataclass(frozen=True, slots=True)
class _Decided:
    """What the CPU part of a frame came to; ``header`` None: not HL7."""

    header: Segment | None
    work: Work | Rejection | None = None
    codec: str = "ascii"
    mapping: str = ""


class Ingest:
    """The FrameHandler behind the MLLP listener."""

    def __init__(self, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 settings: MllpSettings, *, log_phi: bool = False,
                 orders: OrdersSettings | None = None,
                 ack_ids: AckControlIds | None = None,
                 metrics: Metrics | None = None) -> None:
        self._commits = commits
        self._metrics = metrics  # messages by type and outcome, ACK latency
        self._settings = settings
        self._err_both = frozenset(a.casefold() for a in settings.ack_err_both)
        self._log_phi = log_phi
        self._orders = orders or OrdersSettings()
        self._intake = Intake(mappings, self._orders)
        self._recent = RecentAcks(self._orders.messages.replay_cache)
        self._ack_ids = ack_ids or AckControlIds()
        self._limits = Limits(segments=settings.max_segments, fields=settings.max_fields,
                              repetitions=settings.max_repetitions,
                              components=settings.max_components)
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
        """Release the worker threads; the listener service calls it after the listener
        closed, so no frame is being decided any more."""
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
        received_at = datetime.now(UTC)
        digest, key = await self._cpu(payload, _fingerprint, payload)
        if key is not None and replay_of is None:
            cached = self._recent.get(key)
            if cached is not None and cached[0] == digest:
                self._recent.hits += 1
                log.info("message %s from %s is a resend: answered with the original ACK",
                         shown(key.control_id), peer)
                return Outcome(cached[1], "AA", None, "resend (from memory)", replayed=True)
        decided = await self._cpu(payload, self._decide, payload, peer)
        if decided.header is None:
            return await self._not_hl7(payload, peer, received_at)
        assert decided.work is not None
        return await self._submit(payload, peer, received_at, decided.header, decided.work,
                                  codec=decided.codec, digest=digest, mapping=decided.mapping,
                                  key=key, replay_of=replay_of)

    def _decide(self, payload: bytes, peer: str) -> _Decided:
        """Decode, tokenize within the limits, and prepare: pure CPU, on any thread."""
        try:
            decoded = decode_frame(payload, default=self._settings.default_charset,
                                   aliases=self._settings.charset_aliases)
        except CharsetError as exc:
            # The body can't be read, but MSH is ASCII: answer from it so the
            # sender learns which MSH-18 value we could not honour.
            header = read_header_bytes(payload)
            if header is None:
                return _Decided(None)
            return _Decided(header, Rejection("AR", errors.TABLE_VALUE_NOT_FOUND,
                                              "MSH^1^18^1^1", str(exc)))
        header = read_header(decoded.text)
        if header is None:
            return _Decided(None)
        work: Work | Rejection
        mapping = ""
        try:
            message = parse_message(decoded.text, self._limits, codec=decoded.codec)
            problem = _control_id_problem(header)
            if problem is not None:
                work = problem
            else:
                prepared = self._intake.prepare(message)
                work, mapping = prepared.work, prepared.mapping
        except HL7LimitError as exc:
            # Content the sender must change (AE), not a message to resend as it is.
            work = Rejection("AE", exc.code, exc.location, str(exc))
        except HL7ParseError as exc:
            work = Rejection("AR", exc.code, exc.location, f"cannot parse message: {exc}")
        except Exception as exc:  # a bug must not cost the listener; the sender may retry
            log.exception("preparing message %s from %s failed", shown(header.value(10)), peer)
            work = Rejection("AR", errors.INTERNAL_ERROR, "",
                             f"internal error while mapping: {type(exc).__name__}")
        if self._log_phi:
            log.debug("message %s content: %r", shown(header.value(10)), decoded.text)
        return _Decided(header, work, decoded.codec, mapping)

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
        now = datetime.now()
        control_id = self._ack_ids.next(now)
        both = "*" in self._err_both or header.value(3, 1).casefold() in self._err_both
        text = build_ack(header, code, errors=errors, control_id=control_id, now=now,
                         err_fields="both" if both else "version")
        return encode_text(text, codec)


def _fingerprint(payload: bytes) -> tuple[str, ReplayKey | None]:
    return content_hash(payload), replay_key(payload)


def _control_id_problem(header: Segment) -> Rejection | None:
    """An empty or overlong MSH-10: the ACK could not name the message (AR)."""
    control_id = header.value(10)
    if not control_id.strip():
        return Rejection("AR", errors.REQUIRED_FIELD_MISSING, "MSH^1^10",
                         "MSH-10 (message control ID) is empty; every message needs a "
                         "control ID of its own, which its ACK echoes in MSA-2")
    if len(control_id) > MAX_CONTROL_ID:
        return Rejection("AR", errors.DATA_TYPE_ERROR, "MSH^1^10",
                         f"MSH-10 (message control ID) is {len(control_id)} characters; at "
                         f"most {MAX_CONTROL_ID} are accepted; it begins {echo(control_id)}",
                         log_text=f"MSH-10 (message control ID) is {len(control_id)} "
                                  f"characters; at most {MAX_CONTROL_ID} are accepted")
    return None


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
