"""A small, fast, read-only view of an HL7 v2 message in ER7 encoding.

Why not hl7apy on the hot path: hl7apy builds a full element tree with
reference lookups and costs 5-10 ms per ORM on this hardware (see
docs/operations.md, "Throughput"). The ingest path only needs to address
fields by position, so this tokenizer splits the text once (about 50 us) and
hands out decoded strings. hl7apy is still used where its structure knowledge
pays off (validating mapping paths at load time, `mapping explain`).

Positions are 1-based, as in HL7 (``PID-3.4.1``). For MSH, field 1 is the
field separator itself and field 2 the encoding characters, so ``MSH-9`` means
the same here as in the standard.

Escape sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\.br\\ \\Xhh\\``, and the
ISO 2022 switches ``\\Cxxyy\\ \\Mxxyyzz\\``) are decoded at the sub-component
level, after splitting, which is the only order that keeps an escaped delimiter
from splitting a value; a switch holds to the end of its sub-component.

``parse_message(text, limits)`` also bounds the work one message can cause
(segments, fields, repetitions, components): the counts are taken with
``str.count`` before anything is split, so a message that breaks a limit costs
one pass over its text, not the millions of strings it would split into.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

# A sub-component is a str; a component a tuple of sub-components; a
# repetition a tuple of components; a field a tuple of repetitions.
Component = tuple[str, ...]
Repetition = tuple[Component, ...]
Field = tuple[Repetition, ...]

_LINE = re.compile(r"[^\r\n]+")  # a segment: CR, LF or CRLF end it; blank lines vanish
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")
# MSH is read for its header fields only (MSH-1..MSH-21 and a few more from v2.7):
# splitting more of a hostile MSH line would cost time and memory for nothing.
_HEADER_FIELDS = 32


class HL7ParseError(ValueError):
    """The text is not an HL7 v2 ER7 message the bridge can read.

    ``location`` (an ERL such as ``MSH^1^2``, or "") and ``code`` (HL7 table 0357)
    say what to put in the ERR segment when the header is still readable enough to
    answer.
    """

    def __init__(self, text: str, *, location: str = "", code: int = 100) -> None:
        super().__init__(text)
        self.location = location
        self.code = code


class HL7LimitError(HL7ParseError):
    """A readable message with more structure than ``Limits`` allows.

    Not a parse failure: the text says which limit and where, and the sender
    must change the message (AE), not resend it.
    """


@dataclass(frozen=True, slots=True)
class Limits:
    """How much structure one message may have (the ``mllp.max_*`` settings).

    ``components`` bounds both the components of one repetition and the
    sub-components of one component.
    """

    segments: int
    fields: int
    repetitions: int
    components: int


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    # The codec the frame was decoded with (MSH-18): the bytes of ``\Xhh...\`` are
    # decoded in it. Not a delimiter; ISO 8859-1 when the caller does not say.
    codec: str = "latin-1"

    @property
    def encoding_characters(self) -> str:
        return self.component + self.repetition + self.escape + self.subcomponent


@dataclass(slots=True)
class Segment:
    """One segment: its id and its fields, split but not yet escape-decoded."""

    name: str
    raw_fields: list[str]  # raw_fields[0] is the segment id; for MSH, [1] is MSH-2
    delimiters: Delimiters
    _cache: dict[int, Field] = field(default_factory=dict, repr=False)

    def field_count(self) -> int:
        # For MSH, MSH-1 (the separator) is not in raw_fields but counts as a field.
        return len(self.raw_fields) if self.name == "MSH" else len(self.raw_fields) - 1

    def raw(self, position: int) -> str:
        """The field's text as sent (escape sequences kept)."""
        if self.name == "MSH":
            if position == 1:
                return self.delimiters.field
            index = position - 1
        else:
            index = position
        if index < 1 or index >= len(self.raw_fields):
            return ""
        return self.raw_fields[index]

    def field(self, position: int) -> Field:
        """The field split into repetitions, components and decoded sub-components."""
        cached = self._cache.get(position)
        if cached is not None:
            return cached
        text = self.raw(position)
        d = self.delimiters
        if self.name == "MSH" and position in (1, 2):
            value: Field = (((text,),),)
        elif text == "":
            value = ()
        elif d.escape not in text:
            # The common case: nothing to decode, so no per-value unescape call.
            sub_sep = d.subcomponent
            value = tuple(
                tuple(tuple(comp.split(sub_sep)) for comp in rep.split(d.component))
                for rep in text.split(d.repetition)
            )
        else:
            value = tuple(
                tuple(
                    tuple(unescape(sub, d) for sub in comp.split(d.subcomponent))
                    for comp in rep.split(d.component)
                )
                for rep in text.split(d.repetition)
            )
        self._cache[position] = value
        return value

    def value(self, position: int, component: int = 1, subcomponent: int = 1,
              repetition: int = 1) -> str:
        """One decoded value by position; empty string when absent."""
        reps = self.field(position)
        if repetition > len(reps):
            return ""
        comps = reps[repetition - 1]
        if component > len(comps):
            return ""
        subs = comps[component - 1]
        if subcomponent > len(subs):
            return ""
        return subs[subcomponent - 1]


