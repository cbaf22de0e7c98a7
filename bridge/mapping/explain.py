"""Why a message maps the way it does: routing, and for each attribute its value, the HL7
field it came from and the rule that fired (``mwl-bridge mapping explain``).

Values are computed by the engine itself (each attribute rule applied on its
own, so one failing attribute does not hide the others); this module only
works out the provenance: which path of a chain, which ``first:`` alternative,
which station rule, whether a map, lookup or default changed the value. Line
numbers come from the mapping file as it is on disk now. Nothing here is on
the ingest path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag

from bridge.hl7.message import Message
from bridge.mapping.engine import (
    _EVENT,
    _MATCH,
    _SENDER,
    _TYPE,
    _VERSION,
    STUDY_INSTANCE_UID,
    AttributeRule,
    ConcatSource,
    ConstSource,
    FirstSource,
    ForEachItems,
    ItemRule,
    Mapping,
    MappingResult,
    MappingSet,
    PathSource,
    StaticItems,
    ValueRule,
    _ordinal,
)
from bridge.mapping.errors import MappingError
from bridge.mapping.hooks import HookSource
from bridge.mapping.paths import Anchor, Chain, FieldPath
from bridge.mapping.provenance import group_label
from bridge.mapping.scope import Context, Hit, SegRef, message_contexts
from bridge.mapping.sources import JoinSource
from bridge.mapping.stations import StationAetSource, StationNameSource, StationRules
from bridge.yamlsrc import SourceError, YamlDoc, load_yaml

Loc = tuple[str | int, ...]
# Longer values are cut in the table (the golden-case files hold them whole).
_VALUE_WIDTH = 48


@dataclass(frozen=True, slots=True)
class Route:
    mapping: str
    path: Path
    verdict: str  # "takes it", or why not


@dataclass(frozen=True, slots=True)
class Row:
    attribute: str
    depth: int
    value: str
    field: str  # the HL7 position the value came from, e.g. PID-3[2].1
    rule: str  # the rule that fired, with its line in the mapping file
    error: MappingError | None = None


@dataclass
class ItemExplanation:
    group: str  # e.g. "ORC^1 > IPC^2"; "" without group_by
    rows: list[Row] = field(default_factory=list)


@dataclass
class Explanation:
    message: Message
    routes: list[Route]
    mapping: Mapping | None
    items: list[ItemExplanation]
    result: MappingResult | None
    error: MappingError | None


def routing_order(mappings: MappingSet) -> list[Mapping]:
    """The order MappingSet.route tries mappings in: fallbacks last."""
    return ([m for m in mappings.mappings if not m.match.fallback]
            + [m for m in mappings.mappings if m.match.fallback])


def explain(mappings: MappingSet, message: Message) -> Explanation:
    whole, _ = message_contexts(message)
    routes: list[Route] = []
    chosen: Mapping | None = None
    for mapping in routing_order(mappings):
        if chosen is not None:
            routes.append(Route(mapping.name, mapping.path, "not tried"))
            continue
        verdict = _verdict(mapping, message, whole)
        routes.append(Route(mapping.name, mapping.path, verdict))
        if verdict == "takes it":
            chosen = mapping
    result: MappingResult | None = None
    error: MappingError | None = None
    try:
        result = mappings.map(message)
    except MappingError as exc:
        error = exc
    items: list[ItemExplanation] = []
    if chosen is not None:
        items = _Walker(chosen, message, result).items()
    return Explanation(message, routes, chosen, items, result, error)


def _verdict(mapping: Mapping, message: Message, ctx: Context) -> str:
    match = mapping.match
    stage = match.stage(message, ctx)
    if stage == _MATCH:
        return "takes it"
    kinds = ", ".join(c + (f"^{e}" if e else "") for c, e in match.types)
    if stage == _TYPE:
        return f"no: message type {message.message_type or '(empty)'} is not {kinds}"
    if stage == _EVENT:
        return f"no: trigger event of {message.message_type} is not {kinds}"
    if stage == _VERSION:
        return (f"no: version {message.version or '(empty)'} is not "
                f"{', '.join(match.versions)}")
    assert stage == _SENDER
    msh = message.msh
    if match.applications and msh.value(3) not in match.applications:
        return (f"no: sending application {msh.value(3)!r} is not "
                f"{', '.join(sorted(match.applications))}")
    if match.facilities and msh.value(4) not in match.facilities:
        return (f"no: sending facility {msh.value(4)!r} is not "
                f"{', '.join(sorted(match.facilities))}")
    try:
        spec = load_yaml(mapping.path).data["match"]["when"]
    except (SourceError, KeyError, TypeError):
        spec = None
    return f"no: match.when {spec!r} is false" if spec is not None else \
        "no: its match.when is false"


def display(value: Any) -> str:
    """A value on one line: several values joined with \\, line breaks shown as \\n."""
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(display(v) for v in value)
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


class _Walker:
    """Evaluates a mapping attribute by attribute, noting where each value came from."""

    def __init__(self, mapping: Mapping, message: Message, result: MappingResult | None) -> None:
        self.mapping = mapping
        self.message = message
        self.result = result if result is not None and result.mapping == mapping.name else None
        try:
            self.doc: YamlDoc | None = load_yaml(mapping.path)
        except SourceError:
            self.doc = None

    # -- the file

    def raw(self, loc: Loc) -> Any:
        node: Any = self.doc.data if self.doc is not None else None
        for part in loc:
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            else:
                return None
        return node

    def line(self, loc: Loc) -> str:
        line = self.doc.line_of(loc) if self.doc is not None else None
        return f"line {line}: " if line else ""

    # -- items

    def items(self) -> list[ItemExplanation]:
        whole, groups = message_contexts(self.message, self.mapping.group_by) \
            if self._groups_ok() else (message_contexts(self.message)[0], [])
        contexts = groups or ([whole] if not self.mapping.group_by else [])
        out = []
        for i, ctx in enumerate(contexts):
            item = ItemExplanation(group_label(ctx, self.mapping.group_by))
            self.walk(self.mapping.record, ctx, None, ("attributes",), 0, item.rows)
            self.study_uid(ctx, i, item.rows)
            out.append(item)
        return out

    def _groups_ok(self) -> bool:
        try:
            message_contexts(self.message, self.mapping.group_by)
        except ValueError:
            return False
        return True

    def walk(self, item: ItemRule, ctx: Context, anchor: Anchor, loc: Loc, depth: int,
             rows: list[Row]) -> None:
        for rule in item.attributes:
            self.attribute(rule, ctx, anchor, (*loc, rule.keyword), depth, rows)

    def attribute(self, rule: AttributeRule, ctx: Context, anchor: Anchor, loc: Loc, depth: int,
                  rows: list[Row]) -> None:
        # A sequence of items is walked item by item, so the attribute that fails inside
        # it is shown, not the sequence as a whole.
        if isinstance(rule.items, StaticItems):
            count = len(rule.items.items)
            rows.append(Row(rule.keyword, depth, f"{count} item{'s' if count != 1 else ''}",
                            "", self.line(loc).rstrip(": ")))
            for i, sub in enumerate(rule.items.items):
                self.walk(sub, ctx, anchor, (*loc, i), depth + 1, rows)
            return
        if isinstance(rule.items, ForEachItems):
            anchors = _for_each_anchors(rule.items, ctx, anchor)
            spec = self.raw(loc) or {}
            rows.append(Row(rule.keyword, depth,
                            f"{len(anchors)} item{'s' if len(anchors) != 1 else ''}", "",
                            f"{self.line(loc)}for_each {spec.get('for_each', '')}"))
            for a in anchors:
                self.walk(rule.items.item, ctx, a, (*loc, "item"), depth + 1, rows)
            return
        scratch: dict[BaseTag, DataElement] = {}
        try:
            rule.apply(ctx, anchor, scratch)
        except MappingError as exc:
            field_, text = self.describe(rule, ctx, anchor, loc)
            rows.append(Row(rule.keyword, depth, "", field_, text, exc))
            return
        elem = scratch.get(rule.tag)
        field_, text = self.describe(rule, ctx, anchor, loc)
        if elem is None:
            rows.append(Row(rule.keyword, depth, "(left out: empty)", field_, text))
        elif elem.VR == "SQ":
            rows.append(Row(rule.keyword, depth,
                            f"{len(elem.value)} item{'s' if len(elem.value) != 1 else ''}",
                            field_, text))
            for ds in elem.value:
                for sub in ds:
                    rows.append(Row(sub.keyword, depth + 1, display(sub.value), "", ""))
        else:
            rows.append(Row(rule.keyword, depth, display(elem.value), field_, text))

    def study_uid(self, ctx: Context, index: int, rows: list[Row]) -> None:
        policy = self.mapping.study_uid
        final = self.result.steps[index].item if self.result is not None else None
        row_at = next((i for i, r in enumerate(rows)
                       if r.depth == 0 and r.attribute == "StudyInstanceUID"), None)
        if row_at is not None and rows[row_at].value:
            return  # the message had one
        if policy.missing == "derive":
            how = f"derived from {', '.join(policy.derive_from)}"
        elif policy.missing == "generate":
            how = "generated (random)"
        else:
            how = "missing: the mapping rejects the message (study_uid.missing: reject)"
        value = "(none: message rejected)" if self.result is None else ""
        if final is not None and STUDY_INSTANCE_UID in final:
            value = str(final[STUDY_INSTANCE_UID].value)
        row = Row("StudyInstanceUID", 0, value, "",
                  f"{self.line(('study_uid', 'missing'))}study_uid: {how}")
        if row_at is None:
            rows.append(row)
        else:
            rows[row_at] = row

    # -- provenance

    def describe(self, rule: AttributeRule, ctx: Context, anchor: Anchor, loc: Loc
                 ) -> tuple[str, str]:
        if rule.value is None:
            return "", self.line(loc).rstrip(": ")
        try:
            hit, text = self.value(rule.value, ctx, anchor, rule.max_values != 1, loc)
        except MappingError:
            # The attribute fails; its error row says where and why.
            return "", self.line(loc) + rule.value.source.text
        if isinstance(rule.value.source, StationAetSource | StationNameSource):
            return (hit.label() if hit is not None else ""), text  # lines of stations:
        return (hit.label() if hit is not None else ""), self.line(loc) + text

    def value(self, vr: ValueRule, ctx: Context, anchor: Anchor, multi: bool, loc: Loc
              ) -> tuple[Hit | None, str]:
        spec = self.raw(loc)
        if isinstance(spec, str):
            spec = {"from": spec}
        if not isinstance(spec, dict):
            spec = {}
        if vr.when is not None and not vr.when.test(ctx, anchor):
            when = spec.get("when")
            return None, (f"when: {when!r} is false" if when is not None else "when is false") \
                + ("; default" if vr.default else "")
        hit, text = self.source(vr, ctx, anchor, multi, loc, spec)
        notes = [text]
        labels = {"regex": "regex", "replace": "replace", "map": "map",
                  "lookup": f"lookup {spec.get('lookup')}", "as": f"as {spec.get('as')}",
                  "case": f"case {spec.get('case')}", "join": f"join {spec.get('join')!r}"}
        notes.extend(label for step, label in labels.items() if spec.get(step) is not None)
        values, _ = vr.produce(ctx, anchor, multi)
        fetched = vr.source.fetch(ctx, anchor, multi) if not isinstance(vr.source, JoinSource) \
            else []
        raw = fetched[0][0] if fetched else None
        final = values[0] if values else ""
        if isinstance(raw, str) and isinstance(final, str) and raw != final:
            notes.append(f"{raw!r} -> {final!r}")
        if vr.default and values and values[0] == vr.default[0] and (
                not fetched or raw != final):
            notes.append("default")
        return hit, ", ".join(n for n in notes if n)

    def source(self, vr: ValueRule, ctx: Context, anchor: Anchor, multi: bool, loc: Loc,
               spec: dict[str, Any]) -> tuple[Hit | None, str]:
        src = vr.source
        if isinstance(src, JoinSource):
            src = src.inner.source
        if isinstance(src, PathSource):
            return _chain_origin(src.chain, ctx, anchor, src.structured)
        if isinstance(src, ConstSource):
            return None, "const"
        if isinstance(src, HookSource):
            return None, f"hook {src.name}"
        if isinstance(src, FirstSource):
            for i, sub in enumerate(src.rules):
                values, _ = sub.produce(ctx, anchor, multi)
                if values:
                    hit, text = self.value(sub, ctx, anchor, multi, (*loc, "first", i))
                    return hit, f"first: {_ordinal(i + 1)} of {len(src.rules)} ({text})"
            return None, f"first: none of {len(src.rules)} gave a value"
        if isinstance(src, ConcatSource):
            fetched = src.fetch(ctx, anchor, False)
            return (fetched[0][1] if fetched else None), f"concat of {len(src.rules)} values"
        if isinstance(src, StationAetSource | StationNameSource):
            return self.station(src.rules, isinstance(src, StationNameSource), ctx, anchor)
        return None, src.text

    def station(self, rules: StationRules, name: bool, ctx: Context, anchor: Anchor
                ) -> tuple[Hit | None, str]:
        pick = rules.pick(ctx, anchor)
        if pick.rule is None:
            loc: Loc = ("stations", "default", "station_name" if name else "aet")
            what = "station default"
            value_rule = rules.default_name if name else rules.default_aet
        else:
            loc = ("stations", "rules", pick.rule.index, "station_name" if name else "aet")
            what = f"station rule {pick.rule.name!r} (priority {pick.rule.priority})"
            value_rule = pick.rule.station_name if name else pick.rule.aet
        if value_rule is None:
            return None, f"{self.line(loc[:-1])}{what}: no station_name"
        hit, text = self.value(value_rule, ctx, anchor, not name, loc)
        return hit, f"{self.line(loc)}{what}: {text}"


def _chain_origin(chain: Chain, ctx: Context, anchor: Anchor, structured: bool
                  ) -> tuple[Hit | None, str]:
    for i, path in enumerate(chain.paths):
        hit = Chain(path.text, (path,)).first_hit(ctx, anchor, structured)
        if hit is not None:
            which = f" ({_ordinal(i + 1)} path)" if len(chain.paths) > 1 else ""
            return hit, f"from {chain.text}{which}"
    return None, f"from {chain.text}: no value"


def _for_each_anchors(items: ForEachItems, ctx: Context, anchor: Anchor
                      ) -> Sequence[Hit | SegRef]:
    # As ForEachItems.build chooses them.
    if items.when is not None and not items.when.test(ctx, anchor):
        return []
    if isinstance(items.path, FieldPath) and items.path.field == 0:
        return items.path.segments(ctx, anchor)
    return [h for h in items.path.hits(ctx, anchor) if h.has_parts()]


# -- text ---------------------------------------------------------------------------

def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def render(exp: Explanation) -> str:
    """The explanation as a user reads it in a terminal."""
    m = exp.message
    sender = "/".join(v for v in (m.msh.value(3), m.msh.value(4)) if v)
    out = [f"message  {m.message_type or '(no MSH-9)'}, control ID {m.control_id!r}, "
           f"HL7 {m.version or '?'}" + (f", from {sender}" if sender else ""), "routing"]
    width = max((len(r.mapping) for r in exp.routes), default=0)
    for i, route in enumerate(exp.routes, 1):
        out.append(f"  {i}. {route.mapping.ljust(width)}  {route.verdict}")
    if exp.mapping is None:
        out.append("mapping  none")
    else:
        out.append(f"mapping  {exp.mapping.name} ({shown_path(exp.mapping.path)})")
    for n, item in enumerate(exp.items, 1):
        out.append("")
        group = f" ({item.group})" if item.group else ""
        out.append(f"item {n} of {len(exp.items)}{group}")
        out.extend(_table(item.rows))
    out.append("")
    if exp.error is not None:
        e = exp.error
        where = f" at {e.location}" if e.location else ""
        out.append(f"result   rejected: {e.ack_code}, error {e.code}{where}: {e.text}")
    elif exp.result is not None:
        count = len(exp.result.steps)
        out.append(f"result   accepted: {count} worklist item{'s' if count != 1 else ''} "
                   f"by mapping {exp.result.mapping}")
    return "\n".join(out) + "\n"


def _clip(value: str, width: int = _VALUE_WIDTH) -> str:
    return value if len(value) <= width else value[:width - 3] + "..."


def _table(rows: list[Row]) -> list[str]:
    names = ["  " * r.depth + r.attribute for r in rows]
    values = [("ERROR " + str(r.error.code)) if r.error is not None else _clip(r.value)
              for r in rows]
    w_name = max([len("ATTRIBUTE"), *(len(n) for n in names)])
    w_value = max([len("VALUE"), *(len(v) for v in values)])
    w_field = max([len("HL7"), *(len(r.field) for r in rows)])
    out = [f"  {'ATTRIBUTE'.ljust(w_name)}  {'VALUE'.ljust(w_value)}  {'HL7'.ljust(w_field)}  RULE"]
    for name, value, row in zip(names, values, rows, strict=True):
        out.append(f"  {name.ljust(w_name)}  {value.ljust(w_value)}  {row.field.ljust(w_field)}  "
                   f"{row.rule}".rstrip())
        if row.error is not None:
            where = f" at {row.error.location}" if row.error.location else ""
            out.append(f"  {' ' * w_name}  -> error {row.error.code}{where}: {row.error.text}")
    return out
