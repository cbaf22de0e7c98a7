"""Loading mapping files: validate everything, report every problem with file, line and key.

A mapping is compiled here once (paths parsed, constants checked against their
VR, lookup tables read, paths checked against the HL7 structure tables) so
that nothing of this happens per message.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.datadict import dictionary_VM, dictionary_VR, keyword_dict
from pydicom.tag import BaseTag

from bridge.mapping import vr
from bridge.mapping.conversions import CONVERSIONS
from bridge.mapping.engine import (
    SPS_SEQUENCE_KEYWORD,
    AttributeRule,
    ConcatSource,
    ConstSource,
    FirstSource,
    ForEachItems,
    ItemRule,
    Mapping,
    MappingSet,
    MatchRule,
    PathSource,
    StaticItems,
    StudyUidPolicy,
    ValueRule,
)
from bridge.mapping.errors import MappingLoadError
from bridge.mapping.hl7spec import StructureChecker
from bridge.mapping.hooks import HookFunction, HookLoadError, HookSource, load_hook
from bridge.mapping.lookups import VALUE_COLUMN, LookupTable, load_table
from bridge.mapping.paths import (
    Chain,
    Condition,
    FieldPath,
    FieldRef,
    PathSyntax,
    PathSyntaxError,
    Relative,
)
from bridge.mapping.schema import ForEachSpec, MappingSpec, StationsSpec, ValueSpec
from bridge.mapping.sources import JoinSource
from bridge.mapping.stations import (
    AET_KEYWORD,
    NAME_KEYWORD,
    StationAetSource,
    StationNameSource,
    StationRule,
    StationRules,
)
from bridge.yamlsrc import (
    YAML_SUFFIXES,
    FileChecker,
    SourceError,
    collect_yaml_files,
    load_yaml,
)

if TYPE_CHECKING:
    from bridge.mapping.settings import MappingSettings

MAPPING_SUFFIXES = YAML_SUFFIXES
BUILTIN_VARS = ("default_station_aet",)
# Read by the order lifecycle (MappedStep.order_control) for every item, path or not.
ORDER_CONTROL_SEGMENT = "ORC"
# Set per answer by the worklist SCP, from the calling AE's configuration.
_FORBIDDEN = {"SpecificCharacterSet": "is set by the worklist SCP for each answer"}
_SUPPORTED_VRS = vr.TEXT_VRS | {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "SQ"}

Loc = tuple[str | int, ...]


def load_configured(settings: MappingSettings) -> MappingSet:
    """Load the mappings the configuration names (``mapping:`` section)."""
    return load_mappings(settings.paths, default_station_aet=settings.default_station_aet,
                         python_hooks=settings.python_hooks)


def mapping_files(paths: Sequence[Path]) -> list[Path]:
    """The mapping files the given files and folders stand for, in load order."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir()
                                if p.is_file() and p.suffix.lower() in MAPPING_SUFFIXES))
        elif path.is_file():
            files.append(path)
    return files


def load_mappings(paths: Sequence[Path], *, default_station_aet: str,
                  python_hooks: bool = False) -> MappingSet:
    """Load mapping files and folders (every *.yaml/*.yml inside, in name order).

    The routing order is by ``match.priority`` (highest first), then load
    order; fallbacks come last. ``python_hooks`` allows ``hooks:``.
    Raises MappingLoadError listing every problem found, each with file, line and key.
    """
    files, errors = collect_yaml_files(paths, "mapping")
    if not paths:
        errors.append(SourceError("<mapping paths>", None, "", "no mapping files given"))
    mappings: list[tuple[int, Mapping]] = []
    first_seen: dict[str, Path] = {}
    for path in files:
        compiler = _FileCompiler(path, default_station_aet, python_hooks)
        mapping = compiler.compile()
        errors.extend(compiler.errors)
        if mapping is None:
            continue
        if mapping.name in first_seen:
            errors.append(compiler.doc_error(
                ("name",), f"mapping name {mapping.name!r} is already used by "
                           f"{first_seen[mapping.name]}"))
            continue
        first_seen[mapping.name] = path
        mappings.append((compiler.priority, mapping))
    if errors:
        raise MappingLoadError(errors)
    mappings.sort(key=lambda pm: -pm[0])  # stable: equal priorities keep the load order
    return MappingSet([m for _, m in mappings])