@dataclass(slots=True)
class Message:
    """A tokenized HL7 v2 message."""

    segments: list[Segment]
    delimiters: Delimiters

    @property
    def msh(self) -> Segment:
        return self.segments[0]

    @property
    def message_type(self) -> str:
        """``ORM^O01`` (message code ^ trigger event, structure left out)."""
        code = self.msh.value(9, 1)
        event = self.msh.value(9, 2)
        return f"{code}^{event}" if event else code

    @property
    def control_id(self) -> str:
        return self.msh.value(10)

    @property
    def version(self) -> str:
        return self.msh.value(12)

    def first(self, name: str) -> Segment | None:
        for seg in self.segments:
            if seg.name == name:
                return seg
        return None

    def all(self, name: str) -> list[Segment]:
        return [seg for seg in self.segments if seg.name == name]


def parse_message(text: str, limits: Limits | None = None, *,
                  codec: str = "latin-1") -> Message:
    """Tokenize ER7 text. Accepts CR, LF or CRLF segment ends and blank lines.

    ``codec`` is the one the frame was decoded with (``DecodedFrame.codec``): the
    bytes of ``\\Xhh...\\`` escapes are decoded in it. Raises HL7ParseError when
    the text does not start with a usable MSH, and HL7LimitError (a subclass) when
    ``limits`` are given and the message breaks one.
    """
    text = text.lstrip("\ufeff \t\r\n\x0b")
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7ParseError("message does not start with an MSH segment")
    delims = _delimiters(text)
    if codec != delims.codec:
        delims = replace(delims, codec=codec)
    sep = delims.field
    segments: list[Segment] = []
    seen: dict[str, int] = {}
    lines = 0
    for match in _LINE.finditer(text):
        line = match.group()
        name = line.split(sep, 1)[0]
        lines += 1  # white-space lines count too: each costs a turn of this loop
        if limits is not None and lines > limits.segments:
            where = f"{name}^{seen.get(name, 0) + 1}" if _SEGMENT_ID.match(name) else ""
            raise HL7LimitError(
                f"the message has more than {limits.segments} segments (mllp.max_segments)",
                location=where, code=100)
        if not line.strip():
            continue
        if not _SEGMENT_ID.match(name):
            raise HL7ParseError(f"segment {len(segments) + 1} has no valid segment id")
        seq = seen[name] = seen.get(name, 0) + 1
        if limits is not None:
            _check_line(line, name, seq, delims, limits)
        segments.append(Segment(name=name, raw_fields=line.split(sep), delimiters=delims))
    return Message(segments=segments, delimiters=delims)


