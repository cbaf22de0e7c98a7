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

Escape sequences (``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\.br\\ \\Xhh\\``) are decoded
at the sub-component level, after splitting, which is the only order that keeps
an escaped delimiter from splitting a value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# A sub-component is a str; a component a tuple of sub-components; a
# repetition a tuple of components; a field a tuple of repetitions.
Component = tuple[str, ...]
Repetition = tuple[Component, ...]
Field = tuple[Repetition, ...]

_SEGMENT_SPLIT = re.compile(r"\r\n|\r|\n")
_SEGMENT_ID = re.compile(r"^[A-Z][A-Z0-9]{2}$")


class HL7ParseError(ValueError):
    """The text is not an HL7 v2 ER7 message (no usable MSH)."""


@dataclass(frozen=True, slots=True)
class Delimiters:
    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"

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


def parse_message(text: str) -> Message:
    """Tokenize ER7 text. Accepts CR, LF or CRLF segment ends and blank lines.

    Raises HL7ParseError when the text does not start with a usable MSH.
    """
    text = text.lstrip("\ufeff \t\r\n\x0b")
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7ParseError("message does not start with an MSH segment")
    sep = text[3]
    # MSH-2 is up to 4 characters (5 with the v2.7 truncation character);
    # it ends at the next field separator.
    end = text.find(sep, 4)
    enc = text[4:end] if end != -1 else ""
    if len(enc) < 4 or sep.isalnum() or any(c.isalnum() for c in enc):
        raise HL7ParseError("MSH-1/MSH-2 do not hold valid delimiters")
    delims = Delimiters(field=sep, component=enc[0], repetition=enc[1],
                        escape=enc[2], subcomponent=enc[3])
    segments: list[Segment] = []
    for line in _SEGMENT_SPLIT.split(text):
        if not line.strip():
            continue
        parts = line.split(sep)
        name = parts[0]
        if not _SEGMENT_ID.match(name):
            raise HL7ParseError(f"segment {len(segments) + 1} has no valid segment id")
        segments.append(Segment(name=name, raw_fields=parts, delimiters=delims))
    return Message(segments=segments, delimiters=delims)


def unescape(text: str, d: Delimiters) -> str:
    """Decode HL7 escape sequences in one sub-component."""
    esc = d.escape
    if esc not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != esc:
            out.append(ch)
            i += 1
            continue
        close = text.find(esc, i + 1)
        if close == -1:  # a lone escape character is kept as data
            out.append(text[i:])
            break
        seq = text[i + 1:close]
        out.append(_decode_escape(seq, d, text[i:close + 1]))
        i = close + 1
    return "".join(out)


def _decode_escape(seq: str, d: Delimiters, original: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent,
              "R": d.repetition, "E": d.escape, ".br": "\n"}
    if seq in simple:
        return simple[seq]
    if seq.startswith("X") and len(seq) > 1 and len(seq) % 2 == 1:
        try:
            return bytes.fromhex(seq[1:]).decode("latin-1")
        except ValueError:
            return original
    # Highlighting (\H\, \N\) and formatting codes carry no data for a worklist.
    if seq in ("H", "N") or seq.startswith((".sp", ".in", ".ti", ".sk", ".ce", ".fi", ".nf")):
        return ""
    return original


def escape(text: str, d: Delimiters) -> str:
    """Encode a value for use inside one sub-component."""
    esc = d.escape
    if not any(c in text for c in (d.field, d.component, d.repetition, esc,
                                   d.subcomponent, "\r", "\n")):
        return text
    repl = {esc: f"{esc}E{esc}", d.field: f"{esc}F{esc}", d.component: f"{esc}S{esc}",
            d.subcomponent: f"{esc}T{esc}", d.repetition: f"{esc}R{esc}",
            "\n": f"{esc}.br{esc}", "\r": ""}
    return "".join(repl.get(c, c) for c in text)
