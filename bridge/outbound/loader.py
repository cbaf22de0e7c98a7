"""Loading outbound profiles: validate everything once, report every problem with
file, line and key (the same way inbound mapping files are loaded).

Checked at load: the YAML shape; each key is an HL7 field path in the
inbound path syntax, addressing one position of its own segment, and exists
in the profile's HL7 version (hl7apy's structure tables); each source names
a real DICOM keyword or a known variable; the builder's own MSH positions
are left to it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from pydicom.datadict import keyword_dict

from bridge.mapping.errors import MappingLoadError
from bridge.mapping.hl7spec import StructureChecker
from bridge.mapping.paths import ONE, FieldPath, FieldRef, PathSyntax, PathSyntaxError
from bridge.outbound.profile import (
    BUILDER_FIELDS,
    BUILTIN_VARS,
    DicomRef,
    FieldRule,
    OutboundProfile,
    SegmentRule,
    Source,
    ValueRule,
    VarRef,
)
from bridge.outbound.schema import FieldSpec, ProfileSpec, SegmentSpec
from bridge.yamlsrc import (
    FileChecker,
    SourceError,
    collect_yaml_files,
    load_yaml,
)

_VAR = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")
_STEP = re.compile(r"^([A-Za-z][A-Za-z0-9]*)(?:\[(\d+)\])?$")

Loc = tuple[str | int, ...]


class ProfileSet:
    """The loaded outbound profiles, by name, in load order."""

    def __init__(self, profiles: Sequence[OutboundProfile]) -> None:
        self._profiles = {p.name: p for p in profiles}

    def __iter__(self) -> Iterator[OutboundProfile]:
        return iter(self._profiles.values())

    def __len__(self) -> int:
        return len(self._profiles)

    @property
    def names(self) -> list[str]:
        return list(self._profiles)

    def get(self, name: str) -> OutboundProfile | None:
        return self._profiles.get(name)

    def for_message_type(self, message_type: str) -> OutboundProfile | None:
        """The first profile (file-name order) for ``ORM^O01``-style ``message_type``."""
        wanted = "^".join(message_type.split("^")[:2])
        for profile in self._profiles.values():
            if profile.event_type == wanted:
                return profile
        return None


def load_profiles(paths: Sequence[Path]) -> ProfileSet:
    """Load profile files and folders (every *.yaml/*.yml directly inside, in name order).

    Raises MappingLoadError listing every problem, each with file, line and key.
    """
    files, errors = collect_yaml_files(paths, "outbound profile")
    profiles: list[OutboundProfile] = []
    seen: dict[str, Path] = {}
    for path in files:
        compiler = _ProfileCompiler(path)
        profile = compiler.compile()
        errors.extend(compiler.errors)
        if profile is None:
            continue
        if profile.name in seen:
            errors.append(compiler.doc.error(("name",), f"profile name {profile.name!r} is "
                                                        f"already used by {seen[profile.name]}"))
            continue
        seen[profile.name] = path
        profiles.append(profile)
    if errors:
        raise MappingLoadError(errors)
    return ProfileSet(profiles)


class _ProfileCompiler(FileChecker):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.variables: set[str] = set(BUILTIN_VARS)
        self.syntax = PathSyntax({})
        self.checker = StructureChecker(())

    def compile(self) -> OutboundProfile | None:
        try:
            self.doc = load_yaml(self.path)
        except SourceError as exc:
            self.errors.append(exc)
            return None
        if not isinstance(self.doc.data, dict):
            self.error((), "an outbound profile is a YAML mapping with name:, message_type:, "
                           "version: and segments:")
            return None
        spec: ProfileSpec | None = self.model(ProfileSpec, self.doc.data, ())
        if spec is None:
            return None
        for name in spec.vars:
            if name in BUILTIN_VARS:
                self.error(("vars", name), f"${name} is set by the bridge for every message")
            elif not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self.error(("vars", name), "a variable name is letters, digits and _")
        self.variables |= set(spec.vars)
        self.checker = StructureChecker([spec.version])
        segments = [self.segment(seg, ("segments", i)) for i, seg in enumerate(spec.segments)]
        if self.errors:
            return None
        return OutboundProfile(
            name=spec.name, path=self.path, message_type=spec.message_type,
            version=spec.version, segments=tuple(s for s in segments if s is not None),
            variables={k: v or "" for k, v in spec.vars.items()}, description=spec.description)

    def segment(self, spec: SegmentSpec, loc: Loc) -> SegmentRule | None:
        problem = self.checker.problem(FieldRef(spec.segment, 0, 0, 0, spec.segment))
        if problem:
            self.error((*loc, "segment"), problem)
        rules = []
        for key, raw in spec.fields.items():
            rule = self.field(spec.segment, str(key), raw, (*loc, "fields", key))
            if rule is not None:
                rules.append(rule)
        return SegmentRule(spec.segment, tuple(rules),
                           when=self.chain(spec.when, (*loc, "when")),
                           unless=self.chain(spec.unless, (*loc, "unless")))

    def field(self, segment: str, key: str, raw: Any, loc: Loc) -> FieldRule | None:
        try:
            chain, refs = self.syntax.chain(key)
        except PathSyntaxError as exc:
            self.error(loc, f"bad path: {exc}")
            return None
        path = chain.paths[0]
        if len(chain.paths) != 1 or not isinstance(path, FieldPath) or "(" in key \
                or path.occ.kind != ONE or path.rep.kind != ONE or not path.field:
            self.error(loc, "an outbound key addresses one position: SEG-field[rep].comp.sub "
                            "(no fallbacks, selectors or segment occurrences)")
            return None
        if path.segment != segment:
            self.error(loc, f"{key} is not a field of this {segment} segment")
            return None
        if segment == "MSH" and path.field in BUILDER_FIELDS:
            self.error(loc, f"MSH-{path.field} ({BUILDER_FIELDS[path.field]}) is written by "
                            "the bridge")
            return None
        for ref in refs:
            problem = self.checker.problem(ref)
            if problem:
                self.error(loc, problem)
        value = self.value(raw, loc)
        if value is None:
            return None
        if value.conversion in ("XPN", "XCN", "CE") and path.sub:
            self.error(loc, f"as: {value.conversion} writes components; address a field or "
                            "a component, not a sub-component")
            return None
        return FieldRule(key, path.field, path.rep.start, path.comp, path.sub, value)

    def value(self, raw: Any, loc: Loc, *, nested: bool = False) -> ValueRule | None:
        if isinstance(raw, str):
            chain = self.chain(raw, loc)
            return ValueRule(chain=chain) if chain or not raw else None
        if not isinstance(raw, dict):
            self.error(loc, "a value is a source (order.Keyword, mpps.Keyword, $variable) or a "
                            "mapping with from:, const: or concat:")
            return None
        spec: FieldSpec | None = self.model(FieldSpec, raw, loc)
        if spec is None:
            return None
        if nested and spec.required:
            self.error((*loc, "required"), "required: belongs on the field, not inside concat:")
        concat: list[ValueRule] = []
        for i, part in enumerate(spec.concat or ()):
            rule = self.value(part, (*loc, "concat", i), nested=True)
            if rule is not None:
                concat.append(rule)
        const = spec.const
        if const is not None and const.startswith("$") and not const.startswith("$$"):
            self.error((*loc, "const"), "const: is a literal; use from: for a $variable")
        elif const is not None and const.startswith("$$"):
            const = const[1:]
        return ValueRule(
            chain=self.chain(spec.from_, (*loc, "from")), const=const, concat=tuple(concat),
            separator=spec.separator, map=spec.map, conversion=spec.as_, default=spec.default,
            required=spec.required, when=self.chain(spec.when, (*loc, "when")),
            unless=self.chain(spec.unless, (*loc, "unless")))

    def chain(self, text: str | None, loc: Loc) -> tuple[Source, ...]:
        if not text:
            return ()
        out: list[Source] = []
        for term in (t.strip() for t in text.split("|")):
            source = self.source(term, loc)
            if source is not None:
                out.append(source)
        return tuple(out)

    def source(self, term: str, loc: Loc) -> Source | None:
        m = _VAR.match(term)
        if m:
            if m.group(1) not in self.variables:
                self.error(loc, f"unknown variable ${m.group(1)}; known: "
                                + ", ".join(f"${v}" for v in sorted(self.variables)))
                return None
            return VarRef(m.group(1))
        root, _, rest = term.partition(".")
        if root not in ("order", "mpps") or not rest:
            self.error(loc, f"{term!r}: a source is order.Keyword, mpps.Keyword or $variable "
                            "(use const: for a literal)")
            return None
        steps: list[tuple[str, int | None]] = []
        for part in rest.split("."):
            sm = _STEP.match(part)
            if not sm or sm.group(1) not in keyword_dict:
                self.error(loc, f"{term!r}: {part!r} is not a DICOM keyword"
                                + ("" if not sm else " (see the DICOM data dictionary)"))
                return None
            steps.append((sm.group(1), int(sm.group(2)) if sm.group(2) else None))
        return DicomRef(cast(Literal["order", "mpps"], root), tuple(steps), term)