def _delimiters(text: str) -> Delimiters:
    """MSH-1 and MSH-2 of a text that starts with "MSH"; HL7ParseError when unusable.

    The five delimiters must differ from each other: with two the same (``MSH|^^^^|``)
    every later field would split wrongly, and the message would be rejected for
    whatever that happened to break, far from the real problem. A control
    character (ESC, SO, NUL ...) is no delimiter either: ESC and SO start ISO 2022
    shifted text, and an ACK written with one could not be read back.
    """
    sep = text[3]
    if _unusable_delimiter(sep):
        raise HL7ParseError("MSH-1 (field separator) is a letter, digit, white space or "
                            "control character", location="MSH^1^1", code=102)
    # MSH-2 is up to 4 characters (5 with the v2.7 truncation character);
    # it ends at the next field separator.
    end = text.find(sep, 4)
    enc = text[4:end] if end != -1 else ""
    if len(enc) < 4 or any(_unusable_delimiter(c) for c in enc):
        # A field separator that is one of ^~\& usually means MSH-1 is the mistake.
        hint = (f"; MSH-1 (field separator) is {sep!r}, one of the usual encoding "
                f"characters" if sep in Delimiters().encoding_characters else "")
        raise HL7ParseError(
            f"MSH-2 (encoding characters) must be four characters that are not letters, "
            f"digits, white space or control characters (component, repetition, escape, "
            f"sub-component, e.g. ^~\\&); got {enc[:8]!r}{hint}", location="MSH^1^2",
            code=102)
    if len(set(sep + enc[:4])) != 5:
        raise HL7ParseError(
            f"MSH-2 (encoding characters) {enc[:4]!r} must be four different characters, "
            f"none of them the field separator {sep!r} (e.g. ^~\\&)",
            location="MSH^1^2", code=102)
    return Delimiters(field=sep, component=enc[0], repetition=enc[1],
                      escape=enc[2], subcomponent=enc[3])


def _unusable_delimiter(char: str) -> bool:
    return char.isalnum() or char.isspace() or not char.isprintable()


def _fallback_delimiters(sep: str) -> Delimiters:
    """``^~\\&`` with the field separator ``sep``; when ``sep`` is one of those four,
    "|" takes its place, so that the five delimiters differ (an ACK written with
    them parses back)."""
    chars = Delimiters().encoding_characters.replace(sep, "|")
    return Delimiters(field=sep, component=chars[0], repetition=chars[1], escape=chars[2],
                      subcomponent=chars[3])


def parse_header(line: str, *, standard_delimiters: bool = False) -> Segment:
    """The MSH segment alone, from the first line of a message (HL7ParseError if unusable).

    Only the header fields are split, so a hostile MSH line costs no more than a
    normal one. With ``standard_delimiters``, an MSH whose MSH-2 is broken is read
    with ``^~\\&`` instead (and says so in MSH-2), enough to answer it with an
    error: the field separator must still be usable. When the field separator is
    one of ``^~\\&`` itself, "|" stands in for that one.
    """
    line = line.lstrip("\ufeff \t\r\n\x0b")
    if not line.startswith("MSH") or len(line) < 8:
        raise HL7ParseError("message does not start with an MSH segment")
    try:
        delims = _delimiters(line)
    except HL7ParseError as exc:
        if not standard_delimiters or exc.location != "MSH^1^2" or line.find(line[3], 4) == -1:
            raise
        delims = _fallback_delimiters(line[3])
        fields = line.split(delims.field, _HEADER_FIELDS)
        fields[1] = delims.encoding_characters
        return Segment(name="MSH", raw_fields=fields, delimiters=delims)
    return Segment(name="MSH", raw_fields=line.split(delims.field, _HEADER_FIELDS),
                   delimiters=delims)


def _check_line(line: str, name: str, seq: int, d: Delimiters, limits: Limits) -> None:
    """Raise HL7LimitError when one segment line has too many fields, repetitions or
    components. Counting the delimiters of the whole line first settles almost every
    line without splitting it."""
    fields = line.count(d.field) + (1 if name == "MSH" else 0)
    if fields > limits.fields:
        raise HL7LimitError(
            f"segment {name} has {fields} fields; at most {limits.fields} are accepted "
            "(mllp.max_fields)", location=f"{name}^{seq}^{limits.fields + 1}", code=102)
    r, c, s = d.repetition, d.component, d.subcomponent
    most = limits.components
    if (line.count(r) < limits.repetitions and line.count(c) < most
            and line.count(s) < most):
        return
    parts = line.split(d.field)
    # MSH-2 holds each delimiter once as data; MSH-1 is the separator itself.
    first, shift = (2, 1) if name == "MSH" else (1, 0)
    for index in range(first, len(parts)):
        text = parts[index]
        where = f"{name}^{seq}^{index + shift}"
        label = f"{name}-{index + shift}"
        repetitions = text.count(r) + 1
        if repetitions > limits.repetitions:
            raise HL7LimitError(
                f"{label} has {repetitions} repetitions; at most {limits.repetitions} are "
                "accepted (mllp.max_repetitions)", location=where, code=102)
        if text.count(c) < most and text.count(s) < most:
            continue
        for rep_no, rep in enumerate(text.split(r), 1):
            components = rep.count(c) + 1
            if components > most:
                raise HL7LimitError(
                    f"{label} (repetition {rep_no}) has {components} components; at most "
                    f"{most} are accepted (mllp.max_components)",
                    location=f"{where}^{rep_no}", code=102)
            if rep.count(s) < most:
                continue
            for comp_no, comp in enumerate(rep.split(c), 1):
                subcomponents = comp.count(s) + 1
                if subcomponents > most:
                    raise HL7LimitError(
                        f"{label}.{comp_no} (repetition {rep_no}) has {subcomponents} "
                        f"sub-components; at most {most} are accepted (mllp.max_components)",
                        location=f"{where}^{rep_no}^{comp_no}", code=102)


