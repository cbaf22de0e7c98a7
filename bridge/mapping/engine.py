"""The compiled mapping: routing, groups, and building worklist records.

Pure: a tokenized message in, pydicom Datasets out (each in a MappedStep that
can say where its values came from, bridge.mapping.provenance), no I/O,
nothing shared that changes. Everything a rule needs (paths, tables, checked constants) was
prepared when the mapping loaded, so mapping one ORM is a walk over positions.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol, cast

from pydicom import Dataset
from pydicom.datadict import dictionary_description
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag
from pydicom.uid import generate_uid

from bridge.hl7.message import Message, Repetition
from bridge.mapping import errors as codes
from bridge.mapping import vr
from bridge.mapping.conversions import ConversionError, NameFields, grouped_pn, name_run
from bridge.mapping.errors import MappingError
from bridge.mapping.paths import Anchor, Chain, Condition, FieldPath, RepPath
from bridge.mapping.provenance import MappedStep
from bridge.mapping.scope import (
    Context,
    Hit,
    MissingGroup,
    SegRef,
    Shadowed,
    message_contexts,
)

# pydicom's own validation only warns; values are checked in vr.fit before they get here.
_NO_VALIDATION = 0
STUDY_INSTANCE_UID = 0x0020000D
SPS_SEQUENCE_KEYWORD = "ScheduledProcedureStepSequence"
# Derived Study Instance UIDs are UUID-derived (PS3.5 B.2): 2.25.<uuid5 as an integer>.
_UID_NAMESPACE = uuid.UUID("7b1f1c3e-8f0e-5c4b-9a53-6d2d3f1b9a10")


_PLAIN_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC",
                             "UI", "UR", "UT"})


def _empty(kind: str) -> Any:
    if kind == "SQ":
        return []
    return "" if kind in vr.TEXT_VRS else None


# -- sources -------------------------------------------------------------------

Pair = tuple[Any, Hit | None]


@dataclass(frozen=True, slots=True)
class PathSource:
    chain: Chain
    structured: bool

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[Pair]:
        if multi:
            hits = self.chain.all_hits(ctx, anchor, self.structured)
        else:
            hit = self.chain.first_hit(ctx, anchor, self.structured)
            hits = [hit] if hit is not None else []
        if self.structured:
            return [(h.parts(), h) for h in hits]
        return [(h.text(), h) for h in hits]

    @property
    def text(self) -> str:
        return self.chain.text


@dataclass(frozen=True, slots=True)
class ConstSource:
    values: tuple[Any, ...]

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[Pair]:
        return [(v, None) for v in self.values]

    @property
    def text(self) -> str:
        return "a constant"


@dataclass(frozen=True, slots=True)
class FirstSource:
    rules: tuple[ValueRule, ...]

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[Pair]:
        for rule in self.rules:
            values, hit = rule.produce(ctx, anchor, multi)
            if values:
                return [(v, hit) for v in values]
        return []

    @property
    def text(self) -> str:
        return " | ".join(r.source.text for r in self.rules)


@dataclass(frozen=True, slots=True)
class ConcatSource:
    rules: tuple[ValueRule, ...]
    separator: str

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[Pair]:
        parts: list[str] = []
        first: Hit | None = None
        for rule in self.rules:
            values, hit = rule.produce(ctx, anchor, False)
            if values and values[0] not in ("", None):
                parts.append(str(values[0]))
                first = first or hit
        return [(self.separator.join(parts), first)] if parts else []

    @property
    def text(self) -> str:
        return " + ".join(r.source.text for r in self.rules)


class Source(Protocol):
    """Where a value comes from: the sources above, and those of bridge.mapping.sources
    (join, hook) and bridge.mapping.stations (station rules)."""

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[Pair]: ...

    @property
    def text(self) -> str: ...


# -- values --------------------------------------------------------------------

_NO_FALLBACK = object()


@dataclass(frozen=True, slots=True)
class ValueRule:
    """One value spec, compiled: a source and the steps applied to each value it yields."""

    keyword: str
    source: Source
    when: Condition | None = None
    regex: re.Pattern[str] | None = None
    replace: tuple[re.Pattern[str], str] | None = None
    table: dict[str, Any] | None = None
    table_fallback: Any = _NO_FALLBACK
    lookup: dict[str, str] | None = None
    lookup_name: str = ""  # set when a key missing from the table is an error (lookup_miss)
    text_conversion: Callable[[str], str] | None = None
    structured: Callable[[Repetition, bool], Any] | None = None
    case: Callable[[str], str] | None = None
    default: tuple[Any, ...] = ()
    truncate: bool = False
    names: NameFields | None = None  # as: PN/PN_XCN: repetitions may be component groups

    def produce(self, ctx: Context, anchor: Anchor, multi: bool) -> tuple[list[Any], Hit | None]:
        """The values (empty ones dropped) and the hit the first came from."""
        if self.when is not None and not self.when.test(ctx, anchor):
            return (list(self.default[:None if multi else 1]), None)
        out: list[Any] = []
        where: Hit | None = None
        joined: set[tuple[int, int, int]] = set()  # repetitions already in a name
        for raw, hit in self.source.fetch(ctx, anchor, multi):
            if self.names is not None and hit is not None and not hit.comp:
                if (id(hit.ref.segment), hit.field, hit.rep_no) in joined:
                    continue
                value = self._name(hit, self.names, joined)
            else:
                value = self._steps(raw, hit)
            if value is None or value == "":
                continue
            out.append(value)
            if where is None:
                where = hit
            if not multi:
                break
        if not out and self.default:
            out = list(self.default[:None if multi else 1])
        return out, where

    def _steps(self, raw: Any, hit: Hit | None) -> Any:
        if self.structured is not None:
            try:
                return self.structured(raw, self.truncate)
            except ConversionError as exc:
                raise self._error(codes.DATA_TYPE_ERROR, exc.problem, hit, _flat(raw)) from None
        if not isinstance(raw, str):
            return raw
        value: Any = raw
        if self.regex is not None:
            m = self.regex.search(value)
            value = ((m.group(1) if self.regex.groups else m.group(0)) or "") if m else ""
        if self.replace is not None:
            value = self.replace[0].sub(self.replace[1], value)
        if self.table is not None and value != "":
            if value in self.table:
                value = self.table[value]
            elif self.table_fallback is not _NO_FALLBACK:
                value = self.table_fallback
            else:
                raise self._error(codes.TABLE_VALUE_NOT_FOUND,
                                  "is not in the mapping's value map for this attribute",
                                  hit, value)
        if self.lookup is not None and value != "":
            found = self.lookup.get(value)
            if found is None and self.lookup_name:
                raise self._error(codes.TABLE_VALUE_NOT_FOUND,
                                  f"is not a key of lookup table {self.lookup_name}", hit, value)
            value = found or ""
        if self.text_conversion is not None and isinstance(value, str) and value:
            try:
                value = self.text_conversion(value)
            except ConversionError as exc:
                raise self._error(codes.DATA_TYPE_ERROR, exc.problem, hit, value) from None
        if self.case is not None and isinstance(value, str):
            value = self.case(value)
        return value

    def _name(self, hit: Hit, fields: NameFields, joined: set[tuple[int, int, int]]) -> Any:
        """The PN of the name starting at ``hit``: it and the repetitions after it
        that carry its other component groups (``conversions.name_run``)."""
        reps = hit.ref.segment.field(hit.field)[hit.rep_no - 1:]
        count = name_run(reps, fields)
        if count <= 1:
            return self._steps(hit.parts(), hit)
        names = []
        for offset, rep in enumerate(reps[:count]):
            member = Hit(hit.ref, hit.field, hit.rep_no + offset, rep)
            joined.add((id(hit.ref.segment), hit.field, member.rep_no))
            names.append((rep, str(self._steps(rep, member) or "")))
        return grouped_pn(names, fields)

    def _error(self, code: int, problem: str, hit: Hit | None, value: str) -> MappingError:
        where = hit.label() if hit is not None else self.source.text
        return MappingError(code, f"{self.keyword} ({where}) {problem}",
                            location=hit.location() if hit is not None else "",
                            attribute=self.keyword, value=value)


def _flat(parts: Any) -> str:
    if isinstance(parts, tuple):
        return "^".join("&".join(c) for c in parts).rstrip("^")
    return str(parts)


# -- attributes and items ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ItemRule:
    """The attributes of one Dataset: the record itself, or one sequence item."""

    attributes: tuple[AttributeRule, ...]

    def build(self, ctx: Context, anchor: Anchor) -> Dataset:
        # Filling a dict and wrapping it once costs half of adding elements one by one.
        elements: dict[BaseTag, DataElement] = {}
        for rule in self.attributes:
            rule.apply(ctx, anchor, elements)
        # Dataset's parameter is an invariant MutableMapping of DataElement or
        # RawDataElement; a dict of DataElements is a valid argument at run time.
        return Dataset(cast("dict[BaseTag, DataElement | RawDataElement]", elements))

    def find(self, keyword: str) -> AttributeRule | None:
        for rule in self.attributes:
            if rule.keyword == keyword:
                return rule
        return None


@dataclass(frozen=True, slots=True)
class StaticItems:
    items: tuple[ItemRule, ...]

    def build(self, ctx: Context, anchor: Anchor) -> list[Dataset]:
        return [item.build(ctx, anchor) for item in self.items]


@dataclass(frozen=True, slots=True)
class ForEachItems:
    path: FieldPath | RepPath
    item: ItemRule
    when: Condition | None = None

    def build(self, ctx: Context, anchor: Anchor) -> list[Dataset]:
        if self.when is not None and not self.when.test(ctx, anchor):
            return []
        anchors: Sequence[Hit | SegRef]
        if isinstance(self.path, FieldPath) and self.path.field == 0:
            anchors = self.path.segments(ctx, anchor)
        else:
            anchors = [h for h in self.path.hits(ctx, anchor) if h.has_parts()]
        return [self.item.build(ctx, a) for a in anchors]


@dataclass(frozen=True, slots=True)
class AttributeRule:
    """One DICOM attribute of an item and how to fill it."""

    keyword: str
    tag: BaseTag
    vr: str
    max_values: int  # 1: single-valued; 0: no limit
    value: ValueRule | None = None
    items: StaticItems | ForEachItems | None = None
    required: bool = False
    truncate: bool = False
    omit_empty: bool = False
    primary: Chain | None = None  # where a missing required value should have been

    def apply(self, ctx: Context, anchor: Anchor, out: dict[BaseTag, DataElement]) -> None:
        tag = self.tag
        if self.items is not None:
            datasets = self.items.build(ctx, anchor)
            if datasets or not self.omit_empty:
                out[tag] = DataElement(tag, "SQ", datasets, validation_mode=_NO_VALIDATION)
            return
        assert self.value is not None
        values, hit = self.value.produce(ctx, anchor, self.max_values != 1)
        if self.max_values != 1 and any(isinstance(v, str) and "\\" in v for v in values):
            # DICOM's value delimiter: a table or message value "CT01\\CT02" is two values.
            values = [p for v in values for p in (v.split("\\") if isinstance(v, str) else [v])
                      if p != ""]
        if not values:
            if self.required:
                raise self.missing(ctx, anchor)
            if not self.omit_empty:
                out[tag] = DataElement(tag, self.vr, _empty(self.vr),
                                       validation_mode=_NO_VALIDATION)
            return
        if self.vr == "SQ":
            out[tag] = DataElement(tag, "SQ", values, validation_mode=_NO_VALIDATION)
            return
        if self.max_values and len(values) > self.max_values:
            raise MappingError(codes.DATA_TYPE_ERROR,
                               f"{self.keyword} ({_where(hit, self)}) has {len(values)} values; "
                               f"it takes at most {self.max_values}",
                               location=hit.location() if hit else "", attribute=self.keyword)
        fitted = [self._fit(v, hit) for v in values]
        if len(fitted) == 1 and self.vr in _PLAIN_TEXT_VRS and isinstance(fitted[0], str):
            # vr.fit has checked the value; pydicom's conversion would only redo it.
            out[tag] = DataElement(tag, self.vr, fitted[0], already_converted=True)
            return
        out[tag] = DataElement(tag, self.vr, fitted[0] if len(fitted) == 1 else fitted,
                               validation_mode=_NO_VALIDATION)

    def _fit(self, value: Any, hit: Hit | None) -> Any:
        try:
            return vr.fit(self.vr, value, truncate=self.truncate)
        except vr.VRProblem as exc:
            raise MappingError(codes.DATA_TYPE_ERROR,
                               f"{self.keyword} ({_where(hit, self)}) {exc.problem}",
                               location=hit.location() if hit is not None else "",
                               attribute=self.keyword, value=str(value)) from None

    def missing(self, ctx: Context, anchor: Anchor) -> MappingError:
        source = self.value.source.text if self.value is not None else "its source"
        first = self.primary.paths[0] if self.primary is not None else None
        group = (ctx.missing_segment(first.segment)
                 if isinstance(first, FieldPath) and first.segment is not None else None)
        if group is not None and isinstance(first, FieldPath):
            # Not an empty field: the whole segment is missing from this group (an ORC
            # without its OBR), so point at the group, not at another group's segment.
            return MappingError(codes.SEGMENT_SEQUENCE_ERROR,
                                f"{self.keyword} is required but {group.segment.name} group "
                                f"{group.seq} has no {first.segment} segment (for {source})",
                                location=group.erl, attribute=self.keyword)
        location = (self.primary.missing_location(ctx, anchor)
                    if self.primary is not None else "")
        return MappingError(codes.REQUIRED_FIELD_MISSING,
                            f"{self.keyword} is required but {source} has no value",
                            location=location, attribute=self.keyword,
                            text=readable_missing(self.keyword, location))


def readable_missing(keyword: str, location: str) -> str:
    """ERR-8 for a RIS operator: "Patient ID missing (PID-3)", not the mapping's
    source expression. The field is the ERL's segment and field number."""
    try:
        name = dictionary_description(keyword)
    except (KeyError, ValueError):
        name = keyword
    parts = location.split("^")
    where = f" ({parts[0]}-{parts[2]})" if len(parts) >= 3 and parts[2] else ""
    return f"{name} missing{where}"


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _where(hit: Hit | None, rule: AttributeRule) -> str:
    if hit is not None:
        return hit.label()
    return rule.value.source.text if rule.value is not None else "value"


