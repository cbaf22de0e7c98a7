"""Character sets: HL7 MSH-18 (table 0211) to Python codecs and DICOM terms.

Frames arrive as bytes. MSH-18 is read from the raw bytes first (the MSH
segment is ASCII in every charset HL7 v2 uses over MLLP), then the whole frame
is decoded strictly with the codec it names. A frame that does not decode is
rejected with a CharsetError rather than guessed at: a silently garbled
patient name on a modality console is worse than a NAK the sender can see.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from dataclasses import dataclass

BOM = b"\xef\xbb\xbf"

# HL7 table 0211 (v2.3.1 - v2.8). "UNICODE" is the deprecated pre-v2.5 name;
# it cannot mean UTF-16 over MLLP (UTF-16 text contains 0x0B/0x1C bytes), and
# the senders that still send it send UTF-8.
_TABLE_0211: dict[str, str] = {
    "ASCII": "ascii",
    "ISO IR6": "ascii",
    **{f"8859/{n}": f"iso8859-{n}" for n in range(1, 10)},
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UNICODE": "utf-8",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
}

# Python codec (canonical codecs.lookup name) -> DICOM (0008,0005) defined term.
_DICOM_TERMS: dict[str, str | None] = {
    "ascii": None,
    "iso8859-1": "ISO_IR 100",
    "iso8859-2": "ISO_IR 101",
    "iso8859-3": "ISO_IR 109",
    "iso8859-4": "ISO_IR 110",
    "iso8859-5": "ISO_IR 144",
    "iso8859-6": "ISO_IR 127",
    "iso8859-7": "ISO_IR 126",
    "iso8859-8": "ISO_IR 138",
    "iso8859-9": "ISO_IR 148",
    "utf-8": "ISO_IR 192",
    "iso2022_jp": "ISO 2022 IR 87",
    "iso2022_jp_2": "ISO 2022 IR 159",
    "gb18030": "GB18030",
    "euc_kr": "ISO 2022 IR 149",
}

# ISO 2022 shifted runs (ESC-designated multi-byte sets, SO..SI) use bytes
# 0x21-0x7E, which include "|", "^" and "~". They are cut out before MSH is
# split, so a Japanese sending-facility name cannot shift the field count.
_SHIFTED = re.compile(rb"\x1b\([BJ]|\x1b.*?(?:\x1b\([BJ]|\Z)|\x0e.*?(?:\x0f|\Z)", re.S)
_SEGMENT_END = re.compile(rb"[\r\n]")


class CharsetError(ValueError):
    """MSH-18 names no usable charset, or the frame's bytes are not valid in it."""

    def __init__(self, message: str, *, msh18: str = "") -> None:
        super().__init__(message)
        self.msh18 = msh18


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    text: str
    codec: str  # canonical Python codec name, e.g. "iso8859-1"
    msh18: str  # MSH-18 as sent, repetitions joined by "~" ('' when absent)


def _canonical(codec: str) -> str:
    try:
        return codecs.lookup(codec).name
    except LookupError:
        raise CharsetError(f"unknown Python codec {codec!r}") from None


# Double-byte sets whose trail bytes include "|", "^", "~" and "\\" (Big5 A5 7C is 四,
# GB 18030 81 7C is 亅): in MSH-3..17 such a character would shift MSH-18 when the
# line is split as bytes, so the line is also read in each of them (below).
_TRAIL_BYTE_CODECS = ("gb18030", "big5")


def _msh18_repetitions(frame: bytes, aliases: Mapping[str, str] | None = None) -> list[str]:
    """Every repetition of MSH-18 (none when absent), independent of the bytes before it.

    The MSH line is split as bytes, which is right for every single-byte set, UTF-8
    (no byte of a multi-byte character is below 0x80) and ISO 2022 (shifted runs
    are cut out first). A line with bytes above 0x7F may instead be in a set whose
    trail bytes include the separators (GB 18030, Big5, or a site alias such as
    Shift_JIS): when the line decodes in one of those, split as characters, and its
    MSH-18 then names that very set, that reading wins.
    """
    values = _msh18_split(frame)
    line = _msh_line(frame)
    if line is None or line.isascii():
        return values
    candidates: dict[str, None] = dict.fromkeys(_TRAIL_BYTE_CODECS)
    for target in (aliases or {}).values():
        name = _safe_canonical(target)
        if name is not None:
            candidates[name] = None
    for codec in candidates:
        if codec in ("utf-8", "iso2022_jp", "iso2022_jp_2"):
            continue
        try:
            text = line.decode(codec)
        except (UnicodeDecodeError, LookupError):
            continue
        named = _msh18_of_text(text)
        if not named:
            continue
        try:
            if codec_for(named[0], default="ascii", aliases=aliases or {}) == codec:
                return named
        except CharsetError:
            continue
    return values


def _safe_canonical(codec: str) -> str | None:
    try:
        return codecs.lookup(codec).name
    except LookupError:
        return None


def _msh_line(frame: bytes) -> bytes | None:
    data = frame.lstrip(b"\x0b\r\n \t")
    if data.startswith(BOM):
        data = data[len(BOM):].lstrip(b"\r\n \t")
    if not data.startswith(b"MSH") or len(data) < 8:
        return None
    match = _SEGMENT_END.search(data)
    return data[:match.start()] if match else data


def _msh18_of_text(line: str) -> list[str]:
    """MSH-18's repetitions from a decoded MSH line (split as characters)."""
    sep = line[3:4]
    fields = [line[:3], *line[4:].split(sep)]
    if len(fields) < 18 or not sep or sep.isalnum() or sep.isspace():
        return []
    repetition = fields[1][1:2]
    values = fields[17].split(repetition) if repetition else [fields[17]]
    return [v.strip() for v in values]


