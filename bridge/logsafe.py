"""Peer-supplied text made safe to put in a log line.

Whatever a peer sends (a calling AE title, an HL7 field, a PDU byte) may hold a
line feed that forges a second log line, terminal escapes, or a megabyte of
text. ``shown`` returns it on one line, every non-printable character escaped,
cut to a bound. It is a base module: the DICOM and the HL7 side both use it.
"""

from __future__ import annotations

ELLIPSIS = "…"


def _escape_char(ch: str) -> str:
    if ch == "\\":
        # Escaped too, so that "\n" in a log line always means the escape, never
        # two characters the peer sent to look like one.
        return "\\\\"
    if ch.isprintable():
        return ch
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_byte(byte: int) -> str:
    if byte == 0x5C:
        return "\\\\"
    if 0x20 <= byte < 0x7F:
        return chr(byte)
    return f"\\x{byte:02x}"


def shown(value: str | bytes, limit: int = 64) -> str:
    """``value`` for a log line: control and other non-printable characters
    (line feeds, ESC, DEL, C1, U+2028, bidi overrides ...) escaped as ``\\xNN``,
    ``\\uNNNN`` or ``\\UNNNNNNNN``, a backslash as ``\\\\``; the result is at most
    ``limit`` characters, ending in "…" when cut. Bytes are shown as ASCII with
    every other byte escaped (their character set is the peer's claim, not ours).

    Only the characters that can be shown are escaped (at most ``limit`` of the
    input), so a huge value costs no more than a short one.
    """
    if limit < 1:
        raise ValueError("limit must be at least 1")
    pieces = (map(_escape_byte, value) if isinstance(value, bytes)
              else map(_escape_char, value))
    out: list[str] = []
    length = 0
    # Every input element gives at least one character, so the loop stops after
    # at most ``limit`` + 1 of them, whatever the input's size.
    for piece in pieces:
        if length + len(piece) > limit:
            break
        out.append(piece)
        length += len(piece)
    else:
        return "".join(out)
    # Cut: make room for the ellipsis without splitting an escape sequence.
    while out and length + len(ELLIPSIS) > limit:
        length -= len(out.pop())
    return "".join(out) + ELLIPSIS
