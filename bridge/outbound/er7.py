"""Writing HL7 v2 ER7 text: the reverse of bridge.hl7.message's tokenizer.

A segment is filled by position (field, repetition, component,
sub-component, all 1-based as in the standard), every value is escaped for
the delimiters, and rendering drops trailing empty parts so that a segment
reads the way a person writes it (``ORC|SC|PLC1^RIS``, not ``ORC|SC|PLC1^RIS^^|||``).

For MSH, field 1 is the field separator and field 2 the encoding
characters, so ``MSH-9`` means the same here as in the standard and in
mapping paths.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.hl7.message import Delimiters, escape

# field -> repetition -> component -> sub-component -> value
_Subs = dict[int, str]
_Comps = dict[int, _Subs]
_Reps = dict[int, _Comps]


class SegmentWriter:
    def __init__(self, name: str, delimiters: Delimiters | None = None) -> None:
        self.name = name
        self.d = delimiters or Delimiters()
        self._fields: dict[int, _Reps] = {}

    def set(self, field: int, value: str, *, rep: int = 1, comp: int = 1, sub: int = 1) -> None:
        """One value at one position; an empty value clears the position."""
        if self.name == "MSH" and field in (1, 2):
            raise ValueError("MSH-1 and MSH-2 are the delimiters; they are written by the writer")
        if min(field, rep, comp, sub) < 1:
            raise ValueError("positions start at 1")
        reps = self._fields.setdefault(field, {})
        comps = reps.setdefault(rep, {})
        subs = comps.setdefault(comp, {})
        subs[sub] = value

    def set_parts(self, field: int, parts: Sequence[str], *, rep: int = 1, comp: int = 0) -> None:
        """Several values from one position on: components of a field (``comp`` 0), or
        sub-components of a component."""
        for i, value in enumerate(parts, start=1):
            if comp:
                self.set(field, value, rep=rep, comp=comp, sub=i)
            else:
                self.set(field, value, rep=rep, comp=i)

    def get(self, field: int, *, rep: int = 1, comp: int = 1, sub: int = 1) -> str:
        return self._fields.get(field, {}).get(rep, {}).get(comp, {}).get(sub, "")

    def render(self) -> str:
        d = self.d
        last = max(self._fields, default=0)
        out = [self.name]
        if self.name == "MSH":
            out.append(d.encoding_characters)  # MSH-2; MSH-1 is the separator itself
            first = 3
        else:
            first = 1
        for field in range(first, last + 1):
            out.append(self._field(self._fields.get(field, {})))
        return _trim(out, d.field)

    def _field(self, reps: _Reps) -> str:
        d = self.d
        if not reps:
            return ""
        return _trim([self._component_list(reps.get(r, {})) for r in range(1, max(reps) + 1)],
                     d.repetition, keep_first=False)

    def _component_list(self, comps: _Comps) -> str:
        d = self.d
        if not comps:
            return ""
        parts = []
        for c in range(1, max(comps) + 1):
            subs = comps.get(c, {})
            if not subs:
                parts.append("")
                continue
            parts.append(_trim([escape(subs.get(s, ""), d) for s in range(1, max(subs) + 1)],
                               d.subcomponent, keep_first=False))
        return _trim(parts, d.component, keep_first=False)


def _trim(parts: list[str], sep: str, *, keep_first: bool = True) -> str:
    """Join, dropping trailing empty parts (the segment id is never dropped)."""
    end = len(parts)
    floor = 1 if keep_first else 0
    while end > floor and parts[end - 1] == "":
        end -= 1
    return sep.join(parts[:end])


def render_message(segments: Sequence[SegmentWriter]) -> str:
    """ER7 text with CR segment terminators (the MLLP convention)."""
    return "".join(seg.render() + "\r" for seg in segments)