# -- study instance uid ----------------------------------------------------------

def derive_uid(namespace: str, values: Sequence[str]) -> str:
    """A UID that is the same for the same stable keys, so resends stay idempotent."""
    name = "\x1f".join([namespace, *values])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True, slots=True)
class StudyUidPolicy:
    missing: str  # derive | generate | reject
    derive_from: tuple[str, ...]
    namespace: str
    rule: AttributeRule | None  # the mapping's StudyInstanceUID, for error locations

    def apply(self, ds: Dataset, ctx: Context) -> None:
        elem = ds.get(STUDY_INSTANCE_UID)
        if elem is not None and elem.value:
            return
        if self.missing == "reject":
            if self.rule is not None:
                raise self.rule.missing(ctx, None)
            raise MappingError(codes.REQUIRED_FIELD_MISSING,
                               "StudyInstanceUID is required (study_uid.missing: reject) but "
                               "the mapping does not set it", attribute="StudyInstanceUID")
        if self.missing == "generate":
            uid = str(generate_uid(prefix=None))
        else:
            values = [_keyword_value(ds, kw) for kw in self.derive_from]
            if not any(values):
                location = ""
                if self.rule is not None and self.rule.primary is not None:
                    location = self.rule.primary.missing_location(ctx, None)
                raise MappingError(codes.REQUIRED_FIELD_MISSING,
                                   "StudyInstanceUID is missing and cannot be derived: "
                                   f"{', '.join(self.derive_from)} have no value",
                                   location=location, attribute="StudyInstanceUID")
            uid = derive_uid(self.namespace, values)
        ds.add(DataElement(STUDY_INSTANCE_UID, "UI", uid, validation_mode=_NO_VALIDATION))


