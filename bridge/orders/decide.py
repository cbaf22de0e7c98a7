"""The CPU part of one frame: decode (MSH-18), tokenize within the limits, and prepare.

Pure (no store, no loop, no shared state but the compiled mappings), so it
runs wherever Ingest sends it: on the event loop, in a thread, or in a worker
process (bridge.orders.workers). What it returns is what the write job needs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge.hl7 import (
    CharsetError,
    HL7LimitError,
    HL7ParseError,
    Limits,
    Segment,
    decode_frame,
    echo,
    parse_message,
    read_header,
    read_header_bytes,
)
from bridge.hl7.settings import MllpSettings
from bridge.logsafe import shown
from bridge.orders import errors
from bridge.orders.apply import Work
from bridge.orders.errors import Rejection
from bridge.orders.intake import Intake

log = logging.getLogger(__name__)

# MSH-10 is ST, at most 199 characters from v2.7 on (20 before). A longer one is
# no control ID, and it would be kept in the resend cache and the message log.
MAX_CONTROL_ID = 199


@dataclass(frozen=True, slots=True)
class Decided:
    """What the CPU part of a frame came to; ``header`` None: not HL7."""

    header: Segment | None
    work: Work | Rejection | None = None
    codec: str = "ascii"
    mapping: str = ""


class Decider:
    """Decides frames with one Intake and the listener's limits and character sets."""

    def __init__(self, intake: Intake, settings: MllpSettings, *, log_phi: bool = False
                 ) -> None:
        self.intake = intake
        self._settings = settings
        self._log_phi = log_phi
        self._limits = Limits(segments=settings.max_segments, fields=settings.max_fields,
                              repetitions=settings.max_repetitions,
                              components=settings.max_components)

    def decide(self, payload: bytes, peer: str) -> Decided:
        """Decode, tokenize within the limits, and prepare: pure CPU, on any thread."""
        try:
            decoded = decode_frame(payload, default=self._settings.default_charset,
                                   aliases=self._settings.charset_aliases)
        except CharsetError as exc:
            # The body can't be read, but MSH is ASCII: answer from it so the
            # sender learns which MSH-18 value we could not honour.
            header = read_header_bytes(payload)
            if header is None:
                return Decided(None)
            return Decided(header, Rejection("AR", errors.TABLE_VALUE_NOT_FOUND,
                                             "MSH^1^18^1^1", str(exc)))
        header = read_header(decoded.text)
        if header is None:
            return Decided(None)
        work: Work | Rejection
        mapping = ""
        try:
            message = parse_message(decoded.text, self._limits, codec=decoded.codec)
            problem = control_id_problem(header)
            if problem is not None:
                work = problem
            else:
                prepared = self.intake.prepare(message)
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
        return Decided(header, work, decoded.codec, mapping)


def control_id_problem(header: Segment) -> Rejection | None:
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
