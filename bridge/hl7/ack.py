"""HL7 acknowledgements (ACK with MSA and ERR) in the sender's own delimiters.

The ACK follows the message's own version (MSH-12), so that a strict parser of
that version accepts it: MSH-9 has the message structure (``ACK^O01^ACK``) from
v2.3.1 on; ERR carries only ERR-1 (ELD) before v2.5 and ERR-2..8 from v2.5 on,
with the readable sentence in MSA-3 before v2.5 (there is no ERR-8) and in
ERR-8 from v2.5. ``err_fields="both"`` (``mllp.ack_err_both``, per sender) fills
ERR-1 and ERR-2..8 whatever the version, for receivers that read the other
generation's fields.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from bridge.hl7.charset import BOM
from bridge.hl7.message import Delimiters, HL7ParseError, Segment, escape, parse_header

# HL7 table 0357, message error condition codes. 104 exists from v2.6 on; it
# is the honest code for "too long for a DICOM SH", and older receivers still
# get the text beside it.
_TABLE_0357: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}
_ACK_CODES = frozenset({"AA", "AE", "AR", "CA", "CE", "CR"})
_SEVERITIES = frozenset({"E", "W", "I", "F"})
_FIRST_LINE = re.compile(r"[\r\n]")
_FIRST_LINE_BYTES = re.compile(rb"[\r\n]")
# ERR-8 and MSA-3 are sentences for a person; whatever a text quotes, the ACK
# stays small (a bad 1 MB value must not come back whole).
MAX_TEXT = 1024
ECHO_CHARS = 64  # of an offending value quoted in an error text


def echo(value: str, limit: int = ECHO_CHARS) -> str:
    """An offending value quoted for an error text: its repr, cut to ``limit``
    characters, with the full length when cut."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 3] + "..."


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR segment. ``location`` is an ERL written with "^" ("PID^1^3^1^1"), or ""."""

    code: int
    location: str
    text: str
    severity: str = "E"

    def __post_init__(self) -> None:
        if self.code not in _TABLE_0357:
            raise ValueError(f"{self.code} is not an HL7 table 0357 error code")
        if self.severity not in _SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of E, W, I, F")


def hl7_error_text(code: int) -> str:
    """The standard table 0357 name of an error code (KeyError when unknown)."""
    return _TABLE_0357[code]


def read_header(text: str) -> Segment | None:
    """The MSH of a message, parsed alone; None when the first line is no readable MSH.

    Only the first line is tokenized, so garbage in later segments cannot
    prevent an ACK that names the message. Broken encoding characters (MSH-2)
    are read as ``^~\\&`` here, so that the message can still be answered with
    an error naming MSH-2 (parse_message refuses them).
    """
    text = text.lstrip("\ufeff \t\r\n\x0b")
    match = _FIRST_LINE.search(text)
    try:
        return parse_header(text[:match.start()] if match else text, standard_delimiters=True)
    except HL7ParseError:
        return None


def read_header_bytes(frame: bytes) -> Segment | None:
    """read_header for a frame whose charset is unknown or broken.

    MSH is ASCII in every charset HL7 uses over MLLP, so Latin-1 (which
    never fails) reads it faithfully enough to answer with an AR.
    """
    data = frame.lstrip(b"\x0b\r\n \t")
    if data.startswith(BOM):
        data = data[len(BOM):]
    match = _FIRST_LINE_BYTES.search(data)  # decode the first line only, not 4 MB
    return read_header((data[:match.start()] if match else data).decode("latin-1"))


def _version(msh: Segment) -> tuple[int, ...]:
    parts = msh.value(12).strip().split(".")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        return ()


def _join(fields: list[str], sep: str) -> str:
    while fields and fields[-1] == "":
        fields.pop()
    return sep.join(fields)


ErrFields = Literal["version", "both"]


def _err_segment(detail: ErrorDetail, d: Delimiters, *, eld: bool, v25: bool) -> str:
    standard = hl7_error_text(detail.code)
    location = [escape(part, d) for part in detail.location.split("^")] if detail.location else []
    seg, seq, fld = ([*location, "", "", ""])[:3]
    code_v231 = d.subcomponent.join([str(detail.code), escape(standard, d), "HL70357"])
    fields = ["ERR", d.component.join([seg, seq, fld, code_v231]) if eld else ""]  # ERR-1 ELD
    if v25:
        fields += [
            d.component.join(location),  # ERR-2 ERL
            d.component.join([str(detail.code), escape(standard, d), "HL70357"]),  # ERR-3
            detail.severity,  # ERR-4
            "", "", "",  # ERR-5..7
            escape(_bounded(detail.text), d),  # ERR-8 user message
        ]
    return _join(fields, d.field)


class AckControlIds:
    """MSH-10 of the ACKs we send: the time, then a counter (20 characters).

    One instance serves every ACK writer of a daemon (the intake and the
    allow-list's refusals), so two of them can never issue the same ID in the
    same second. Thread-safe enough for its use: next() on itertools.count is
    atomic under the GIL.
    """

    def __init__(self) -> None:
        self._numbers = itertools.count(1)

    def next(self, now: datetime) -> str:
        return f"{now:%Y%m%d%H%M%S}{next(self._numbers) % 1_000_000:06d}"


def build_ack(msh: Segment, ack_code: str, *, errors: Sequence[ErrorDetail] = (),
              text: str = "", control_id: str, now: datetime,
              err_fields: ErrFields = "version") -> str:
    """An ACK for the message whose header is ``msh``, as ER7 text with CR segment ends.

    ERR follows the message's version (module docstring); ``err_fields="both"``
    fills ERR-1 and ERR-2..8 whatever the version. Before v2.5 (no ERR-8), the
    first error's sentence goes to MSA-3 unless ``text`` is given.
    """
    if ack_code not in _ACK_CODES:
        raise ValueError(f"{ack_code!r} is not an HL7 acknowledgment code")
    d = msh.delimiters
    version = _version(msh)
    trigger = escape(msh.value(9, 2), d)
    if version >= (2, 3, 1) or (not version and msh.value(9, 3)):
        message_type = d.component.join(["ACK", trigger, "ACK"])
    else:
        message_type = d.component.join(["ACK", trigger]) if trigger else "ACK"
    # An unreadable version gets the v2.5 fields (the newer receivers' reading).
    v25 = not version or version >= (2, 5)
    eld = not v25 or err_fields == "both"
    if not v25 and not text and errors:
        text = errors[0].text
    header = [
        "MSH", msh.raw(2),
        msh.raw(5), msh.raw(6), msh.raw(3), msh.raw(4),  # MSH-3..6, sender and receiver swapped
        now.strftime("%Y%m%d%H%M%S"), "",  # MSH-7, MSH-8
        message_type, escape(control_id, d),  # MSH-9, MSH-10
        msh.raw(11) or "P", msh.raw(12),  # MSH-11, MSH-12
        "", "", "", "", "",  # MSH-13..17
        msh.raw(18),
    ]
    segments = [
        _join(header, d.field),
        _join(["MSA", ack_code, msh.raw(10), escape(_bounded(text), d)], d.field),
        *(_err_segment(detail, d, eld=eld, v25=v25 or err_fields == "both")
          for detail in errors),
    ]
    return "\r".join(segments) + "\r"


# --- enhanced acknowledgement mode (MSH-15, MSH-16) ------------------------------------

# HL7 table 0155: when an acknowledgement is wanted.
_ACK_CONDITIONS = frozenset({"AL", "NE", "ER", "SU"})
# Errors that refuse the message itself (table 0357): in enhanced mode a commit reject.
_COMMIT_REJECTS = frozenset({200, 201, 202, 203})
_INTERNAL_ERROR = 207


def enhanced_mode(msh: Segment) -> tuple[str, str] | None:
    """(MSH-15, MSH-16) when the message asks for enhanced acknowledgement mode, None
    for original mode (both empty). A value outside table 0155 counts as AL."""
    accept, application = msh.value(15).strip().upper(), msh.value(16).strip().upper()
    if not accept and not application:
        return None
    return (accept if accept in _ACK_CONDITIONS else "AL",
            application if application in _ACK_CONDITIONS else "AL")


def commit_code(ack_code: str, errors: Sequence[ErrorDetail]) -> str:
    """The accept (commit) ACK code for a message whose application ACK is ``ack_code``.

    CA: the message is safely stored, whatever the application made of it (a
    rejected message is kept as a dead letter; its application ACK says why).
    CR: the message itself is refused (type, event, processing ID, version).
    CE: it could not be stored (AR 207): the sender should send it again.
    """
    if ack_code in ("AA", "AE"):
        return "CA"
    if any(e.code in _COMMIT_REJECTS for e in errors):
        return "CR"
    if any(e.code == _INTERNAL_ERROR for e in errors):
        return "CE"
    return "CA"


def _wanted(condition: str, success: bool) -> bool:
    return condition == "AL" or (condition == "ER" and not success) or (
        condition == "SU" and success)


def enhanced_acks(msh: Segment, ack_code: str, errors: Sequence[ErrorDetail],
                  build: Callable[[str, Sequence[ErrorDetail]], bytes]) -> list[bytes]:
    """The acknowledgements for a message in enhanced mode, in the order they are sent.

    The accept ACK (CA/CE/CR) when MSH-15 asks for it, then, for a committed message,
    the application ACK (AA/AE/AR) when MSH-16 asks for it; ``build(code, errors)``
    writes one. MLLP answers every frame, so a message that asks for neither still
    gets its accept ACK.
    """
    mode = enhanced_mode(msh)
    if mode is None:
        return [build(ack_code, errors)]
    accept, application = mode
    commit = commit_code(ack_code, errors)
    committed = commit == "CA"
    acks = []
    if _wanted(accept, committed):
        acks.append(build(commit, () if committed else errors))
    if committed and _wanted(application, ack_code == "AA"):
        acks.append(build(ack_code, errors))
    return acks or [build(commit, () if committed else errors)]