def _keyword_value(ds: Dataset, keyword: str) -> str:
    for item in (ds, *ds.get(SPS_SEQUENCE_KEYWORD, ())):
        value = item.get(keyword)
        if value not in (None, ""):
            return str(value)
    return ""


# -- routing -------------------------------------------------------------------

# How far a message got through a mapping's match rule; the furthest decides the error.
_TYPE, _EVENT, _VERSION, _SENDER, _MATCH = range(5)


@dataclass(frozen=True, slots=True)
class MatchRule:
    types: tuple[tuple[str, str | None], ...]  # (code, event); event None: any
    versions: tuple[str, ...]
    applications: frozenset[str]
    facilities: frozenset[str]
    when: Condition | None
    fallback: bool

    def stage(self, message: Message, ctx: Context) -> int:
        msh = message.msh
        if self.types:
            code, event = msh.value(9, 1), msh.value(9, 2)
            if not any(c == code for c, _ in self.types):
                return _TYPE
            if not any(c == code and (e is None or e == event) for c, e in self.types):
                return _EVENT
        if self.versions:
            version = message.version
            if not any(version == v or version.startswith(v + ".") for v in self.versions):
                return _VERSION
        if self.applications and msh.value(3) not in self.applications:
            return _SENDER
        if self.facilities and msh.value(4) not in self.facilities:
            return _SENDER
        if self.when is not None and not self.when.test(ctx, None):
            return _SENDER
        return _MATCH