def unescape(text: str, d: Delimiters) -> str:
    """Decode HL7 escape sequences in one sub-component.

    ``\\Xhh...\\`` is decoded in the message's own charset (``d.codec``), and
    consecutive ones together, so a UTF-8 character split over two (``\\XC3\\\\XA9\\``)
    is still one character. Bytes not valid in that charset are kept as sent,
    escape and all: never guessed, never dropped.
    """
    esc = d.escape
    if esc not in text:
        return text
    switches = _switch_points(text, esc)
    if switches:
        return _unescape_switched(text, switches, d)
    out: list[str] = []
    hex_bytes = bytearray()  # consecutive \X..\ sequences, decoded together
    hex_text: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        close = text.find(esc, i + 1) if ch == esc else -1
        seq = text[i + 1:close] if close != -1 else ""
        if close != -1 and _is_hex_escape(seq):
            hex_bytes += bytes.fromhex(seq[1:])
            hex_text.append(text[i:close + 1])
            i = close + 1
            continue
        if hex_text:
            out.append(_decode_hex(bytes(hex_bytes), hex_text, d.codec))
            hex_bytes.clear()
            hex_text.clear()
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        if close == -1:  # a lone escape character is kept as data
            out.append(text[i:])
            break
        out.append(_decode_escape(seq, d, text[i:close + 1]))
        i = close + 1
    if hex_text:
        out.append(_decode_hex(bytes(hex_bytes), hex_text, d.codec))
    return "".join(out)


_HEX = frozenset("0123456789abcdefABCDEF")

# \Cxxyy\ (single-byte set) and \Mxxyy[zz]\ (multi-byte set): the ISO 2022 escape
# sequence ESC xx yy [zz] that designates the set the text after it is in.
_SWITCH = re.compile(r"C[0-9A-Fa-f]{4}|M[0-9A-Fa-f]{4}(?:[0-9A-Fa-f]{2})?")
_ASCII_SETS = frozenset({b"(B", b"(J"})  # back to ASCII / JIS X 0201 Roman (G0)
# Multi-byte G0 sets (7-bit): ISO-2022-JP-2 decodes the run given its escape sequence.
_ISO2022_G0 = frozenset({b"$@", b"$B", b"$(D", b"$A", b"$(C"})
# G1 sets (8-bit, GR): the run's bytes are read with the set's own codec.
_ISO2022_G1 = {b"-A": "iso8859-1", b"-B": "iso8859-2", b"-C": "iso8859-3",
               b"-D": "iso8859-4", b"-L": "iso8859-5", b"-G": "iso8859-6",
               b"-F": "iso8859-7", b"-H": "iso8859-8", b"-M": "iso8859-9",
               b"-T": "tis-620", b")I": "shift_jis", b"$)C": "euc_kr", b"$)A": "gb2312"}


def _switch_points(text: str, esc: str) -> list[tuple[int, int, str]]:
    """(start, end, sequence) of each \\C..\\ or \\M..\\ escape, read from the left as
    the decoder reads escapes (so the "C2842" in ``\\E\\C2842\\E\\`` is text)."""
    points: list[tuple[int, int, str]] = []
    i = text.find(esc)
    while i != -1:
        close = text.find(esc, i + 1)
        if close == -1:
            break
        seq = text[i + 1:close]
        if _SWITCH.fullmatch(seq):
            points.append((i, close + 1, seq))
        i = text.find(esc, close + 1)
    return points


