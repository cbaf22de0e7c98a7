"""From one MLLP frame to a durable decision and its ACK.

The order of work is the guarantee: decode, tokenize, map, then store the
message and its procedure steps in one transaction, and build the ACK only
from what the commit returned. A frame is never acknowledged AA before its
data is on disk, and a rejected message is kept with its reason.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from pydicom import Dataset

from bridge.config import MllpSettings
from bridge.hl7 import (
    CharsetError,
    ErrorDetail,
    HL7ParseError,
    Segment,
    build_ack,
    decode_frame,
    encode_text,
    parse_message,
    read_header,
)
from bridge.mapping import MappingError, MappingSet
from bridge.store import CommitQueue, InboundMessage, StoreTx, UpsertOutcome

log = logging.getLogger(__name__)


class Ingest:
    """The FrameHandler behind the MLLP listener."""

    def __init__(self, mappings: Callable[[], MappingSet], commits: CommitQueue,
                 settings: MllpSettings, *, log_phi: bool = False) -> None:
        self._mappings = mappings
        self._commits = commits
        self._settings = settings
        self._log_phi = log_phi
        self._ack_ids = itertools.count(1)

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        received_at = datetime.now(UTC)
        try:
            decoded = decode_frame(payload, default=self._settings.default_charset,
                                   aliases=self._settings.charset_aliases)
        except CharsetError as exc:
            # The body can't be read, but MSH is ASCII: answer from it so the
            # sender learns which MSH-18 value we could not honour.
            header = read_header(payload.decode("latin-1"))
            error = ErrorDetail(code=103, location="MSH^1^18^1^1", text=str(exc))
            return await self._reject(payload, peer, received_at, header, "AR", [error],
                                      codec="ascii")
        header = read_header(decoded.text)
        if header is None:
            log.warning("frame of %d bytes from %s is not HL7 (no readable MSH); closing "
                        "the connection", len(payload), peer)
            await self._keep(InboundMessage(
                received_at=received_at, peer=peer, sending_application="",
                sending_facility="", control_id="", message_type="", raw=payload,
                ack_code="", ack=b"", error="not HL7: no readable MSH segment"))
            return None
        try:
            message = parse_message(decoded.text)
        except HL7ParseError as exc:
            error = ErrorDetail(code=100, location="", text=f"cannot parse message: {exc}")
            return await self._reject(payload, peer, received_at, header, "AR", [error],
                                      codec=decoded.codec)
        mapping_name = ""
        try:
            mapping_set = self._mappings()
            result = mapping_set.map(message)
        except MappingError as exc:
            log.info("message %s from %s rejected (%s): %s", message.control_id, peer,
                     exc.ack_code, exc.log_text)
            if exc.__cause__ is not None:  # an engine fault: keep the traceback for a bug report
                log.error("mapping fault on message %s", message.control_id,
                          exc_info=exc.__cause__)
            error = ErrorDetail(code=exc.code, location=exc.location, text=exc.text)
            return await self._reject(payload, peer, received_at, header, exc.ack_code,
                                      [error], codec=decoded.codec)
        except Exception as exc:  # a mapping bug must not cost the listener
            log.exception("mapping failed on message %s from %s", message.control_id, peer)
            error = ErrorDetail(code=207, location="",
                                text=f"internal error while mapping: {type(exc).__name__}")
            return await self._reject(payload, peer, received_at, header, "AR", [error],
                                      codec=decoded.codec)
        mapping_name = result.mapping
        ack = self._ack(header, "AA", codec=decoded.codec)
        record = _record(payload, peer, received_at, header, "AA", ack, mapping=mapping_name)
        try:
            outcomes = await self._commits.submit(_store_job(record, result.steps))
        except Exception as exc:  # noqa: BLE001 - the sender must retry: say so with AR
            log.error("store failed for message %s from %s: %s", message.control_id, peer, exc)
            error = ErrorDetail(code=207, location="",
                                text="message not stored: application internal error; "
                                     "please resend")
            return self._ack(header, "AR", errors=[error], codec=decoded.codec)
        log.info("message %s (%s) from %s accepted by mapping %s: %s", message.control_id,
                 message.message_type, peer, mapping_name,
                 ", ".join(o.value for o in outcomes) or "no steps")
        if self._log_phi:
            log.debug("message %s content: %r", message.control_id, decoded.text)
        return ack

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        header = read_header(head.decode("latin-1"))
        log.warning("frame of %d bytes from %s is over the %d byte limit", size, peer,
                    self._settings.max_frame_bytes)
        if header is None:
            return None
        error = ErrorDetail(code=207, location="",
                            text=f"message of {size} bytes exceeds the maximum frame size "
                                 f"of {self._settings.max_frame_bytes} bytes")
        # Only the head is kept: the whole frame is what the limit protects against.
        return await self._reject(head, peer, datetime.now(UTC), header, "AR", [error],
                                  codec="ascii")

    def _ack(self, header: Segment, code: str, *, codec: str,
             errors: Sequence[ErrorDetail] = ()) -> bytes:
        now = datetime.now()
        control_id = f"{now:%Y%m%d%H%M%S}{next(self._ack_ids) % 1_000_000:06d}"
        text = build_ack(header, code, errors=errors, control_id=control_id, now=now)
        return encode_text(text, codec)

    async def _reject(self, payload: bytes, peer: str, received_at: datetime,
                      header: Segment | None, code: str, errors: list[ErrorDetail], *,
                      codec: str) -> bytes | None:
        ack = self._ack(header, code, errors=errors, codec=codec) if header is not None else b""
        reason = "; ".join(f"{e.code} {e.location} {e.text}".strip() for e in errors)
        await self._keep(_record(payload, peer, received_at, header, code, ack, error=reason))
        return ack or None

    async def _keep(self, record: InboundMessage) -> None:
        """Log a message whose content is not applied; a store fault is logged, not raised."""
        try:
            await self._commits.submit(lambda tx: tx.record_message(record))
        except Exception as exc:  # noqa: BLE001 - the reply still goes out
            log.error("could not keep rejected message %s: %s", record.control_id, exc)


def _record(payload: bytes, peer: str, received_at: datetime, header: Segment | None,
            ack_code: str, ack: bytes, *, error: str = "", mapping: str = "") -> InboundMessage:
    def field(n: int) -> str:
        return header.value(n) if header is not None else ""

    message_type = ""
    if header is not None:
        code, event = header.value(9, 1), header.value(9, 2)
        message_type = f"{code}^{event}" if event else code
    return InboundMessage(
        received_at=received_at, peer=peer, sending_application=field(3),
        sending_facility=field(4), control_id=field(10), message_type=message_type,
        raw=payload, ack_code=ack_code, ack=ack, error=error, mapping=mapping)


def _store_job(record: InboundMessage, steps: Sequence[Dataset]
               ) -> Callable[[StoreTx], tuple[UpsertOutcome, ...]]:
    def job(tx: StoreTx) -> tuple[UpsertOutcome, ...]:
        message_id = tx.record_message(record)
        return tuple(tx.upsert_step(step, message_id) for step in steps)

    return job
