"""Checks mapping paths against the HL7 v2 structure tables that ship with hl7apy.

Used at load time only (hl7apy's element tree costs milliseconds per message,
which the ingest path cannot pay). A path passes when its segment, field,
component and sub-component exist in at least one of the HL7 versions the
mapping matches; Z-segments are site-defined and pass unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import hl7apy
from hl7apy.exceptions import ChildNotFound

from bridge.mapping.paths import FieldRef

# Checked when a mapping names no version: the versions radiology orders come in.
DEFAULT_VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6")
# Data types whose content is defined by another field (OBX-5) or by the site.
_FREE_TYPES = {"varies", "VARIES", "*"}


@dataclass(frozen=True, slots=True)
class _Field:
    datatype: str
    components: tuple[int, ...]  # sub-component count of each component


def reference_versions(versions: Sequence[str]) -> tuple[str, ...]:
    """The hl7apy versions a mapping's ``versions`` cover ('2.5' covers '2.5.1')."""
    supported = sorted(hl7apy.SUPPORTED_LIBRARIES)
    if not versions:
        return DEFAULT_VERSIONS
    return tuple(v for v in supported
                 if any(v == w or v.startswith(w + ".") for w in versions))


class StructureChecker:
    """Answers "does this path exist" for one mapping's HL7 versions."""

    def __init__(self, versions: Sequence[str]) -> None:
        self.versions = reference_versions(versions) or DEFAULT_VERSIONS
        self._segments: dict[tuple[str, str], tuple[_Field, ...] | None] = {}

    def _segment(self, name: str, version: str) -> tuple[_Field, ...] | None:
        key = (name, version)
        if key not in self._segments:
            try:
                ref = hl7apy.load_reference(name, "Segment", version)
            except ChildNotFound:
                self._segments[key] = None
            else:
                self._segments[key] = tuple(_shape(spec) for _, spec, _, _ in ref[1])
        return self._segments[key]

    def problem(self, ref: FieldRef) -> str | None:
        """Why the path does not exist, or None."""
        if ref.segment.startswith("Z"):
            return None
        shapes = [(v, s) for v in self.versions if (s := self._segment(ref.segment, v))]
        where = "HL7 " + ", ".join(self.versions)
        if not shapes:
            return (f"{ref.text}: segment {ref.segment} does not exist in {where} "
                    "(site segments start with Z)")
        if not ref.field:
            return None
        fields = [(v, s[ref.field - 1]) for v, s in shapes if ref.field <= len(s)]
        if not fields:
            most = max(len(s) for _, s in shapes)
            return f"{ref.text}: {ref.segment} has {most} fields in {where}"
        if not ref.component:
            return None
        if any(f.datatype in _FREE_TYPES for _, f in fields):
            return None
        comps = [(v, f) for v, f in fields if ref.component <= len(f.components)]
        if not comps:
            v, f = max(fields, key=lambda vf: len(vf[1].components))
            return (f"{ref.text}: {ref.segment}-{ref.field} ({f.datatype}) has "
                    f"{len(f.components)} component(s) in HL7 {v}")
        if ref.subcomponent and not any(ref.subcomponent <= f.components[ref.component - 1]
                                        for _, f in comps):
            v, f = comps[-1]
            return (f"{ref.text}: component {ref.component} of {ref.segment}-{ref.field} "
                    f"({f.datatype}) has {f.components[ref.component - 1]} "
                    f"sub-component(s) in HL7 {v}")
        return None


def _shape(spec: tuple) -> _Field:  # type: ignore[type-arg]
    if spec[0] == "leaf":
        return _Field(spec[2], (1,))
    subs = tuple(1 if comp[1][0] == "leaf" else len(comp[1][1]) for comp in spec[1])
    return _Field(spec[2], subs)
