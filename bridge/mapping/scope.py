"""What a path can see while one message is mapped: segments in scope, and what a path hit.

A message splits into groups (``group_by: ORC``): each ORC starts a group that
runs to the next ORC. Inside a group, a segment type that occurs in any group
(ORC, OBR, ZDS, ...) is looked up in that group only, so group 2 never picks up
group 1's OBR; every other segment type (MSH, PID, PV1, ...) is looked up in the
whole message. Groups nest (``group_by: [ORC, IPC]``) by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from bridge.hl7.message import Message, Repetition, Segment


class SegRef:
    """A segment plus its sequence number among segments of its type (the ERL ``seq``).

    ``lead`` is the nearest segment before it of another type: the segment an
    NTE (or any run of same-type segments) belongs to, for ``NTE(after OBR)``.
    """

    __slots__ = ("lead", "segment", "seq")

    def __init__(self, segment: Segment, seq: int, lead: SegRef | None = None) -> None:
        self.segment = segment
        self.seq = seq
        self.lead = lead


class Hit:
    """One repetition of a field that a path reached, and the component it addresses.

    ``comp``/``sub`` of 0 mean "not addressed": the text of a hit is then its
    first component's first sub-component, and its parts (for structured
    conversions such as XPN -> PN) are the repetition's components.
    """

    __slots__ = ("comp", "field", "ref", "rep", "rep_no", "sub")

    def __init__(self, ref: SegRef, field: int, rep_no: int, rep: Repetition,
                 comp: int = 0, sub: int = 0) -> None:
        self.ref = ref
        self.field = field
        self.rep_no = rep_no
        self.rep = rep
        self.comp = comp
        self.sub = sub

    def text(self) -> str:
        rep = self.rep
        c = self.comp or 1
        if c > len(rep):
            return ""
        subs = rep[c - 1]
        s = self.sub or 1
        return subs[s - 1] if s <= len(subs) else ""

    def parts(self) -> Repetition:
        """Components of the repetition, or the sub-components of the addressed component."""
        if not self.comp:
            return self.rep
        if self.comp > len(self.rep):
            return ()
        if self.sub:
            return ((self.text(),),)
        return tuple((s,) for s in self.rep[self.comp - 1])

    def has_parts(self) -> bool:
        return any(any(comp) for comp in self.parts())

    def location(self) -> str:
        """HL7 ERL: ``SEG^seq^field[^rep^comp[^sub]]``."""
        out = f"{self.ref.segment.name}^{self.ref.seq}^{self.field}"
        if self.comp:
            out += f"^{self.rep_no}^{self.comp}"
            if self.sub:
                out += f"^{self.sub}"
        elif self.rep_no > 1:
            out += f"^{self.rep_no}"
        return out

    def label(self) -> str:
        """The position in the path notation of mapping files, e.g. ``PID-3[2].4.1``."""
        out = f"{self.ref.segment.name}-{self.field}"
        if self.rep_no > 1:
            out += f"[{self.rep_no}]"
        if self.comp:
            out += f".{self.comp}"
            if self.sub:
                out += f".{self.sub}"
        return out


Scope = dict[str, list[SegRef]]


class Context:
    """The segments visible to paths while one record is built.

    ``whole`` is every segment of the message by type: ``NTE(after PID)`` looks
    there for the NTEs whose lead segment is visible in ``scope``, because the
    NTEs after PID are outside every group while those after OBR are inside one.
    """

    __slots__ = ("message", "scope", "whole")

    def __init__(self, scope: Scope, whole: Scope | None = None,
                 message: Message | None = None) -> None:
        self.scope = scope
        self.whole = scope if whole is None else whole
        self.message = message  # for Python hooks, which may want more than paths give

    def visible(self, ref: SegRef) -> bool:
        """Whether this very segment (not just one of its type) is in scope."""
        return any(r is ref for r in self.scope.get(ref.segment.name, ()))


class MissingGroup(ValueError):
    """A group that should hold sub-groups holds none (an ORC group with no IPC)."""

    def __init__(self, parent: SegRef, child: str) -> None:
        self.parent = parent
        self.child = child
        super().__init__(f"{parent.segment.name} group {parent.seq} has no {child} segment")


def message_contexts(message: Message, group_by: Sequence[str] = ()
                     ) -> tuple[Context, list[Context]]:
    """The message-wide context, and one context per innermost group (none without groups).

    ``group_by`` lists the segments that start groups, outermost first:
    ``[ORC]`` for ORM (one item per order), ``[ORC, IPC]`` for OMI (one item per
    IPC inside each order). Raises MissingGroup for an outer group without inner ones.
    """
    refs: list[SegRef] = []
    whole: Scope = {}
    lead: SegRef | None = None
    for segment in message.segments:
        same = whole.setdefault(segment.name, [])
        if refs and refs[-1].segment.name != segment.name:
            lead = refs[-1]
        ref = SegRef(segment, len(same) + 1, lead)
        same.append(ref)
        refs.append(ref)
    if not group_by:
        return Context(whole, whole, message), []
    return Context(whole, whole, message), [Context(scope, whole, message)
                                            for scope in _leaves(refs, whole, {}, group_by)]


def _leaves(refs: list[SegRef], scope: Scope, outer: Scope, levels: Sequence[str]
            ) -> list[Scope]:
    """Scopes of the innermost groups within ``refs`` (whose own scope is ``scope``)."""
    groups: list[list[SegRef]] = []
    for ref in refs:
        if ref.segment.name == levels[0]:
            groups.append([])
        if groups:
            groups[-1].append(ref)
    in_groups = {ref.segment.name for group in groups for ref in group}
    # What the groups share: everything visible outside, plus this level's segment
    # types that no group holds (PID, PV1 at the top; ORC, OBR inside an order).
    shared = {**outer, **{n: r for n, r in scope.items() if n not in in_groups}}
    out: list[Scope] = []
    for group in groups:
        own: Scope = {}
        for ref in group:
            own.setdefault(ref.segment.name, []).append(ref)
        if len(levels) == 1:
            out.append({**shared, **own})
            continue
        inner = _leaves(group, own, shared, levels[1:])
        if not inner:
            raise MissingGroup(group[0], levels[1])
        out.extend(inner)
    return out
