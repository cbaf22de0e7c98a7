"""MLLP framing without I/O: bytes in, frames out.

A frame is ``VT payload FS CR``. Real senders bend this, so the decoder:

- drops anything outside a frame (a UTF-8 BOM, CR/LF, noise) and counts it;
- ends a frame at FS whether or not CR follows;
- treats a VT inside a frame as the start of a new frame: the unfinished one
  was cut off, and merging two messages would be worse than losing one
  (its sender gets no ACK and resends);
- never holds more than ``max_frame_bytes`` of one frame: past that, it keeps
  only the head (enough to read MSH and answer) and skips to FS, so one huge
  message costs neither memory nor the connection.

Payloads stay bytes; decoding belongs to MSH-18 (see charset.py).
"""

from __future__ import annotations

from dataclasses import dataclass

START, END, CR = b"\x0b", b"\x1c", b"\x0d"
HEAD_BYTES = 8192  # of an oversize frame; MSH is far shorter


@dataclass(frozen=True, slots=True)
class Frame:
    payload: bytes


@dataclass(frozen=True, slots=True)
class OversizeFrame:
    head: bytes  # the first bytes of the payload, at most HEAD_BYTES
    size: int  # the full payload size


class FrameDecoder:
    def __init__(self, max_frame_bytes: int) -> None:
        if max_frame_bytes < 1:
            raise ValueError("max_frame_bytes must be positive")
        self._max = max_frame_bytes
        self._head_limit = min(HEAD_BYTES, max_frame_bytes)
        self._buf = bytearray()
        self._size = 0
        self._in_frame = False
        self._oversize = False
        self._after_end = False  # the CR that follows FS is framing, not noise
        self._discarded = 0

    @property
    def discarded(self) -> int:
        """Bytes dropped so far outside frames or in cut-off frames."""
        return self._discarded

    @property
    def in_frame(self) -> bool:
        """Whether a frame has begun (VT seen) and not yet ended."""
        return self._in_frame

    @property
    def buffered(self) -> int:
        """Bytes held for the unfinished frame (at most max_frame_bytes)."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame | OversizeFrame]:
        out: list[Frame | OversizeFrame] = []
        i, n = 0, len(data)
        while i < n:
            if not self._in_frame:
                if self._after_end:
                    self._after_end = False
                    if data[i] == CR[0]:
                        i += 1
                        continue
                start = data.find(START, i)
                if start == -1:
                    self._discarded += n - i
                    break
                self._discarded += start - i
                self._begin()
                i = start + 1
                continue
            end = data.find(END, i)
            stop = n if end == -1 else end
            restart = data.find(START, i, stop)
            if restart != -1:
                self._discarded += self._size + (restart - i) + 1
                self._begin()
                i = restart + 1
                continue
            self._append(data[i:stop])
            if end == -1:
                break
            out.append(self._finish())
            i = end + 1
        return out

    def _begin(self) -> None:
        self._buf.clear()
        self._size = 0
        self._in_frame = True
        self._oversize = False

    def _append(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._oversize:
            return
        if self._size <= self._max:
            self._buf += chunk
            return
        self._oversize = True
        if len(self._buf) >= self._head_limit:
            del self._buf[self._head_limit:]
        else:
            self._buf += chunk[:self._head_limit - len(self._buf)]

    def _finish(self) -> Frame | OversizeFrame:
        payload = bytes(self._buf)
        self._buf.clear()
        self._in_frame = False
        self._after_end = True
        if self._oversize:
            return OversizeFrame(head=payload, size=self._size)
        return Frame(payload)


# Between the messages of one reply (the accept and the application ACK of enhanced
# acknowledgement mode): the end of one frame and the start of the next, which no
# HL7 message holds, so a reply of several messages is still one bytes value.
FRAME_BREAK = END + CR + START


def join_messages(messages: list[bytes]) -> bytes:
    """Several messages as one reply; ``encode_frames`` sends each as its own frame."""
    return FRAME_BREAK.join(messages)


def encode_frames(reply: bytes) -> bytes:
    """A reply (one message, or several joined by ``join_messages``) as MLLP frames."""
    return b"".join(encode_frame(m) for m in reply.split(FRAME_BREAK))


def encode_frame(payload: bytes) -> bytes:
    """Wrap a payload in VT ... FS CR. VT or FS inside it would break the framing."""
    if START in payload or END in payload:
        raise ValueError("an MLLP payload must not contain VT (0x0B) or FS (0x1C)")
    return START + payload + END + CR