class _FileCompiler(FileChecker):
    """Compiles one mapping file, collecting errors instead of stopping at the first."""

    def __init__(self, path: Path, default_station_aet: str, python_hooks: bool = False) -> None:
        super().__init__(path)
        self.default_station_aet = default_station_aet
        self.python_hooks = python_hooks
        self.syntax = PathSyntax({})
        self.checker = StructureChecker(())
        self.tables: dict[str, LookupTable] = {}
        self.hooks: dict[str, HookFunction] = {}
        self.sources: list[Path] = []  # files read besides the mapping file
        self.priority = 0
        # Segment types some path reads without a selector (OBR-18): one per item.
        self.single_reads: set[str] = set()

    # -- helpers

    def doc_error(self, loc: Loc, problem: str) -> SourceError:
        return self.doc.error(loc, problem)

    def check_refs(self, refs: list[FieldRef], loc: Loc, item_reads: bool = True) -> None:
        """Check paths against the structure tables; note the segments an item reads one of
        (``item_reads`` False for routing conditions, which look at the whole message)."""
        for ref in refs:
            problem = self.checker.problem(ref)
            if problem:
                self.error(loc, problem)
            if ref.plain and item_reads:
                self.single_reads.add(ref.segment)

    def chain(self, text: str, loc: Loc, rel: Relative | None) -> Chain | None:
        try:
            chain, refs = self.syntax.chain(text, rel)
        except PathSyntaxError as exc:
            self.error(loc, f"bad path: {exc}")
            return None
        self.check_refs(refs, loc)
        return chain

    def condition(self, spec: Any, loc: Loc, rel: Relative | None,
                  item_reads: bool = True) -> Condition | None:
        if spec is None:
            return None
        try:
            cond, refs = self.syntax.condition(spec, rel)
        except PathSyntaxError as exc:
            self.error(loc, f"bad condition: {exc}")
            return None
        self.check_refs(refs, loc, item_reads)
        return cond

    def scalar(self, value: Any, loc: Loc) -> Any:
        """A constant with $variables substituted; None for a variable that is not set."""
        if isinstance(value, str) and value.startswith("$"):
            if value.startswith("$$"):
                return value[1:]
            name = value[1:]
            if name not in self.syntax.variables:
                self.error(loc, f"unknown variable ${name}; known: "
                           + ", ".join(f"${v}" for v in self.syntax.variables))
                return None
            return self.syntax.variables[name]
        return value

    # -- the file

    def compile(self) -> Mapping | None:
        try:
            self.doc = load_yaml(self.path)
        except SourceError as exc:
            self.errors.append(exc)
            return None
        data = self.doc.data
        if not isinstance(data, dict):
            self.error((), "a mapping file is a YAML mapping with name:, match: and attributes:")
            return None
        spec: MappingSpec | None = self.model(MappingSpec, data, ())
        raw_vars = data.get("vars") if isinstance(data.get("vars"), dict) else {}
        self.setup_vars((spec.vars if spec is not None else raw_vars) or {})
        if spec is not None:
            self.checker = StructureChecker(spec.match.versions)
            self.priority = spec.match.priority
            self.load_lookups(spec)
            self.load_hooks(spec)
        attributes = data.get("attributes")
        if not isinstance(attributes, dict):
            return None  # the model already reported it
        record = self.item(attributes, ("attributes",), None)
        if spec is None:
            return None
        match = self.match(spec)
        self.check_record(attributes, record)
        if spec.stations is not None:
            record = self.stations(spec.stations, record)
        for i, segment in enumerate(spec.group_by):
            loc: Loc = ("group_by", i) if ("group_by", i) in self.doc.lines else ("group_by",)
            self.check_refs([FieldRef(segment, 0, 0, 0, segment)], loc)
        one_per_item = self.one_per_item(spec)
        policy = self.study_uid(spec, record)
        if self.errors or match is None:
            return None
        return Mapping(spec.name, self.path, match, tuple(spec.group_by), record, policy,
                       sources=tuple(dict.fromkeys(self.sources)), one_per_item=one_per_item,
                       event_control=tuple(spec.order_control.items()))

    def one_per_item(self, spec: MappingSpec) -> tuple[str, ...]:
        """The segment types each item reads one of: those a path names without a
        selector, and ORC (its ORC-1/ORC-5 drive the order lifecycle), less ``take_first``."""
        single = self.single_reads | {ORDER_CONTROL_SEGMENT}
        for i, segment in enumerate(spec.take_first):
            loc: Loc = ("take_first", i) if ("take_first", i) in self.doc.lines \
                else ("take_first",)
            if segment not in single:
                self.error(loc, f"no path reads {segment} without a selector, so there is no "
                                f"first {segment} to take; take_first: lists segment types "
                                "read like OBX-5 that may repeat")
        return tuple(sorted(single - set(spec.take_first)))

    def setup_vars(self, raw: dict[Any, Any]) -> None:
        variables: dict[str, str | None] = {}
        for name, value in raw.items():
            if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.error(("vars", name), "a variable name is letters, digits and _")
                continue
            if name in BUILTIN_VARS:
                self.error(("vars", name), f"${name} is set by the bridge configuration "
                                           "(mapping.default_station_aet)")
                continue
            variables[name] = None if value is None else str(value)
        variables["default_station_aet"] = self.default_station_aet
        self.syntax = PathSyntax(variables)

    def load_lookups(self, spec: MappingSpec) -> None:
        for name, lookup in spec.lookups.items():
            path = Path(lookup.file)
            if not path.is_absolute():
                path = self.path.parent / path
            if not path.is_file():
                self.error(("lookups", name, "file"), f"lookup file not found: {path}")
                continue
            self.sources.append(path)
            try:
                self.tables[name] = load_table(path, lookup.key)
            except SourceError as exc:
                self.errors.append(exc)

    def load_hooks(self, spec: MappingSpec) -> None:
        if spec.hooks and not self.python_hooks:
            self.error(("hooks",), "Python hooks are off; an operator can allow them with "
                                   "mapping.python_hooks: true in the configuration")
            return
        for name, target in spec.hooks.items():
            try:
                function, path = load_hook(target, self.path.parent)
            except HookLoadError as exc:
                if exc.path is not None:
                    self.sources.append(exc.path)
                    self.errors.append(SourceError(exc.path, exc.line, f"hooks.{name}",
                                                   exc.problem))
                else:
                    self.error(("hooks", name), exc.problem)
                continue
            self.sources.append(path)
            self.hooks[name] = function

    def match(self, spec: MappingSpec) -> MatchRule | None:
        m = spec.match
        types = []
        for mt in m.message_type:
            code, _, event = mt.partition("^")
            types.append((code, None if event in ("", "*") else event))
        when = self.condition(m.when, ("match", "when"), None, item_reads=False)
        if m.when is not None and when is None:
            return None
        return MatchRule(tuple(types), tuple(m.versions), frozenset(m.sending_application),
                         frozenset(m.sending_facility), when, m.fallback)

    def check_record(self, attributes: dict[str, Any], record: ItemRule) -> None:
        sps = attributes.get(SPS_SEQUENCE_KEYWORD)
        if sps is None:
            self.error(("attributes",), f"a worklist record needs {SPS_SEQUENCE_KEYWORD} "
                                        "with one item (the Scheduled Procedure Step)")
        elif not isinstance(sps, list) or len(sps) != 1:
            self.error(("attributes", SPS_SEQUENCE_KEYWORD),
                       "give exactly one item (a list with one mapping): each record is one "
                       "Scheduled Procedure Step; a message yields one record per group")

    def stations(self, spec: StationsSpec, record: ItemRule) -> ItemRule:
        """The record with station rules added to its Scheduled Procedure Step item."""
        sps = record.find(SPS_SEQUENCE_KEYWORD)
        if sps is None or not isinstance(sps.items, StaticItems) or len(sps.items.items) != 1:
            return record  # check_record has said why
        (item,) = sps.items.items
        ok = True
        for keyword in (AET_KEYWORD, NAME_KEYWORD):
            if item.find(keyword) is not None:
                self.error(("attributes", SPS_SEQUENCE_KEYWORD, 0, keyword),
                           f"{keyword} is set by stations: rules; remove it here or there")
                ok = False
        rules: list[StationRule] = []
        names: set[str] = set()
        for i, rule_spec in enumerate(spec.rules):
            loc: Loc = ("stations", "rules", i)
            if rule_spec.name in names:
                self.error((*loc, "name"), f"rule name {rule_spec.name!r} is used twice")
                ok = False
            names.add(rule_spec.name)
            when = self.condition(rule_spec.when, (*loc, "when"), None)
            aet = self.station_value(rule_spec.aet, (*loc, "aet"), AET_KEYWORD, "AE", 0)
            name = (self.station_value(rule_spec.station_name, (*loc, "station_name"),
                                       NAME_KEYWORD, "SH", 1)
                    if rule_spec.station_name is not None else None)
            if aet is None or (rule_spec.when is not None and when is None) or (
                    rule_spec.station_name is not None and name is None):
                ok = False
                continue
            rules.append(StationRule(rule_spec.name, rule_spec.priority, i, when, aet, name))
        default = spec.default
        default_aet = self.station_value(
            default.aet if default.aet is not None else "$default_station_aet",
            ("stations", "default", "aet"), AET_KEYWORD, "AE", 0)
        default_name = (self.station_value(default.station_name,
                                           ("stations", "default", "station_name"),
                                           NAME_KEYWORD, "SH", 1)
                        if default.station_name is not None else None)
        if not ok or default_aet is None or (default.station_name is not None
                                             and default_name is None):
            return record
        rules.sort(key=lambda r: -r.priority)  # stable: equal priorities keep the file order
        station_rules = StationRules(tuple(rules), default_aet, default_name)
        added = []
        for keyword, source in ((AET_KEYWORD, StationAetSource(station_rules)),
                                (NAME_KEYWORD, StationNameSource(station_rules))):
            tag = BaseTag(keyword_dict[keyword])
            added.append(AttributeRule(keyword, tag, dictionary_VR(tag),
                                       vr.max_values(dictionary_VM(tag)),
                                       value=ValueRule(keyword=keyword, source=source)))
        new_item = ItemRule((*item.attributes, *added))
        new_sps = dataclasses.replace(sps, items=StaticItems((new_item,)))
        return ItemRule(tuple(new_sps if r is sps else r for r in record.attributes))

    def station_value(self, raw: Any, loc: Loc, keyword: str, kind: str,
                      max_values: int) -> ValueRule | None:
        """A station rule's value: like an attribute's, and a list is a list of constants."""
        if isinstance(raw, list):
            raw = {"const": raw}
        if isinstance(raw, str) and not raw.startswith("$"):
            try:
                self.syntax.chain(raw)
            except PathSyntaxError as exc:
                self.error(loc, f"bad path: {exc}; for a constant write {{const: {raw}}}")
                return None
        spec = self.value_spec(raw, loc)
        if spec is None:
            return None
        for flag in ("required", "truncate", "omit_empty"):
            if getattr(spec, flag):
                self.error((*loc, flag), f"{flag} does not apply to a station rule")
                return None
        return self.value(spec, loc, keyword, kind, max_values, None)

    def study_uid(self, spec: MappingSpec, record: ItemRule) -> StudyUidPolicy:
        defined = {r.keyword for r in record.attributes}
        sps = record.find(SPS_SEQUENCE_KEYWORD)
        if sps is not None and isinstance(sps.items, StaticItems):
            for item in sps.items.items:
                defined |= {r.keyword for r in item.attributes}
        if spec.study_uid.missing == "derive":
            for i, keyword in enumerate(spec.study_uid.derive_from):
                if keyword not in defined:
                    self.error(("study_uid", "derive_from", i),
                               f"{keyword} is not an attribute this mapping sets")
        return StudyUidPolicy(spec.study_uid.missing, tuple(spec.study_uid.derive_from),
                              spec.study_uid.namespace, record.find("StudyInstanceUID"))

    # -- attributes

    def item(self, raw: dict[Any, Any], loc: Loc, rel: Relative | None) -> ItemRule:
        rules: list[AttributeRule] = []
        for keyword, value in raw.items():
            aloc = (*loc, keyword)
            if not isinstance(keyword, str) or keyword not in keyword_dict:
                hint = difflib.get_close_matches(str(keyword), keyword_dict, n=1)
                self.error(aloc, f"unknown DICOM keyword {keyword!r}"
                           + (f"; did you mean {hint[0]}?" if hint else ""))
                continue
            if keyword in _FORBIDDEN:
                self.error(aloc, f"{keyword} {_FORBIDDEN[keyword]}; a mapping does not set it")
                continue
            tag = BaseTag(keyword_dict[keyword])
            kind = dictionary_VR(tag)
            if kind not in _SUPPORTED_VRS:
                self.error(aloc, f"{keyword} has VR {kind}, which mappings cannot set")
                continue
            rule = self.attribute(keyword, tag, kind, dictionary_VM(tag), value, aloc, rel)
            if rule is not None:
                rules.append(rule)
        return ItemRule(tuple(rules))

    def attribute(self, keyword: str, tag: BaseTag, kind: str, vm: str, raw: Any, loc: Loc,
                  rel: Relative | None) -> AttributeRule | None:
        # A sequence holds any number of items, whatever the VM of the attribute says.
        max_values = 0 if kind == "SQ" else vr.max_values(vm)
        if kind == "SQ":
            if isinstance(raw, list):
                items = []
                for i, entry in enumerate(raw):
                    if not isinstance(entry, dict):
                        self.error((*loc, i), "a sequence item is a mapping of DICOM keywords "
                                              "to values")
                        continue
                    items.append(self.item(entry, (*loc, i), rel))
                return AttributeRule(keyword, tag, kind, 0, items=StaticItems(tuple(items)))
            if isinstance(raw, dict) and "for_each" in raw:
                return self.for_each(keyword, tag, raw, loc, rel)
            if isinstance(raw, dict) and raw.get("as") in ("CODE", "CODE_ALT"):
                pass  # a value that yields code items, below
            else:
                self.error(loc, f"{keyword} is a sequence: give a list of items, a for_each, "
                                "or a value with as: CODE")
                return None
        elif isinstance(raw, list) or (isinstance(raw, dict) and "for_each" in raw):
            self.error(loc, f"{keyword} is not a sequence (VR {kind}); give a path or a "
                            "mapping with from:/const:")
            return None
        spec = self.value_spec(raw, loc)
        if spec is None:
            return None
        rule = self.value(spec, loc, keyword, kind, max_values, rel)
        if rule is None:
            return None
        return AttributeRule(keyword, tag, kind, max_values, value=rule, required=spec.required,
                             truncate=spec.truncate, omit_empty=spec.omit_empty,
                             primary=_primary(rule))

    def for_each(self, keyword: str, tag: BaseTag, raw: dict[str, Any], loc: Loc,
                 rel: Relative | None) -> AttributeRule | None:
        spec: ForEachSpec | None = self.model(ForEachSpec, raw, loc)
        if spec is None:
            return None
        try:
            path, refs = self.syntax.iterable(spec.for_each, rel)
        except PathSyntaxError as exc:
            self.error((*loc, "for_each"), f"bad path: {exc}")
            return None
        self.check_refs(refs, (*loc, "for_each"))
        if isinstance(path, FieldPath):
            segment = path.segment or (rel.segment if rel else None)
            item_rel: Relative | None = (Relative("seg", segment) if path.field == 0
                        else Relative("rep", segment, path.field))
        else:
            item_rel = rel
        item = self.item(spec.item, (*loc, "item"), item_rel)
        when = self.condition(spec.when, (*loc, "when"), rel)
        return AttributeRule(keyword, tag, "SQ", 0, items=ForEachItems(path, item, when))

    def value_spec(self, raw: Any, loc: Loc) -> ValueSpec | None:
        if isinstance(raw, str) and raw.startswith("$"):
            raw = {"const": raw}  # a variable is never a path
        elif isinstance(raw, str):
            raw = {"from": raw}
        elif (isinstance(raw, float) and 0 < raw < 1) or (isinstance(raw, int) and raw < 0):
            self.error(loc, f"YAML reads this as the number {raw!r}; quote a relative path: "
                            "'.1' or '-5'")
            return None
        elif not isinstance(raw, dict):
            hint = f"; for a constant write const: {raw!r}" if raw is not None else ""
            self.error(loc, "a value is a path (e.g. PID-3.1) or a mapping with from:, const:, "
                            "first:, concat: or hook:" + hint)
            return None
        return self.model(ValueSpec, raw, loc)

    def value(self, spec: ValueSpec, loc: Loc, keyword: str, kind: str, max_values: int,
              rel: Relative | None, nested: bool = False) -> ValueRule | None:
        ok = True
        conversion = CONVERSIONS[spec.as_] if spec.as_ else None
        if conversion is not None and kind not in conversion.target_vrs:
            self.error((*loc, "as"), f"as: {spec.as_} makes a "
                       f"{'/'.join(sorted(conversion.target_vrs))} value but {keyword} has "
                       f"VR {kind}")
            ok = False
        if kind == "SQ" and (conversion is None or conversion.structured is None) \
                and spec.hook is None:
            self.error(loc, f"{keyword} is a sequence: a value for it needs as: CODE or CODE_ALT")
            ok = False
        structured = conversion is not None and conversion.structured is not None
        if spec.join is not None and (structured or kind == "SQ"):
            self.error((*loc, "join"), "join: makes one text of several values; it does not "
                                       "combine with a sequence or with as: "
                                       f"{spec.as_ or 'CODE'}")
            ok = False
        if spec.lookup_miss == "error" and spec.lookup is None:
            self.error((*loc, "lookup_miss"), "lookup_miss: belongs with a lookup:")
            ok = False
        if structured:
            if spec.from_ is None:
                self.error((*loc, "as"), f"as: {spec.as_} reads the parts of a field; use it "
                                         "with from:")
                ok = False
            for step in ("regex", "replace", "map", "lookup", "case"):
                if getattr(spec, step) is not None:
                    self.error((*loc, step), f"{step} works on text and cannot be combined "
                                             f"with as: {spec.as_}")
                    ok = False
        if nested:
            for flag in ("required", "truncate", "omit_empty"):
                if getattr(spec, flag):
                    self.error((*loc, flag), f"{flag} belongs on the attribute, not inside "
                                             "first:/concat:")
                    ok = False

        source = self.source(spec, loc, keyword, kind, max_values, rel, structured)
        when = self.condition(spec.when, (*loc, "when"), rel)
        if spec.when is not None and when is None:
            ok = False
        regex = replace = None
        if spec.regex is not None:
            regex = self.regex(spec.regex, (*loc, "regex"))
            ok = ok and regex is not None
        if spec.replace is not None:
            pattern = self.regex(spec.replace[0], (*loc, "replace"))
            if pattern is not None:
                try:
                    pattern.sub(spec.replace[1], "")
                except re.error as exc:
                    self.error((*loc, "replace"), f"bad replacement: {exc}")
                    pattern = None
            ok = ok and pattern is not None
            replace = (pattern, spec.replace[1]) if pattern is not None else None
        # A value that reaches the attribute unchanged can be checked against its VR now.
        final = spec.as_ is None and spec.case is None and spec.join is None
        table, fallback = self.value_map(spec, loc, kind, final and spec.lookup is None)
        lookup = self.lookup(spec, loc, keyword, kind, final, max_values)
        default = self.constants(spec.default, (*loc, "default"), kind, max_values, check=True)
        if spec.lookup is not None and lookup is None:
            ok = False
        if source is None or not ok:
            return None
        extra: dict[str, Any] = {}
        if fallback is not _UNSET:
            extra["table_fallback"] = fallback
        if spec.lookup_miss == "error" and spec.lookup is not None:
            name = spec.lookup.partition(".")[0]
            extra["lookup_name"] = f"{name} ({self.tables[name].path.name})"
        rule = ValueRule(
            keyword=keyword, source=source, when=when, regex=regex, replace=replace,
            table=table, lookup=lookup,
            text_conversion=conversion.text if conversion is not None else None,
            structured=conversion.structured if conversion is not None else None,
            names=conversion.names if conversion is not None else None,
            case=str.upper if spec.case == "upper" else str.lower if spec.case else None,
            default=default, truncate=spec.truncate, **extra)
        if spec.join is not None:
            # The steps run on each value; when and default on the joined one.
            inner = dataclasses.replace(rule, when=None, default=())
            rule = ValueRule(keyword=keyword, source=JoinSource(inner, spec.join), when=when,
                             default=default, truncate=spec.truncate)
        return rule

    def source(self, spec: ValueSpec, loc: Loc, keyword: str, kind: str, max_values: int,
               rel: Relative | None, structured: bool
               ) -> PathSource | ConstSource | FirstSource | ConcatSource | HookSource | None:
        if spec.hook is not None:
            function = self.hooks.get(spec.hook)
            if function is None:
                declared = self.doc.data.get("hooks")
                if not (isinstance(declared, dict) and spec.hook in declared):
                    self.error((*loc, "hook"), f"no hook {spec.hook!r}; define it under hooks:")
                return None
            return HookSource(spec.hook, function, tuple(spec.args.items()), keyword,
                              self.syntax)
        if spec.from_ is not None:
            chain = self.chain(spec.from_, (*loc, "from") if (*loc, "from") in self.doc.lines
                               else loc, rel)
            return PathSource(chain, structured) if chain is not None else None
        if spec.const is not None:
            plain = (spec.regex is None and spec.replace is None and spec.map is None
                     and spec.lookup is None and spec.as_ is None and spec.case is None)
            values = self.constants(spec.const, (*loc, "const"), kind, max_values, check=plain)
            return ConstSource(values)
        parts = spec.first if spec.first is not None else spec.concat
        key = "first" if spec.first is not None else "concat"
        assert parts is not None
        rules = []
        for i, part in enumerate(parts):
            sub = self.value_spec(part, (*loc, key, i))
            if sub is None:
                continue
            # Parts of a concat are text; their own VR is that of the joined value's.
            rule = self.value(sub, (*loc, key, i), keyword, kind if key == "first" else "UT",
                              max_values if key == "first" else 1, rel, nested=True)
            if rule is not None:
                rules.append(rule)
        if len(rules) != len(parts):
            return None
        if key == "first":
            return FirstSource(tuple(rules))
        return ConcatSource(tuple(rules), spec.separator)

    def constants(self, raw: Any, loc: Loc, kind: str, max_values: int,
                  check: bool) -> tuple[Any, ...]:
        if raw is None:
            return ()
        items = raw if isinstance(raw, list) else [raw]
        if max_values and len(items) > max_values:
            self.error(loc, f"{len(items)} values given; this attribute takes at most "
                            f"{max_values}")
            return ()
        values = []
        for i, item in enumerate(items):
            iloc = (*loc, i) if isinstance(raw, list) else loc
            value = self.scalar(item, iloc)
            if value is None or value == "":
                continue
            if check:
                if kind == "SQ":
                    self.error(iloc, "a sequence cannot take a constant value")
                    continue
                try:
                    value = vr.fit(kind, value)
                except vr.VRProblem as exc:
                    self.error(iloc, f"{value!r} {exc.problem}")
                    continue
            elif isinstance(value, int | float) and kind in vr.TEXT_VRS:
                value = str(value)
            values.append(value)
        return tuple(values)

    def regex(self, text: str, loc: Loc) -> re.Pattern[str] | None:
        try:
            pattern = re.compile(text)
        except re.error as exc:
            self.error(loc, f"bad regular expression: {exc}")
            return None
        if pattern.groups > 1:
            self.error(loc, "a regex extracts its first group; use (?:...) for other groups")
            return None
        return pattern

    def value_map(self, spec: ValueSpec, loc: Loc, kind: str, check: bool
                  ) -> tuple[dict[str, Any] | None, Any]:
        if spec.map is None:
            return None, _UNSET
        table: dict[str, Any] = {}
        fallback: Any = _UNSET
        for key, value in spec.map.items():
            value = "" if value is None else value
            if check and value != "":
                try:
                    value = vr.fit(kind, value)
                except vr.VRProblem as exc:
                    self.error((*loc, "map", key), f"{value!r} {exc.problem}")
                    continue
            elif isinstance(value, int | float) and kind in vr.TEXT_VRS:
                value = str(value)
            if key == "*":
                fallback = value
            else:
                table[key] = value
        return table, fallback

    def lookup(self, spec: ValueSpec, loc: Loc, keyword: str, kind: str, check: bool,
               max_values: int = 1) -> dict[str, str] | None:
        if spec.lookup is None:
            return None
        name, _, column = spec.lookup.partition(".")
        table = self.tables.get(name)
        if table is None:
            self.error((*loc, "lookup"), f"no lookup table {name!r}; define it under lookups:")
            return None
        column = column or VALUE_COLUMN
        if column not in table.columns:
            self.error((*loc, "lookup"), f"lookup table {name!r} has no column {column!r}; "
                                         f"it has {', '.join(table.columns)}")
            return None
        values = table.column(column)
        if check:
            for key, value in values.items():
                # A multi-valued attribute takes several values as V1\V2 (DICOM's delimiter).
                parts = value.split("\\") if max_values != 1 else [value]
                for part in parts:
                    problem = vr.check(kind, part) if part else None
                    if problem:
                        self.errors.append(SourceError(
                            table.path, table.lines.get(key), f"{key}.{column}",
                            f"{part!r} {problem} (used for {keyword})"))
                        break
        return values


_UNSET = object()


def _primary(rule: ValueRule) -> Chain | None:
    """The first path a value reads: where a missing required value is reported."""
    source = rule.source
    if isinstance(source, PathSource):
        return source.chain
    if isinstance(source, FirstSource | ConcatSource):
        for sub in source.rules:
            found = _primary(sub)
            if found is not None:
                return found
    return None