@dataclass(frozen=True)
class Mapping:
    """One mapping file, compiled."""

    name: str
    path: Path
    match: MatchRule
    group_by: tuple[str, ...]
    record: ItemRule
    study_uid: StudyUidPolicy
    sources: tuple[Path, ...] = ()  # lookup tables and hook files it read, for hot reload
    # Segment types an item reads one of (paths without a selector, ORC for the order
    # control): a second one where an item looks, or one no item sees, is rejected.
    one_per_item: tuple[str, ...] = ()
    # (trigger event, "ORC-1[/ORC-5]") for messages without ORC (SIU^S12 -> NW ...).
    event_control: tuple[tuple[str, str], ...] = ()

    def map(self, message: Message) -> list[MappedStep]:
        """One step per group (per message without ``group_by``); MappingError if rejected."""
        try:
            whole, groups = message_contexts(message, self.group_by, self.one_per_item)
        except MissingGroup as exc:
            raise MappingError(codes.SEGMENT_SEQUENCE_ERROR,
                               f"{exc}; mapping {self.name} makes one worklist item per "
                               f"{exc.child}",
                               location=f"{exc.parent.segment.name}^{exc.parent.seq}") from None
        except Shadowed as exc:
            raise self._shadowed(exc) from None
        if self.group_by and not groups:
            first = self.group_by[0]
            raise MappingError(codes.SEGMENT_SEQUENCE_ERROR,
                               f"the message has no {first} segment; mapping "
                               f"{self.name} makes one worklist item per {self.group_by[-1]}",
                               location=f"{first}^1")
        steps = []
        for ctx in groups or [whole]:
            ds = self.record.build(ctx, None)
            self.study_uid.apply(ds, ctx)
            # The step keeps its context: provenance is read from it later, if at all.
            steps.append(MappedStep(ds, self, ctx))
        return steps

    def _shadowed(self, exc: Shadowed) -> MappingError:
        """The rejection of a message with a segment no item would read, in words a RIS
        operator can act on: which segment, why, and what to send instead."""
        kind = exc.lost.segment.name
        unit = self.group_by[-1] if self.group_by else "message"
        if exc.container is None:
            where, hint = "the message", f"send one {kind} per message"
        else:
            lead = exc.container.segment.name
            where = f"{lead} group {exc.container.seq}"
            hint = f"send each {kind} with its own {lead}"
        # No "^" in the text: ERR-8 would carry it escaped (\S\); ERR-2 has the ERL.
        return MappingError(codes.SEGMENT_SEQUENCE_ERROR,
                            f"{where} has {exc.count} {kind} segments; mapping {self.name} "
                            f"reads one {kind} per worklist item (one item per {unit}), so "
                            f"the {_ordinal(exc.lost.seq)} {kind} of the message would be "
                            f"lost; {hint}",
                            location=exc.lost.erl)

    @cached_property
    def attributes(self) -> tuple[str, ...]:
        """The keywords of the item's top-level attributes, in mapping order."""
        return tuple(rule.keyword for rule in self.record.attributes)

    def reader(self, keywords: Collection[str]) -> AttributeReader:
        """Those of ``keywords`` the mapping sets, as rules to apply to any context."""
        return AttributeReader(self, keywords)

    def attribute_rule(self, keyword: str) -> AttributeRule | None:
        """The rule of a top-level attribute, or of one in the (first, static) Scheduled
        Procedure Step item, where most of what a step is about lives."""
        rule = self.record.find(keyword)
        if rule is not None:
            return rule
        sps = self.record.find(SPS_SEQUENCE_KEYWORD)
        if sps is not None and isinstance(sps.items, StaticItems) and sps.items.items:
            return sps.items.items[0].find(keyword)
        return None

    def locate(self, context: Context, keyword: str) -> str:
        """The ERL of the HL7 field an item's attribute was mapped from in ``context``
        ('' when unknown). An attribute the message left empty points at where the
        mapping looks for it first, so a "missing" error names the field to fill in."""
        rule = self.attribute_rule(keyword)
        if rule is None or rule.value is None:
            return ""
        _, hit = rule.value.produce(context, None, False)
        if hit is not None:
            return hit.location()
        return rule.primary.missing_location(context, None) if rule.primary is not None else ""

    def from_message(self, context: Context, keyword: str) -> bool:
        """Whether the message itself gave the attribute's value in ``context`` (not a
        default, constant or derivation such as a derived Study Instance UID)."""
        rule = self.attribute_rule(keyword)
        if rule is None or rule.value is None:
            return False
        values, hit = rule.value.produce(context, None, False)
        return bool(values) and hit is not None


