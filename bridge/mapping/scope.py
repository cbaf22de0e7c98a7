"""What a path can see while one message is mapped: segments in scope, and what a path hit.

A message splits into groups (``group_by: ORC``): each ORC starts a group that
runs to the next ORC. Inside a group, a segment type that occurs in any group
(ORC, OBR, ZDS, ...) is looked up in that group only, so group 2 never picks up
group 1's OBR; every other segment type (MSH, PID, PV1, ...) is looked up in the
whole message. Groups nest (``group_by: [ORC, IPC]``) by the same rule.

No segment is dropped without a word: for the segment types a mapping reads one
of per item (``single``), a group that holds two (a second OBR in an ORC group),
or a segment no group can see (a PID before the first ORC when another PID sits
inside an order), raises Shadowed, which the engine turns into a rejection.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from bridge.hl7.message import Message, Repetition, Segment


class SegRef:
    """A segment plus its sequence number among segments of its type (the ERL ``seq``).

    ``lead`` is the nearest segment before it of another type: the segment an
    NTE (or any run of same-type segments) belongs to, for ``NTE(after OBR)``.
    """

    __slots__ = ("lead", "pos", "segment", "seq")

    def __init__(self, segment: Segment, seq: int, lead: SegRef | None = None,
                 pos: int = 0) -> None:
        self.segment = segment
        self.seq = seq
        self.lead = lead
        self.pos = pos  # its place in the message, 0 for MSH

    @property
    def erl(self) -> str:
        """The segment's ERL, e.g. ``OBR^2``."""
        return f"{self.segment.name}^{self.seq}"


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

    __slots__ = ("groups", "message", "scope", "whole")

    def __init__(self, scope: Scope, whole: Scope | None = None,
                 message: Message | None = None, groups: tuple[SegRef, ...] = ()) -> None:
        self.scope = scope
        self.whole = scope if whole is None else whole
        self.message = message  # for Python hooks, which may want more than paths give
        self.groups = groups  # the segments that start its groups, outermost first

    def missing_segment(self, name: str) -> SegRef | None:
        """The group's first segment when this group lacks a ``name`` that other groups
        have (an ORC group without its OBR); None when the segment is in scope, or in
        no group at all (then it is simply missing from the message)."""
        if not self.groups or self.scope.get(name) or not self.whole.get(name):
            return None
        return self.groups[0]

    def visible(self, ref: SegRef) -> bool:
        """Whether this very segment (not just one of its type) is in scope."""
        return any(r is ref for r in self.scope.get(ref.segment.name, ()))


class MissingGroup(ValueError):
    """A group that should hold sub-groups holds none (an ORC group with no IPC)."""

    def __init__(self, parent: SegRef, child: str) -> None:
        self.parent = parent
        self.child = child
        super().__init__(f"{parent.segment.name} group {parent.seq} has no {child} segment")


class Shadowed(ValueError):
    """A segment of a type the mapping reads one of per item, which no item would read.

    ``lost`` is that segment; ``count`` how many of its type ``container`` holds
    (the first segment of the group they share, or None for the whole message).
    """

    def __init__(self, lost: SegRef, count: int, container: SegRef | None) -> None:
        self.lost = lost
        self.count = count
        self.container = container
        where = (f"{container.segment.name} group {container.seq}" if container is not None
                 else "the message")
        super().__init__(f"{where} has {count} {lost.segment.name} segments; "
                         f"{lost.erl} would be lost")


# The group a leaf was built from, and those around it: (first segment, last position).
_Span = tuple[SegRef, int]


def message_contexts(message: Message, group_by: Sequence[str] = (),
                     single: Collection[str] = ()) -> tuple[Context, list[Context]]:
    """The message-wide context, and one context per innermost group (none without groups).

    ``group_by`` lists the segments that start groups, outermost first:
    ``[ORC]`` for ORM (one item per order), ``[ORC, IPC]`` for OMI (one item per
    IPC inside each order). Raises MissingGroup for an outer group without inner ones.

    ``single`` names the segment types read one per item (by a path without a
    selector, such as ``OBR-18``): raises Shadowed when an item would see two
    of one (it would read the first and ignore the other), or when a segment of
    such a type is visible to no item at all. Without ``group_by`` the whole
    message is the one item.
    """
    refs: list[SegRef] = []
    whole: Scope = {}
    lead: SegRef | None = None
    for pos, segment in enumerate(message.segments):
        same = whole.setdefault(segment.name, [])
        if refs and refs[-1].segment.name != segment.name:
            lead = refs[-1]
        ref = SegRef(segment, len(same) + 1, lead, pos)
        same.append(ref)
        refs.append(ref)
    message_ctx = Context(whole, whole, message)
    if not group_by:
        if single:
            _check_leaf(whole, (), single)
        return message_ctx, []
    contexts = []
    for scope, spans in _leaves(refs, whole, {}, group_by, (), single):
        if single:
            _check_leaf(scope, spans, single)
        contexts.append(Context(scope, whole, message, tuple(first for first, _ in spans)))
    return message_ctx, contexts


def _leaves(refs: list[SegRef], scope: Scope, outer: Scope, levels: Sequence[str],
            spans: tuple[_Span, ...], single: Collection[str]
            ) -> list[tuple[Scope, tuple[_Span, ...]]]:
    """Scopes of the innermost groups within ``refs`` (whose own scope is ``scope``),
    each with the spans of its groups, outermost first."""
    groups: list[list[SegRef]] = []
    for ref in refs:
        if ref.segment.name == levels[0]:
            groups.append([])
        if groups:
            groups[-1].append(ref)
    in_groups = {ref.segment.name for group in groups for ref in group}
    if single:
        # A segment before the first group whose type the groups also hold is seen by
        # no group: they look up that type in their own segments only.
        for ref in refs:
            name = ref.segment.name
            if name == levels[0]:
                break
            if name in in_groups and name in single:
                raise Shadowed(ref, len(scope[name]), spans[-1][0] if spans else None)
    # What the groups share: everything visible outside, plus this level's segment
    # types that no group holds (PID, PV1 at the top; ORC, OBR inside an order).
    shared = {**outer, **{n: r for n, r in scope.items() if n not in in_groups}}
    out: list[tuple[Scope, tuple[_Span, ...]]] = []
    for group in groups:
        own: Scope = {}
        for ref in group:
            own.setdefault(ref.segment.name, []).append(ref)
        span = (*spans, (group[0], group[-1].pos))
        if len(levels) == 1:
            out.append(({**shared, **own}, span))
            continue
        inner = _leaves(group, own, shared, levels[1:], span, single)
        if not inner:
            raise MissingGroup(group[0], levels[1])
        out.extend(inner)
    return out


def _check_leaf(scope: Scope, spans: tuple[_Span, ...], single: Collection[str]) -> None:
    """Raise Shadowed for the first segment (in message order) this item would ignore."""
    lost: list[SegRef] | None = None
    for name in single:
        refs = scope.get(name)
        if refs is not None and len(refs) > 1 and (lost is None or refs[1].pos < lost[1].pos):
            lost = refs
    if lost is None:
        return
    # The innermost group holding them; they share one (a type is looked up at one level).
    container = next((first for first, last in reversed(spans)
                      if first.pos <= lost[0].pos <= last), None)
    raise Shadowed(lost[1], len(lost), container)
