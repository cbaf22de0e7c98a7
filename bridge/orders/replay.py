"""Exact resends: the message fingerprint and the cache of recent ACKs.

Senders that time out resend, and under load that becomes a flood. An exact
resend (same MSH-3, MSH-4, MSH-10 and the same content) is answered with the
original ACK and changes nothing. It has to be cheap, so the fingerprint is
taken from the raw bytes (no charset decoding, no tokenizing, no mapping),
and recently accepted messages are answered from memory without touching the
store. The store stays the authority: every write job checks the message log
again (bridge.orders.apply), so the cache is only a shortcut and may forget.

"The same content" means the same bytes once line ends are normalised (CR,
LF and CRLF are one segment end) and MSH-7 is left out: interface engines
restamp the message time when they retry.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from bridge.hl7 import read_header_bytes

_FRAME_JUNK = b"\x0b\x1c \t\r\n"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ReplayKey:
    """MSH-3.1, MSH-4.1 and MSH-10: how a sender names one message."""

    application: str
    facility: str
    control_id: str


def content_hash(payload: bytes) -> str:
    """The hash of a message's content: line ends normalised, MSH-7 left out."""
    data = payload.strip(_FRAME_JUNK)
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    data = _one_cr_per_run(data)
    first, sep, rest = data.partition(b"\r")
    if first.startswith(b"MSH") and len(first) > 3:
        fields = first.split(first[3:4])
        if len(fields) > 6:
            fields[6] = b""  # MSH-7: split index 6 (MSH-1 is the separator itself)
        first = first[3:4].join(fields)
    return hashlib.blake2b(first + sep + rest, digest_size=16).hexdigest()


def _one_cr_per_run(data: bytes) -> bytes:
    """Every run of CR and LF as one CR (what the regex ``[\\r\\n]+`` -> CR did).

    Split and join instead of a regex: the same bytes, but the interpreter lock is
    held a few milliseconds on a 4 MB frame instead of tens (this runs in a worker
    thread beside the event loop, which needs the lock to answer others).
    """
    parts = data.replace(b"\n", b"\r").split(b"\r")
    if len(parts) == 1:
        return data
    body = b"\r".join(part for part in parts if part)
    if not body:
        return b"\r"
    return (b"" if parts[0] else b"\r") + body + (b"" if parts[-1] else b"\r")


def replay_key(payload: bytes) -> ReplayKey | None:
    """The message's key, read from its MSH alone; None without MSH or MSH-10."""
    header = read_header_bytes(payload)
    if header is None or not header.value(10):
        return None
    return ReplayKey(header.value(3), header.value(4), header.value(10))


class RecentAcks:
    """The ACKs of the most recently accepted messages, by key (bounded, oldest out).

    Used from the event loop only.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[ReplayKey, tuple[str, bytes]] = OrderedDict()
        self.hits = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: ReplayKey) -> tuple[str, bytes] | None:
        """(content hash, ACK) of the accepted message with this key, if remembered."""
        return self._entries.get(key)

    def put(self, key: ReplayKey, digest: str, ack: bytes) -> None:
        if self._size <= 0:
            return
        # Only the first accepted message of a key counts (later ones are replays).
        if key in self._entries:
            return
        self._entries[key] = (digest, ack)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