class AttributeReader:
    """Some of a mapping's top-level attributes, read from a context of any message.

    ADT messages carry no order, so no mapping routes them; their PID is read
    with the patient attributes of an order mapping (bridge.orders.patients), so
    a site's ADT and orders get the same Patient ID from the same rule.
    """

    __slots__ = ("_item", "keywords", "mapping")

    def __init__(self, mapping: Mapping, keywords: Collection[str]) -> None:
        self.mapping = mapping.name
        self._item = ItemRule(tuple(r for r in mapping.record.attributes
                                    if r.keyword in keywords))
        self.keywords: tuple[str, ...] = tuple(r.keyword for r in self._item.attributes)

    def read(self, ctx: Context) -> Dataset:
        """The attributes; raises MappingError as the whole mapping would."""
        return self._item.build(ctx, None)


@dataclass(frozen=True, slots=True)
class MappingResult:
    """What MappingSet.map made of a message: one step per group, in message order."""

    mapping: str  # name of the mapping that routed
    mapping_path: Path
    steps: list[MappedStep]
    attributes: tuple[str, ...]  # the mapping's top-level attribute keywords (Mapping.attributes)

    @property
    def items(self) -> list[Dataset]:
        """The worklist items alone."""
        return [step.item for step in self.steps]


class MappingSet:
    """The loaded mappings, in routing order: first match wins, fallbacks last."""

    def __init__(self, mappings: Sequence[Mapping]) -> None:
        self.mappings: tuple[Mapping, ...] = tuple(mappings)
        self.names: list[str] = [m.name for m in self.mappings]
        self._routing = tuple([m for m in self.mappings if not m.match.fallback]
                              + [m for m in self.mappings if m.match.fallback])

    def route(self, message: Message) -> Mapping:
        """The mapping for a message, or MappingError (AR) saying what did not match."""
        ctx, _ = message_contexts(message)
        best = _TYPE
        for mapping in self._routing:
            stage = mapping.match.stage(message, ctx)
            if stage == _MATCH:
                return mapping
            best = max(best, stage)
        raise _routing_error(message, best)

    def map(self, message: Message) -> MappingResult:
        mapping = self.route(message)
        try:
            steps = mapping.map(message)
        except MappingError:
            raise
        except Exception as exc:  # a bug must not take the listener down; the sender may retry
            raise MappingError(codes.APPLICATION_INTERNAL_ERROR,
                               f"internal error in mapping {mapping.name}: "
                               f"{type(exc).__name__}", ack_code="AR") from exc
        return MappingResult(mapping.name, mapping.path, steps, mapping.attributes)


def _routing_error(message: Message, stage: int) -> MappingError:
    kind = message.message_type or "(empty MSH-9)"
    if stage == _TYPE:
        return MappingError(codes.UNSUPPORTED_MESSAGE_TYPE,
                            f"no mapping accepts message type {kind}",
                            location="MSH^1^9", ack_code="AR")
    if stage == _EVENT:
        return MappingError(codes.UNSUPPORTED_EVENT_CODE,
                            f"no mapping accepts trigger event {kind}",
                            location="MSH^1^9", ack_code="AR")
    if stage == _VERSION:
        return MappingError(codes.UNSUPPORTED_VERSION_ID,
                            f"no mapping accepts {kind} in HL7 version {message.version or '?'}",
                            location="MSH^1^12", ack_code="AR")
    return MappingError(codes.UNSUPPORTED_MESSAGE_TYPE,
                        f"no mapping accepts {kind} from this sender or with this content",
                        location="MSH^1^9", ack_code="AR")
