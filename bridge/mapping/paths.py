"""Field paths and conditions: the expression language inside mapping files.

    PID-3.1                         first repetition, component 1
    PID-3[2].4.1                    repetition 2, component 4, sub-component 1
    PID-3[*].1   PID-3[2..].1       every repetition; repetitions 2 to the end
    PID-3[where .4.1 = HOSP].1      repetitions whose component 4.1 is HOSP
    OBX(2)-5     OBX(*)-5           the second OBX in scope; every OBX
    OBX(where -3.1 = "29463-7")-5   the OBX whose field 3.1 is 29463-7
    NTE(after OBR)-3                the NTEs that follow this group's OBR (not those after PID)
    OBR-18 | ORC-3.1                fallback chain: the first path with a value

Conditions: ``ORC-1 = NW``, ``OBR-24 in (CT, MR)``, ``ZDS-1.1`` (has a value),
``PID-8 != F``, ``OBR-4.1 ~ "^CT"`` (regex search), ``and``/``or``/``not`` and
parentheses. Values are bare words, quoted strings or ``$variables``.

Everything is parsed and checked once, at load. Evaluation walks the tokenized
message by position and allocates little.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.mapping.scope import Context, Hit, SegRef

Anchor = Hit | SegRef | None

ONE, ALL, RANGE, WHERE, AFTER = 0, 1, 2, 3, 4

_SEG_ID = re.compile(r"[A-Z][A-Z0-9]{2}")
_INT = re.compile(r"[0-9]+")
_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BARE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
_KEYWORDS = {"and", "or", "not", "in", "where", "after"}


class PathSyntaxError(ValueError):
    """A path or condition that does not parse; ``column`` is 1-based."""

    def __init__(self, text: str, column: int, problem: str) -> None:
        self.text = text
        self.column = column
        self.problem = problem
        super().__init__(f"{problem} at column {column} of {text!r}")


@dataclass(frozen=True, slots=True)
class FieldRef:
    """A position a path addresses, kept for checking against the HL7 structure tables.

    ``plain``: the path names its segment without a selector (``OBR-18``, not
    ``OBX(*)-5``), so it reads the first such segment an item sees, and only that one.
    """

    segment: str
    field: int
    component: int
    subcomponent: int
    text: str
    plain: bool = False


# -- conditions ---------------------------------------------------------------

class Condition:
    def test(self, ctx: Context, anchor: Anchor) -> bool:
        raise NotImplementedError


class Operand:
    def values(self, ctx: Context, anchor: Anchor) -> Sequence[str | None]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Literal(Operand):
    value: str | None  # None: a variable that is not set; every comparison with it is false

    def values(self, ctx: Context, anchor: Anchor) -> Sequence[str | None]:
        return (self.value,)


@dataclass(frozen=True, slots=True)
class ListLiteral(Operand):
    items: tuple[str | None, ...]

    def values(self, ctx: Context, anchor: Anchor) -> Sequence[str | None]:
        return self.items


@dataclass(frozen=True, slots=True)
class PathOperand(Operand):
    path: FieldPath | RepPath

    def values(self, ctx: Context, anchor: Anchor) -> Sequence[str | None]:
        texts = [hit.text() for hit in self.path.hits(ctx, anchor)]
        return texts or ("",)


@dataclass(frozen=True, slots=True)
class Compare(Condition):
    left: Operand
    op: str  # "=", "!=", "in", "~"
    right: Operand
    pattern: re.Pattern[str] | None = None

    def test(self, ctx: Context, anchor: Anchor) -> bool:
        lefts = self.left.values(ctx, anchor)
        if self.pattern is not None:
            return any(v is not None and self.pattern.search(v) for v in lefts)
        rights = self.right.values(ctx, anchor)
        if self.op == "in":
            rights = [r for r in rights if r is not None]
        elif None in rights or None in lefts:
            return False
        hit = any(v in rights for v in lefts)
        return not hit if self.op == "!=" else hit


@dataclass(frozen=True, slots=True)
class Truthy(Condition):
    operand: Operand

    def test(self, ctx: Context, anchor: Anchor) -> bool:
        return any(self.operand.values(ctx, anchor))


@dataclass(frozen=True, slots=True)
class Not(Condition):
    inner: Condition

    def test(self, ctx: Context, anchor: Anchor) -> bool:
        return not self.inner.test(ctx, anchor)


@dataclass(frozen=True, slots=True)
class AllOf(Condition):
    parts: tuple[Condition, ...]

    def test(self, ctx: Context, anchor: Anchor) -> bool:
        return all(p.test(ctx, anchor) for p in self.parts)


@dataclass(frozen=True, slots=True)
class AnyOf(Condition):
    parts: tuple[Condition, ...]

    def test(self, ctx: Context, anchor: Anchor) -> bool:
        return any(p.test(ctx, anchor) for p in self.parts)


# -- paths ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Select:
    """Which segment occurrences or field repetitions a path takes."""

    kind: int = ONE
    start: int = 1
    stop: int = 0  # RANGE: last position, 0 for "to the end"
    where: Condition | None = None
    after: frozenset[str] = frozenset()  # AFTER: the lead segment types

    @property
    def multi(self) -> bool:
        return self.kind != ONE


_FIRST = Select()


@dataclass(frozen=True, slots=True)
class FieldPath:
    """``SEG(occ)-field[rep].comp.sub``; ``segment`` None means relative to a segment anchor.

    ``field`` 0 is a whole segment, which only ``for_each`` accepts.
    """

    text: str
    segment: str | None
    occ: Select
    field: int
    rep: Select
    comp: int
    sub: int
    explicit_rep: bool = False

    @property
    def multi(self) -> bool:
        return self.occ.multi or self.rep.multi

    def segments(self, ctx: Context, anchor: Anchor) -> list[SegRef]:
        if self.segment is None:
            return [anchor] if isinstance(anchor, SegRef) else []
        occ = self.occ
        if occ.kind == AFTER:
            # The segments whose lead is one of the named types and visible here: the
            # NTEs of this group's OBR, or of the message's PID, never another group's.
            return [ref for ref in ctx.whole.get(self.segment, ())
                    if ref.lead is not None and ref.lead.segment.name in occ.after
                    and ctx.visible(ref.lead)]
        refs = ctx.scope.get(self.segment)
        if not refs:
            return []
        if occ.kind == ONE:
            return [refs[occ.start - 1]] if occ.start <= len(refs) else []
        if occ.kind == ALL:
            return refs
        if occ.kind == RANGE:
            return refs[occ.start - 1:occ.stop or None]
        where = occ.where
        assert where is not None
        return [ref for ref in refs if where.test(ctx, ref)]

    def first(self, ctx: Context, anchor: Anchor) -> Hit | None:
        """The one hit of a path without selectors (the common case), found without lists."""
        if self.occ.kind != ONE or self.rep.kind != ONE or self.segment is None:
            hits = self.hits(ctx, anchor)
            return hits[0] if hits else None
        refs = ctx.scope.get(self.segment)
        if not refs or self.occ.start > len(refs):
            return None
        ref = refs[self.occ.start - 1]
        reps = ref.segment.field(self.field)
        if self.rep.start > len(reps):
            return None
        return Hit(ref, self.field, self.rep.start, reps[self.rep.start - 1], self.comp, self.sub)

    def hits(self, ctx: Context, anchor: Anchor) -> list[Hit]:
        out: list[Hit] = []
        rep = self.rep
        for ref in self.segments(ctx, anchor):
            reps = ref.segment.field(self.field)
            if rep.kind == ONE:
                if rep.start <= len(reps):
                    out.append(Hit(ref, self.field, rep.start, reps[rep.start - 1],
                                   self.comp, self.sub))
                continue
            if rep.kind == RANGE:
                first, last = rep.start, rep.stop or len(reps)
            else:
                first, last = 1, len(reps)
            for no in range(first, min(last, len(reps)) + 1):
                if rep.kind == WHERE:
                    assert rep.where is not None
                    if not rep.where.test(ctx, Hit(ref, self.field, no, reps[no - 1])):
                        continue
                out.append(Hit(ref, self.field, no, reps[no - 1], self.comp, self.sub))
        return out

    def missing_location(self, ctx: Context, anchor: Anchor) -> str:
        """Where the value would have been: the ERL for an error about an empty field."""
        name = self.segment
        seq = self.occ.start if self.occ.kind in (ONE, RANGE) else 1
        if name is None:
            if not isinstance(anchor, SegRef):
                return ""
            name, seq = anchor.segment.name, anchor.seq
        else:
            refs = ctx.scope.get(name)
            if refs and seq <= len(refs):
                seq = refs[seq - 1].seq
            elif refs:
                seq = refs[-1].seq + seq - len(refs)
            else:
                group = ctx.missing_segment(name)
                if group is not None:  # this group has none: not another group's OBR^1
                    return group.erl
        out = f"{name}^{seq}^{self.field}"
        rep_no = self.rep.start if self.rep.kind in (ONE, RANGE) else 1
        if self.comp:
            out += f"^{rep_no}^{self.comp}"
            if self.sub:
                out += f"^{self.sub}"
        elif self.explicit_rep:
            out += f"^{rep_no}"
        return out


@dataclass(frozen=True, slots=True)
class RepPath:
    """``.comp.sub``: relative to a repetition anchor (inside ``[where ...]`` or ``for_each``)."""

    text: str
    comp: int
    sub: int
    multi: bool = False

    def hits(self, ctx: Context, anchor: Anchor) -> list[Hit]:
        if not isinstance(anchor, Hit):
            return []
        return [Hit(anchor.ref, anchor.field, anchor.rep_no, anchor.rep, self.comp, self.sub)]

    def missing_location(self, ctx: Context, anchor: Anchor) -> str:
        if not isinstance(anchor, Hit):
            return ""
        return Hit(anchor.ref, anchor.field, anchor.rep_no, anchor.rep,
                   self.comp, self.sub).location()


Path = FieldPath | RepPath


@dataclass(frozen=True, slots=True)
class Chain:
    """``A | B | C``: the first path that has a value."""

    text: str
    paths: tuple[Path, ...]

    @property
    def multi(self) -> bool:
        return any(p.multi for p in self.paths)

    def first_hit(self, ctx: Context, anchor: Anchor, structured: bool) -> Hit | None:
        for path in self.paths:
            if isinstance(path, FieldPath) and not path.multi:
                hit = path.first(ctx, anchor)
                if hit is not None and (hit.has_parts() if structured else hit.text() != ""):
                    return hit
                continue
            for hit in path.hits(ctx, anchor):
                if (hit.has_parts() if structured else hit.text() != ""):
                    return hit
        return None

    def all_hits(self, ctx: Context, anchor: Anchor, structured: bool) -> list[Hit]:
        for path in self.paths:
            found = [h for h in path.hits(ctx, anchor)
                     if (h.has_parts() if structured else h.text() != "")]
            if found:
                return found
        return []

    def missing_location(self, ctx: Context, anchor: Anchor) -> str:
        return self.paths[0].missing_location(ctx, anchor)


# -- parsing -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Relative:
    """What ``.4.1`` or ``-3.1`` refer to where a path is written.

    ``kind`` is "rep" (a repetition of ``segment-field``) or "seg" (a ``segment``).
    """

    kind: str
    segment: str | None = None
    field: int = 0


class PathSyntax:
    """Parses paths and conditions of one mapping file; variables are substituted here."""

    def __init__(self, variables: Mapping[str, str | None]) -> None:
        self.variables = dict(variables)

    def chain(self, text: str, rel: Relative | None = None) -> tuple[Chain, list[FieldRef]]:
        p = _Parser(text, self.variables, rel)
        paths = [p.value_path()]
        while p.take("|"):
            paths.append(p.value_path())
        p.end()
        return Chain(text.strip(), tuple(paths)), p.refs

    def iterable(self, text: str, rel: Relative | None = None
                 ) -> tuple[FieldPath | RepPath, list[FieldRef]]:
        """A ``for_each`` path: repetitions of a field, or segments (``OBX(*)``)."""
        p = _Parser(text, self.variables, rel)
        path = p.value_path(segment_only=True)
        p.end()
        if path.comp:
            raise PathSyntaxError(text, len(text), "for_each takes a field or a segment, "
                                  "not a component")
        return path, p.refs

    def condition(self, spec: str | Mapping[str, Any], rel: Relative | None = None
                  ) -> tuple[Condition, list[FieldRef]]:
        if isinstance(spec, str):
            p = _Parser(spec, self.variables, rel)
            cond = p.condition()
            p.end()
            return cond, p.refs
        parts: list[Condition] = []
        refs: list[FieldRef] = []
        for key, want in spec.items():
            p = _Parser(str(key), self.variables, rel)
            path = p.value_path()
            p.end()
            refs.extend(p.refs)
            operand = PathOperand(path)
            if want is True:
                parts.append(Truthy(operand))
            elif want is False:
                parts.append(Not(Truthy(operand)))
            elif isinstance(want, list):
                items = tuple(self._literal(str(key), w) for w in want)
                parts.append(Compare(operand, "in", ListLiteral(items)))
            elif isinstance(want, str | int | float):
                parts.append(Compare(operand, "=", Literal(self._literal(str(key), want))))
            else:
                raise PathSyntaxError(str(key), 1, "a condition value is a word, a list "
                                      "of words, true (has a value) or false (is empty)")
        return AllOf(tuple(parts)), refs

    def _literal(self, where: str, value: object) -> str | None:
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise PathSyntaxError(where, 1, "list items must be words or numbers")
        text = str(value)
        if text.startswith("$$"):
            return text[1:]
        if text.startswith("$"):
            name = text[1:]
            if name not in self.variables:
                raise PathSyntaxError(text, 1, f"unknown variable ${name}")
            return self.variables[name]
        return text


class _Parser:
    def __init__(self, text: str, variables: Mapping[str, str | None],
                 rel: Relative | None) -> None:
        self.text = text
        self.i = 0
        self.variables = variables
        self.rel = rel
        self.refs: list[FieldRef] = []

    # -- low level

    def error(self, problem: str) -> PathSyntaxError:
        return PathSyntaxError(self.text, self.i + 1, problem)

    def ws(self) -> None:
        while self.i < len(self.text) and self.text[self.i] in " \t":
            self.i += 1

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.i)

    def take(self, s: str) -> bool:
        if self.peek(s):
            self.i += len(s)
            return True
        return False

    def take_word(self, word: str) -> bool:
        self.ws()
        end = self.i + len(word)
        if self.text.startswith(word, self.i) and (
                end == len(self.text) or not (self.text[end].isalnum() or self.text[end] == "_")):
            self.i = end
            return True
        return False

    def expect(self, s: str, what: str) -> None:
        if not self.take(s):
            raise self.error(f"expected {what}")

    def integer(self, what: str) -> int:
        m = _INT.match(self.text, self.i)
        if not m:
            raise self.error(f"expected {what}")
        self.i = m.end()
        value = int(m.group())
        if value < 1:
            raise PathSyntaxError(self.text, m.start() + 1, f"{what} starts at 1")
        return value

    def end(self) -> None:
        self.ws()
        if self.i != len(self.text):
            raise self.error(f"unexpected {self.text[self.i]!r}")

    # -- paths

    def value_path(self, segment_only: bool = False) -> FieldPath | RepPath:
        self.ws()
        start = self.i
        if self.text.startswith(".", self.i):
            return self.rep_relative(start)
        if self.text.startswith("-", self.i):
            return self.seg_relative(start)
        if self.text.startswith("$", self.i):
            raise self.error("a variable is a value, not a path; use const: $name")
        if not self.at_segment():
            raise self.error("expected a field path such as PID-3.1")
        return self.absolute(start, segment_only)

    def at_segment(self) -> bool:
        m = _SEG_ID.match(self.text, self.i)
        return m is not None and m.end() < len(self.text) and self.text[m.end()] in "(-"

    def absolute(self, start: int, segment_only: bool = False) -> FieldPath:
        m = _SEG_ID.match(self.text, self.i)
        if not m:
            raise self.error("expected a segment id (three capitals or digits, e.g. PID)")
        seg = m.group()
        self.i = m.end()
        occ = _FIRST
        plain = True
        if self.text.startswith("(", self.i):
            self.i += 1
            occ = self.selector(")", Relative("seg", seg))
            plain = False
        if not self.text.startswith("-", self.i):
            if segment_only:
                return FieldPath(self.text[start:self.i].strip(), seg, occ, 0, _FIRST, 0, 0)
            raise self.error("expected '-' and a field number after the segment")
        self.i += 1
        field = self.integer("a field number")
        return self.rest(start, seg, occ, field, plain)

    def rest(self, start: int, seg: str | None, occ: Select, field: int,
             plain: bool = False) -> FieldPath:
        real_seg = seg if seg is not None else (self.rel.segment if self.rel else None)
        rep, explicit = _FIRST, False
        if self.text.startswith("[", self.i):
            self.i += 1
            rep = self.selector("]", Relative("rep", real_seg, field))
            explicit = True
        comp, sub = self.components()
        text = self.text[start:self.i].strip()
        if real_seg:
            self.refs.append(FieldRef(real_seg, field, comp, sub, text,
                                      plain and seg is not None))
        return FieldPath(text, seg, occ, field, rep, comp, sub, explicit)

    def components(self) -> tuple[int, int]:
        comp = sub = 0
        if self.text.startswith(".", self.i) and self.text[self.i + 1:self.i + 2].isdigit():
            self.i += 1
            comp = self.integer("a component number")
            if self.text.startswith(".", self.i) and self.text[self.i + 1:self.i + 2].isdigit():
                self.i += 1
                sub = self.integer("a sub-component number")
        return comp, sub

    def segment_id(self) -> str:
        self.ws()
        m = _SEG_ID.match(self.text, self.i)
        if not m or (m.end() < len(self.text) and self.text[m.end()].isalnum()):
            raise self.error("expected a segment id (three capitals or digits, e.g. OBR)")
        self.i = m.end()
        return m.group()

    def rep_relative(self, start: int) -> RepPath:
        if self.rel is None or self.rel.kind != "rep":
            raise self.error("a path starting with '.' is relative to a repetition; it is only "
                             "allowed inside [where ...] or in items of a for_each over a field")
        comp, sub = self.components()
        if not comp:
            raise self.error("expected a component number after '.'")
        text = self.text[start:self.i].strip()
        if self.rel.segment:
            self.refs.append(FieldRef(self.rel.segment, self.rel.field, comp, sub, text))
        return RepPath(text, comp, sub)

    def seg_relative(self, start: int) -> FieldPath:
        if self.rel is None or self.rel.kind != "seg":
            raise self.error("a path starting with '-' is relative to a segment; it is only "
                             "allowed inside (where ...) or in items of a for_each over segments")
        self.i += 1
        field = self.integer("a field number")
        return self.rest(start, None, _FIRST, field)

    def selector(self, close: str, rel: Relative) -> Select:
        if self.take("*"):
            sel = Select(ALL)
        elif close == ")" and self.take_word("after"):
            leads = [self.segment_id()]
            while self.take(","):
                leads.append(self.segment_id())
            sel = Select(AFTER, after=frozenset(leads))
            self.refs.extend(FieldRef(name, 0, 0, 0, name) for name in leads)
        elif self.take_word("where"):
            saved, self.rel = self.rel, rel
            try:
                cond = self.condition()
            finally:
                self.rel = saved
            sel = Select(WHERE, where=cond)
        else:
            self.ws()
            n = self.integer("a position, '*', 'N..M', 'where'"
                             + (" or 'after'" if close == ")" else ""))
            if self.take(".."):
                self.ws()
                m = self.integer("the end of the range") if self.text[self.i:self.i + 1].isdigit() \
                    else 0
                if m and m < n:
                    raise self.error("a range ends before it starts")
                sel = Select(RANGE, n, m)
            else:
                sel = Select(ONE, n)
        self.expect(close, f"'{close}'")
        return sel

    # -- conditions

    def condition(self) -> Condition:
        parts = [self.conjunction()]
        while self.take_word("or"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def conjunction(self) -> Condition:
        parts = [self.negation()]
        while self.take_word("and"):
            parts.append(self.negation())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def negation(self) -> Condition:
        if self.take_word("not"):
            return Not(self.negation())
        return self.atom()

    def atom(self) -> Condition:
        if self.take("("):
            cond = self.condition()
            self.expect(")", "')'")
            return cond
        self.ws()
        left_at = self.i
        left = self.operand()
        if self.take("!="):
            return Compare(left, "!=", self.operand())
        if self.take("="):
            return Compare(left, "=", self.operand())
        if self.take("~"):
            self.ws()
            at = self.i
            right = self.operand()
            if not isinstance(right, Literal):
                raise PathSyntaxError(self.text, at + 1, "'~' takes a regular expression in quotes")
            if right.value is None:
                return Compare(left, "~", right, re.compile(r"(?!)"))
            try:
                pattern = re.compile(right.value)
            except re.error as exc:
                raise PathSyntaxError(self.text, at + 1,
                                      f"bad regular expression: {exc}") from None
            return Compare(left, "~", right, pattern)
        if self.take_word("in"):
            self.expect("(", "'(' and a list of values after 'in'")
            items = [self.literal_value()]
            while self.take(","):
                items.append(self.literal_value())
            self.expect(")", "')' after the list")
            return Compare(left, "in", ListLiteral(tuple(items)))
        if not isinstance(left, PathOperand):
            raise PathSyntaxError(self.text, left_at + 1,
                                  "a value alone is not a condition; compare a path with it")
        return Truthy(left)

    def operand(self) -> Operand:
        self.ws()
        ch = self.text[self.i:self.i + 1]
        if ch and ch in "\"'$":
            return Literal(self.literal_value())
        digit_next = self.text[self.i + 1:self.i + 2].isdigit()
        if (ch in ".-" and ch and digit_next) or self.at_segment():
            return PathOperand(self.value_path())
        return Literal(self.literal_value())

    def literal_value(self) -> str | None:
        self.ws()
        ch = self.text[self.i:self.i + 1]
        if ch and ch in "\"'":
            return self.quoted(ch)
        if ch == "$":
            self.i += 1
            m = _VAR.match(self.text, self.i)
            if not m:
                raise self.error("expected a variable name after '$'")
            self.i = m.end()
            if m.group() not in self.variables:
                raise PathSyntaxError(self.text, m.start(), f"unknown variable ${m.group()}")
            return self.variables[m.group()]
        m = _BARE.match(self.text, self.i)
        if not m or m.group() in _KEYWORDS:
            raise self.error("expected a field path, a value or a $variable")
        self.i = m.end()
        return m.group()

    def quoted(self, quote: str) -> str:
        out: list[str] = []
        i = self.i + 1
        while i < len(self.text):
            ch = self.text[i]
            if ch == "\\" and i + 1 < len(self.text):
                out.append(self.text[i + 1])
                i += 2
                continue
            if ch == quote:
                self.i = i + 1
                return "".join(out)
            out.append(ch)
            i += 1
        raise self.error("unterminated quoted string")
