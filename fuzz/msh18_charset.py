"""Fuzz MSH-18 decoding (bridge/hl7/charset.py decode_frame, codec_for, read_msh18)
and the steps of a frame's way to its ACK that run before any safety net
(bridge/orders/ingest.py ``Ingest.process``: the resend key and content hash,
the decode, reading the header, building and encoding the ACK).

Input: one MLLP frame payload, as bytes (VT and FS are dropped: the framer
never passes them on).

Contract checked:
- ``decode_frame`` returns text in a known codec or raises CharsetError, with the
  shipped defaults (``mllp.default_charset``, ``mllp.charset_aliases``) and with
  Latin-1 as the default;
- ``read_msh18`` / ``codec_for`` agree with it: CharsetError is their only answer;
- ``replay_key``, ``content_hash``, ``read_header_bytes`` and ``read_header`` never
  raise; a readable header gets an ACK that ``encode_text`` can encode in the
  frame's codec (ASCII when the frame could not be decoded);
- ``dicom_charset_for`` of the frame's codec is a term or CharsetError.

    python fuzz/msh18_charset.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import codecs
import sys
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import Finding, instrumented, main

with instrumented(__name__):
    from bridge.hl7.ack import ErrorDetail, build_ack, read_header, read_header_bytes
    from bridge.hl7.charset import (
        CharsetError,
        codec_for,
        decode_frame,
        dicom_charset_for,
        encode_text,
        read_msh18,
    )
    from bridge.hl7.message import Segment
    from bridge.hl7.settings import MllpSettings
    from bridge.orders.replay import content_hash, replay_key

SETTINGS = MllpSettings()
DEFAULTS = ((SETTINGS.default_charset, SETTINGS.charset_aliases), ("iso8859-1", {}))
NOW = datetime(2026, 11, 28, 9, 49, 56)


def _ack(header: Segment | None, code: str, text: str, codec: str) -> None:
    if header is None:
        return
    error = ErrorDetail(code=103, location="MSH^1^18^1^1", text=text)
    ack = build_ack(header, code, errors=[error], control_id="ACK1", now=NOW)
    encoded = encode_text(ack, codec)
    if b"\x0b" in encoded or b"\x1c" in encoded:
        raise Finding("ack-unframeable",
                      f"the ACK in {codec} holds VT or FS: MLLP cannot frame it")


def one_input(data: bytes) -> None:
    # What the framer hands on: a payload never holds VT or FS (fuzz/mllp_framer.py).
    data = data.replace(b"\x0b", b"").replace(b"\x1c", b"")
    replay_key(data)
    content_hash(data)
    msh18 = read_msh18(data)
    for default, aliases in DEFAULTS:
        try:
            codec: str | None = codec_for(msh18, default=default, aliases=aliases)
        except CharsetError:
            codec = None
        try:
            decoded = decode_frame(data, default=default, aliases=aliases)
        except CharsetError as exc:
            _ack(read_header_bytes(data), "AR", str(exc), "ascii")
            continue
        if codec is None:
            raise Finding("codec-disagree", f"decode_frame took MSH-18 {msh18!r} as "
                                            f"{decoded.codec}, which codec_for refuses")
        if not decoded.msh18.startswith(msh18):
            raise Finding("msh18-disagree",
                          f"read_msh18 gave {msh18!r}, decode_frame {decoded.msh18!r}")
        codecs.lookup(decoded.codec)
        try:
            dicom_charset_for(decoded.codec)
        except CharsetError:
            pass
        _ack(read_header(decoded.text), "AA", "accepted", decoded.codec)


if __name__ == "__main__":
    main(one_input, dictionary="hl7")