def _unescape_switched(text: str, switches: list[tuple[int, int, str]],
                       d: Delimiters) -> str:
    """A sub-component with character set switches: each run, from its switch to the
    next one or the end of the sub-component, is read in the set its switch names."""
    out = [unescape(text[:switches[0][0]], d)]
    for n, (start, end, seq) in enumerate(switches):
        stop = switches[n + 1][0] if n + 1 < len(switches) else len(text)
        designation = bytes.fromhex(seq[1:])
        if designation in _ASCII_SETS:
            out.append(unescape(text[end:stop], d))
            continue
        try:
            out.append(_designated(designation, _run_bytes(text[end:stop], d)))
        except (UnicodeError, LookupError):
            out.append(text[start:stop])  # kept as sent: never guessed, never dropped
    return "".join(out)


def _run_bytes(run: str, d: Delimiters) -> bytes:
    """The bytes of a switched run as sent: its text in the frame's codec (which
    gives them back exactly), ``\\Xhh\\`` as those bytes, other escapes decoded."""
    esc = d.escape
    out = bytearray()
    i = 0
    while i < len(run):
        at = run.find(esc, i)
        close = run.find(esc, at + 1) if at != -1 else -1
        if close == -1:
            out += run[i:].encode(d.codec)
            break
        out += run[i:at].encode(d.codec)
        seq = run[at + 1:close]
        out += (bytes.fromhex(seq[1:]) if _is_hex_escape(seq)
                else unescape(run[at:close + 1], d).encode(d.codec))
        i = close + 1
    return bytes(out)


def _designated(designation: bytes, data: bytes) -> str:
    """``data`` read in the set ``designation`` (the bytes after ESC) designates.
    Raises LookupError for a set not known here, UnicodeError for bytes not in it."""
    if designation in _ISO2022_G0:
        return (b"\x1b" + designation + data).decode("iso2022_jp_2")
    g1 = _ISO2022_G1.get(designation)
    if g1 is None:
        raise LookupError(f"no character set for ESC {designation!r}")
    return data.decode(g1)


def _is_hex_escape(seq: str) -> bool:
    return (len(seq) > 1 and len(seq) % 2 == 1 and seq[0] == "X"
            and _HEX.issuperset(seq[1:]))


def _decode_hex(data: bytes, sources: list[str], codec: str) -> str:
    try:
        return data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return "".join(sources)


def _decode_escape(seq: str, d: Delimiters, original: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent,
              "R": d.repetition, "E": d.escape, ".br": "\n"}
    if seq in simple:
        return simple[seq]
    # Highlighting (\H\, \N\) and formatting codes carry no data for a worklist.
    if seq in ("H", "N") or seq.startswith((".sp", ".in", ".ti", ".sk", ".ce", ".fi", ".nf")):
        return ""
    return original


def _control_escape(ch: str, esc: str) -> str:
    return f"{esc}X{ord(ch):02X}{esc}"


# Control characters a value may hold once decoded (\Xhh\, \.br\) but that must
# not go out raw: CR ends a segment, VT and FS are MLLP framing. TAB is harmless.
_CONTROLS = frozenset(chr(i) for i in range(0x20) if i != 0x09)


def escape(text: str, d: Delimiters) -> str:
    """Encode a value for use inside one sub-component.

    A line feed becomes ``\\.br\\``; CR and the other control characters become
    ``\\Xhh\\``, so a decoded value goes out the way it came in, never
    dropped and never breaking the segment or the MLLP frame.
    """
    esc = d.escape
    specials = (d.field, d.component, d.repetition, esc, d.subcomponent)
    if not any(c in text for c in specials) and _CONTROLS.isdisjoint(text):
        return text
    repl = {esc: f"{esc}E{esc}", d.field: f"{esc}F{esc}", d.component: f"{esc}S{esc}",
            d.subcomponent: f"{esc}T{esc}", d.repetition: f"{esc}R{esc}",
            "\n": f"{esc}.br{esc}"}
    return "".join(repl.get(c) or (_control_escape(c, esc) if c in _CONTROLS else c)
                   for c in text)
