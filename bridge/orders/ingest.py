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
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bridge.hl7 import (
    AckControlIds,
    CharsetError,
    ErrorDetail,
    HL7ParseError,
    Segment,
    build_ack,
    decode_frame,
    encode_text,
    parse_message,
    read_header,
    read_header_bytes,
)
from bridge.hl7.settings import MllpSettings
from bridge.mapping import MappingSet
from bridge.orders import errors
from bridge.orders.apply import Envelope, Outcome, Work, message_job
from bridge.orders.errors import Rejection
from bridge.orders.intake import Intake
from bridge.orders.replay import RecentAcks, ReplayKey, content_hash, replay_key
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, InboundMessage, StoreTx
from bridge.store.orders_tx import OrdersTx

log = logging.getLogger(__name__)


class Ingest:
    """The FrameHandler behind the MLLP listener."""

    def __init__(self, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 settings: MllpSettings, *, log_phi: bool = False,
                 orders: OrdersSettings | None = None,
                 ack_ids: AckControlIds | None = None) -> None:
        self._commits = commits
        self._settings = settings
        self._log_phi = log_phi
        self._orders = orders or OrdersSettings()
        self._intake = Intake(mappings, self._orders)
        self._recent = RecentAcks(self._orders.messages.replay_cache)
        self._ack_ids = ack_ids or AckControlIds()

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
        """Nothing to release today; the listener service calls it on stop."""

    @property
    def cached_resends(self) -> int:
        return self._recent.hits

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        outcome = await self.process(payload, peer)
        return outcome.ack or None

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
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
        return outcome.ack or None

    async def process(self, payload: bytes, peer: str, *, replay_of: int | None = None
                      ) -> Outcome:
        """Decide and store one message; the Outcome carries the ACK to send.

        ``replay_of`` is set when an operator replays a dead letter
        (``mwl-bridge messages replay``); such a message skips the resend cache.
        """
        received_at = datetime.now(UTC)
        digest = content_hash(payload)
        key = replay_key(payload)
        if key is not None and replay_of is None:
            cached = self._recent.get(key)
            if cached is not None and cached[0] == digest:
                self._recent.hits += 1
                log.info("message %s from %s is a resend: answered with the original ACK",
                         key.control_id, peer)
                return Outcome(cached[1], "AA", None, "resend (from memory)", replayed=True)
        work: Work | Rejection
        mapping = ""
        try:
            decoded = decode_frame(payload, default=self._settings.default_charset,
                                   aliases=self._settings.charset_aliases)
        except CharsetError as exc:
            # The body can't be read, but MSH is ASCII: answer from it so the
            # sender learns which MSH-18 value we could not honour.
            header = read_header_bytes(payload)
            if header is None:
                return await self._not_hl7(payload, peer, received_at)
            work = Rejection("AR", errors.TABLE_VALUE_NOT_FOUND, "MSH^1^18^1^1", str(exc))
            return await self._submit(payload, peer, received_at, header, work, codec="ascii",
                                      digest=digest, mapping="")
        header = read_header(decoded.text)
        if header is None:
            return await self._not_hl7(payload, peer, received_at)
        try:
            message = parse_message(decoded.text)
            prepared = self._intake.prepare(message)
            work, mapping = prepared.work, prepared.mapping
        except HL7ParseError as exc:
            work = Rejection("AR", errors.SEGMENT_SEQUENCE_ERROR, "",
                             f"cannot parse message: {exc}")
        except Exception as exc:  # a bug must not cost the listener; the sender may retry
            log.exception("preparing message %s from %s failed", header.value(10), peer)
            work = Rejection("AR", errors.INTERNAL_ERROR, "",
                             f"internal error while mapping: {type(exc).__name__}")
        if self._log_phi:
            log.debug("message %s content: %r", header.value(10), decoded.text)
        return await self._submit(payload, peer, received_at, header, work,
                                  codec=decoded.codec, digest=digest, mapping=mapping,
                                  key=key, replay_of=replay_of)

    async def _submit(self, payload: bytes, peer: str, received_at: datetime, header: Segment,
                      work: Work | Rejection, *, codec: str, digest: str, mapping: str,
                      key: ReplayKey | None = None, replay_of: int | None = None) -> Outcome:
        def make_ack(code: str, errs: Sequence[ErrorDetail]) -> bytes:
            return self._ack(header, code, errors=errs, codec=codec)

        envelope = Envelope(record=_record(payload, peer, received_at, header, mapping),
                            digest=digest, make_ack=make_ack, replay_of=replay_of)
        control_id = header.value(10)
        try:
            outcome: Outcome = await self._commits.submit(message_job(envelope, work))
        except Exception as exc:  # noqa: BLE001 - the sender must retry: say so with AR
            log.error("store failed for message %s from %s: %s", control_id, peer, exc)
            error = ErrorDetail(code=errors.INTERNAL_ERROR, location="",
                                text="message not stored: application internal error; "
                                     "please resend")
            return Outcome(make_ack("AR", [error]), "AR", None, "store failed")
        kind = envelope.record.message_type
        if outcome.replayed:
            log.info("message %s (%s) from %s is a resend of message #%s: answered with the "
                     "original ACK", control_id, kind, peer, outcome.message_id)
        elif outcome.rejection is not None:
            r = outcome.rejection
            log.info("message %s (%s) from %s rejected: %s %d at %s: %s", control_id, kind,
                     peer, r.ack_code, r.code, r.location or "-", r.log_text)
        else:
            flags = f" [flags: {', '.join(outcome.flags)}]" if outcome.flags else ""
            log.info("message %s (%s) from %s accepted%s: %s%s", control_id, kind, peer,
                     f" by {mapping}" if mapping else "", outcome.summary, flags)
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
        text = build_ack(header, code, errors=errors, control_id=control_id, now=now)
        return encode_text(text, codec)


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