def _msh18_split(frame: bytes) -> list[str]:
    """MSH-18's repetitions, the MSH line split as bytes."""
    data = frame.lstrip(b"\x0b\r\n \t")
    if data.startswith(BOM):
        data = data[len(BOM):].lstrip(b"\r\n \t")
    if not data.startswith(b"MSH") or len(data) < 8:
        return []
    match = _SEGMENT_END.search(data)
    line = data[:match.start()] if match else data
    # MSH-1 is read before the shifted runs are cut: an ESC or SO there would
    # take the whole line with it. A control character is no field separator
    # (bridge.hl7.message refuses it too: the frame is not HL7).
    sep = line[3:4]
    if sep.isalnum() or sep.isspace() or sep < b" " or sep == b"\x7f":
        return []
    rest = line[4:]
    if b"\x1b" in rest or b"\x0e" in rest:
        rest = _SHIFTED.sub(b"", rest)
    fields = [line[:3], *rest.split(sep)]
    # fields[0] is "MSH" and fields[1] is MSH-2, so MSH-n sits at index n-1.
    if len(fields) < 18:
        return []
    repetition = fields[1][1:2]
    values = fields[17].split(repetition) if repetition else [fields[17]]
    return [v.decode("latin-1").strip() for v in values]


def read_msh18(frame: bytes) -> str:
    """MSH-18 (first repetition, stripped) read from the raw bytes; '' if absent."""
    values = _msh18_repetitions(frame)
    return values[0] if values else ""


def codec_for(msh18: str, *, default: str, aliases: Mapping[str, str]) -> str:
    """The canonical Python codec for an MSH-18 value.

    Site aliases win over table 0211 (both compared case-insensitively);
    an empty value means ``default``. Raises CharsetError for anything else.
    """
    value = " ".join(msh18.split())
    key = value.upper()
    for alias, codec in aliases.items():
        if " ".join(alias.split()).upper() == key:
            try:
                return _canonical(codec)
            except CharsetError:
                raise CharsetError(
                    f"charset alias {alias!r} maps to unknown Python codec {codec!r}",
                    msh18=msh18) from None
    if not value:
        try:
            return _canonical(default)
        except CharsetError:
            raise CharsetError(f"default charset {default!r} is not a known Python codec",
                               msh18=msh18) from None
    if key in _TABLE_0211:
        return _TABLE_0211[key]
    if key.startswith("UNICODE UTF-"):
        raise CharsetError(f"MSH-18 {value!r}: UTF-16/UTF-32 cannot be framed by MLLP",
                           msh18=msh18)
    raise CharsetError(
        f"MSH-18 {value!r} is not an HL7 table 0211 character set and has no configured alias",
        msh18=msh18)


def _codec_of(values: list[str], default: str, aliases: Mapping[str, str]) -> str:
    codec = codec_for(values[0] if values else "", default=default, aliases=aliases)
    # ISO 2022 code extension (MSH-20): further repetitions name the sets
    # switched to by escape sequences, often after an empty first one
    # ("~ISO IR87"). Only the ISO 2022 codec can read such text.
    extensions = {" ".join(v.split()).upper() for v in values[1:]}
    if "ISO IR159" in extensions:
        return "iso2022_jp_2"
    if "ISO IR87" in extensions and codec != "iso2022_jp_2":
        return "iso2022_jp"
    return codec


def text_codec(text: str, *, default: str, aliases: Mapping[str, str]) -> str:
    """The codec MSH-18 of already decoded ``text`` names (a message pasted into the
    console): the one its ``\\Xhh\\`` bytes are in. Raises CharsetError like decode_frame."""
    line = text.lstrip("\ufeff \t\r\n").split("\r", 1)[0].split("\n", 1)[0]
    return _codec_of(_msh18_of_text(line) if line.startswith("MSH") else [], default, aliases)


def decode_frame(frame: bytes, *, default: str, aliases: Mapping[str, str]) -> DecodedFrame:
    """Decode a frame strictly in the charset its MSH-18 names (a UTF-8 BOM is dropped)."""
    values = _msh18_repetitions(frame, aliases)
    msh18 = "~".join(values)
    codec = _codec_of(values, default, aliases)
    skipped = 0
    start = len(frame) - len(frame.lstrip(b"\x0b\r\n \t"))
    if frame.startswith(BOM, start):
        skipped = start + len(BOM)
    try:
        text = frame[skipped:].decode(codec)
    except UnicodeDecodeError as exc:
        # Offset and charset only: the bytes themselves may be patient data.
        source = f"MSH-18 {msh18!r}" if msh18 else f"MSH-18 is empty, default {default!r}"
        raise CharsetError(
            f"byte offset {skipped + exc.start} is not valid {codec} ({source})",
            msh18=msh18) from None
    return DecodedFrame(text=text, codec=codec, msh18=msh18)


def dicom_charset_for(codec: str) -> str | None:
    """The DICOM Specific Character Set term for a codec; None for ASCII.

    Raises CharsetError for codecs DICOM has no term for (e.g. cp1252, big5):
    text decoded from them must be re-encoded in a DICOM character set.
    """
    name = _canonical(codec)
    if name not in _DICOM_TERMS:
        raise CharsetError(f"Python codec {name!r} has no DICOM Specific Character Set term")
    return _DICOM_TERMS[name]


def encode_text(text: str, codec: str) -> bytes:
    """Encode an ACK in the incoming message's own charset.

    Characters the charset cannot hold become "?". That is acceptable only
    because the ACK's free text is ours (error descriptions), and every value
    echoed from the message was decoded from this same charset. Never use this
    for patient data.
    """
    return text.encode(_canonical(codec), errors="replace")
