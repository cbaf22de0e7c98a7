"""Fuzz the MLLP framer (bridge/hl7/mllp.py FrameDecoder).

Input: byte 0 picks ``max_frame_bytes`` (1..64, so the oversize path is
reached), byte 1 the chunking of the stream and, for odd values, a smaller
oversize head (``HEAD_BYTES``); the rest is the byte stream a peer sends.

Contract checked: ``feed`` never raises; every Frame payload holds no VT or FS
and fits the limit; every OversizeFrame is over the limit and keeps at most the
head; and the result does not depend on how the stream is cut into reads:
the frames, the discarded count and what is left over equal those of a plain
byte-at-a-time model of the documented framing rules.

    python fuzz/mllp_framer.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import Finding, instrumented, main

with instrumented(__name__):
    from bridge.hl7 import mllp
    from bridge.hl7.mllp import Frame, FrameDecoder, OversizeFrame

VT, FS, CR = 0x0B, 0x1C, 0x0D


class Model:
    """The framing rules of the module docstring, one byte at a time."""

    def __init__(self, max_bytes: int, head_limit: int) -> None:
        self.max = max_bytes
        self.head_limit = head_limit
        self.in_frame = False
        self.after_end = False
        self.payload = bytearray()
        self.discarded = 0
        self.out: list[Frame | OversizeFrame] = []

    def feed(self, data: bytes) -> None:
        for byte in data:
            if not self.in_frame:
                if self.after_end:
                    self.after_end = False
                    if byte == CR:
                        continue
                if byte == VT:
                    self.in_frame, self.payload = True, bytearray()
                else:
                    self.discarded += 1
            elif byte == VT:  # a cut-off frame: its VT and payload are dropped
                self.discarded += len(self.payload) + 1
                self.payload = bytearray()
            elif byte == FS:
                payload = bytes(self.payload)
                if len(payload) > self.max:
                    self.out.append(OversizeFrame(head=payload[:self.head_limit],
                                                  size=len(payload)))
                else:
                    self.out.append(Frame(payload))
                self.in_frame, self.after_end = False, True
            else:
                self.payload.append(byte)


def _chunks(stream: bytes, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    out, i = [], 0
    while i < len(stream):
        size = rng.choice((1, 1, 2, 3, 7, 16, 64, len(stream)))
        out.append(stream[i:i + size])
        i += size
    return out


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    max_bytes = 1 + data[0] % 64
    head_bytes = mllp.HEAD_BYTES
    if data[1] & 1:
        mllp.HEAD_BYTES = 1 + data[0] % 7  # the head-limit path, without 8 KB inputs
    try:
        decoder = FrameDecoder(max_bytes)
    finally:
        mllp.HEAD_BYTES = head_bytes
    head_limit = min(1 + data[0] % 7 if data[1] & 1 else head_bytes, max_bytes)
    stream = data[2:]
    model = Model(max_bytes, head_limit)
    model.feed(stream)
    frames: list[Frame | OversizeFrame] = []
    for chunk in _chunks(stream, data[1]):
        frames.extend(decoder.feed(chunk))
    for frame in frames:
        if isinstance(frame, Frame):
            if b"\x0b" in frame.payload or b"\x1c" in frame.payload:
                raise Finding("frame-delimiter", "a frame's payload holds VT or FS")
            if len(frame.payload) > max_bytes:
                raise Finding("frame-limit",
                              f"a {len(frame.payload)}-byte frame passed a {max_bytes}-byte limit")
        elif isinstance(frame, OversizeFrame):
            if frame.size <= max_bytes:
                raise Finding("oversize-size",
                              f"a {frame.size}-byte frame was called oversize ({max_bytes})")
            if len(frame.head) > head_limit or len(frame.head) > frame.size:
                raise Finding("oversize-head", "an oversize frame kept more than its head")
        else:
            raise Finding("frame-type", f"feed returned {type(frame).__name__}")
    if frames != model.out:
        raise Finding("model-frames", f"frames differ from the model: {frames!r} != {model.out!r}")
    if decoder.discarded != model.discarded:
        raise Finding("model-discarded",
                      f"discarded {decoder.discarded}, the model {model.discarded}")
    # What is still buffered must frame the same way once FS arrives.
    tail = decoder.feed(b"\x1c")
    model.feed(b"\x1c")
    if tail != model.out[len(frames):]:
        raise Finding("model-tail", f"the unfinished frame differs from the model: {tail!r}")


if __name__ == "__main__":
    main(one_input)
