"""A compiled outbound profile, and building one HL7 message with it. Pure: datasets
and variables in, ER7 text out, no I/O.

The builder writes MSH-1/2 (delimiters), MSH-9 (the profile's message
type), MSH-10 (the control ID the outbox chose), MSH-12 (the profile's
version) and MSH-18 (the destination's character set); a profile sets every
other position.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from bridge.outbound.er7 import SegmentWriter, render_message

# Variables every build gets (bridge.outbound.events fills them).
BUILTIN_VARS = (
    "status", "sps_status", "mpps_status", "scheduled", "now", "event_time",
    "sending_application", "sending_facility", "receiving_application", "receiving_facility",
    "processing_id", "destination", "order_control",
)
# MSH positions the builder writes itself.
BUILDER_FIELDS = {1: "field separator", 2: "encoding characters", 9: "message type",
                  10: "message control ID", 12: "version", 18: "character set"}


class BuildError(ValueError):
    """A message cannot be built: a required value is empty. Names the HL7 position."""


@dataclass(frozen=True, slots=True)
class DicomRef:
    """``order.Keyword[.Keyword...]`` or ``mpps....``; an index is 0-based (``Seq[1]``)."""

    root: Literal["order", "mpps"]
    steps: tuple[tuple[str, int | None], ...]
    text: str

    def resolve(self, data: BuildInput) -> Any:
        node: Any = data.order if self.root == "order" else data.mpps
        last = len(self.steps) - 1
        for i, (keyword, index) in enumerate(self.steps):
            if not isinstance(node, Dataset):
                return None
            value = node.get(keyword)
            if value is None:
                return None
            if isinstance(value, DicomSequence):
                if index is None and i == last:
                    return value[0] if len(value) else None
                position = index or 0
                node = value[position] if position < len(value) else None
                continue
            if index is not None:
                if isinstance(value, str) or not hasattr(value, "__getitem__"):
                    value = [value]
                node = value[index] if index < len(value) else None
                continue
            node = value
        return node


@dataclass(frozen=True, slots=True)
class VarRef:
    name: str

    def resolve(self, data: BuildInput) -> Any:
        return data.variables.get(self.name, "")


Source = DicomRef | VarRef


def _text(value: Any) -> str:
    if value is None or isinstance(value, Dataset):
        return ""
    if isinstance(value, bytes):
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__") \
            and not hasattr(value, "family_name"):
        values = list(value)
        return _text(values[0]) if values else ""
    return str(value).strip()


def has_value(chain: Sequence[Source], data: BuildInput) -> bool:
    for source in chain:
        value = source.resolve(data)
        if isinstance(value, Dataset) or _text(value):
            return True
    return False


@dataclass(frozen=True, slots=True)
class ValueRule:
    chain: tuple[Source, ...] = ()
    const: str | None = None
    concat: tuple[ValueRule, ...] = ()
    separator: str = ""
    map: Mapping[str, str | None] | None = None
    conversion: str | None = None
    default: str | None = None
    required: bool = False
    when: tuple[Source, ...] = ()
    unless: tuple[Source, ...] = ()

    def raw(self, data: BuildInput) -> Any:
        if self.const is not None:
            return self.const
        if self.concat:
            parts = [_text(part.evaluate(data)) for part in self.concat]
            return self.separator.join(p for p in parts if p)
        for source in self.chain:
            value = source.resolve(data)
            if isinstance(value, Dataset) or _text(value):
                return value
        return None

    def _mapped(self, data: BuildInput) -> Any:
        if self.when and not has_value(self.when, data):
            return ""
        if self.unless and has_value(self.unless, data):
            return ""
        value = self.raw(data)
        if self.map is not None and not isinstance(value, Dataset):
            key = _text(value)
            if key in self.map:
                value = self.map[key]
            elif "*" in self.map:
                value = self.map["*"]
        return value

    def repetitions(self, data: BuildInput) -> list[str | list[str]]:
        """The value as repetitions: a PN with several component groups is several
        XPN/XCN repetitions (``name_repetitions``); anything else is one."""
        if self.conversion in ("XPN", "XCN"):
            reps = name_repetitions(self.conversion, self._mapped(data))
            if len(reps) > 1:
                return list(reps)
        return [self.evaluate(data)]

    def evaluate(self, data: BuildInput) -> str | list[str]:
        """The value: text, or parts (components) for XPN, XCN and CE."""
        value = self._mapped(data)
        result: str | list[str] = convert(self.conversion, value) if self.conversion \
            else _text(value)
        if not _filled(result) and self.default is not None:
            result = convert(self.conversion, self.default) if self.conversion in (
                "TS", "DA", "TM") else self.default
        return result


def _filled(value: str | list[str]) -> bool:
    return any(value) if isinstance(value, list) else bool(value)


_DIGITS = re.compile(r"[^0-9.+\-]")


def _name_parts(kind: str, group: str) -> list[str]:
    # DICOM PN family^given^middle^prefix^suffix -> XPN family^given^middle^suffix^prefix
    family, given, middle, prefix, suffix = ([*group.split("^"), "", "", "", ""])[:5]
    parts = [family, given, middle, suffix, prefix]
    return ["", *parts] if kind == "XCN" else parts


# PN component group -> HL7 table 4000 name representation code.
_REPRESENTATION = ("A", "I", "P")
# Where XPN and XCN keep the name type code and the name representation code
# (XPN-7/8, XCN-10/15), as 0-based indexes into the component list.
_NAME_CODES = {"XPN": (6, 7), "XCN": (9, 14)}
# The PN keeps no name type code (the inbound mapping drops XPN-7), so the
# repetitions of one name say L (legal name, HL7 table 0200).
NAME_TYPE = "L"


def name_repetitions(kind: str, value: Any) -> list[list[str]]:
    """A PN as XPN or XCN repetitions: one per non-empty component group.

    A name with only its alphabetic group is one repetition without codes,
    exactly as before component groups were written. A name with ideographic
    or phonetic groups gets one repetition per group, each with the name type
    code and its name representation code (A, I, P), the way the inbound
    mapping reads them (bridge.mapping.conversions.name_run).
    """
    text = _text(value)
    if not text:
        return []
    groups = text.split("=")[:3]
    if not any(g.strip("^ ") for g in groups[1:]):
        return [_name_parts(kind, groups[0])]
    type_at, code_at = _NAME_CODES[kind]
    reps = []
    for group, code in zip(groups, _REPRESENTATION, strict=False):
        if not group.strip("^ "):
            continue
        parts = _name_parts(kind, group)
        parts += [""] * (code_at + 1 - len(parts))
        parts[type_at], parts[code_at] = NAME_TYPE, code
        reps.append(parts)
    return reps


def convert(kind: str | None, value: Any) -> str | list[str]:
    if kind in ("XPN", "XCN"):
        reps = name_repetitions(kind, value)
        # Where only one repetition fits (a component, a concat), the first group.
        return reps[0][:6 if kind == "XCN" else 5] if reps else []
    if kind == "CE":
        if not isinstance(value, Dataset):
            return []
        code = _text(value.get("CodeValue")) or _text(value.get("LongCodeValue"))
        return [code, _text(value.get("CodeMeaning")), _text(value.get("CodingSchemeDesignator"))]
    text = _text(value)
    if kind == "TS":
        # DA + TM (or DT) -> YYYYMMDDHHMMSS[+ZZZZ]: separators and fractions dropped.
        text = _DIGITS.sub("", text)
        zone = ""
        m = re.search(r"[+\-]\d{4}$", text)
        if m:
            zone, text = m.group(), text[:m.start()]
        return text.split(".")[0][:14] + zone
    if kind == "DA":
        return _DIGITS.sub("", text)[:8]
    if kind == "TM":
        return _DIGITS.sub("", text).split(".")[0][:6]
    return text


@dataclass(frozen=True, slots=True)
class FieldRule:
    path: str  # as written, for errors
    field: int
    rep: int
    comp: int
    sub: int
    value: ValueRule


@dataclass(frozen=True, slots=True)
class SegmentRule:
    name: str
    fields: tuple[FieldRule, ...]
    when: tuple[Source, ...] = ()
    unless: tuple[Source, ...] = ()


@dataclass(frozen=True, slots=True)
class BuildInput:
    """What a message is built from.

    ``order`` is the stored worklist item (for an unscheduled MPPS, one made
    from the MPPS itself), ``mpps`` the MPPS instance after the change, and
    ``variables`` the builtin and profile variables.
    """

    order: Dataset
    mpps: Dataset
    variables: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class BuiltMessage:
    text: str  # ER7, CR segment ends
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class OutboundProfile:
    name: str
    path: Path
    message_type: str  # MSH-9 as written, e.g. OMI^O23^OMI_O23
    version: str
    segments: tuple[SegmentRule, ...]
    variables: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def event_type(self) -> str:
        """``ORM^O01``: message code and trigger event, without the structure."""
        return "^".join(self.message_type.split("^")[:2])

    def build(self, order: Dataset, mpps: Dataset, variables: Mapping[str, str], *,
              control_id: str, msh18: str = "", codec: str = "utf-8") -> BuiltMessage:
        """The message as ER7 text. Raises BuildError for an empty required value.

        Characters that ``codec`` cannot encode are replaced by ``?``, and each
        position where that happened is named in the warnings.
        """
        data = BuildInput(order, mpps, {**self.variables, **variables})
        warnings: list[str] = []
        out: list[SegmentWriter] = []
        for rule in self.segments:
            if rule.when and not has_value(rule.when, data):
                continue
            if rule.unless and has_value(rule.unless, data):
                continue
            seg = SegmentWriter(rule.name)
            if rule.name == "MSH":
                seg.set_parts(9, self.message_type.split("^"))
                seg.set(10, control_id)
                seg.set(12, self.version)
                seg.set(18, msh18)
            for f in rule.fields:
                # A whole name field takes one repetition per PN component group.
                values = f.value.repetitions(data) if not f.comp else [f.value.evaluate(data)]
                if f.value.required and not any(_filled(v) for v in values):
                    raise BuildError(f"{f.path} is required but has no value")
                for i, value in enumerate(values):
                    where = f.path if len(values) == 1 else f"{f.path} repetition {f.rep + i}"
                    value = _encodable(value, codec, where, warnings)
                    if isinstance(value, list):
                        seg.set_parts(f.field, value, rep=f.rep + i, comp=f.comp)
                    else:
                        seg.set(f.field, value, rep=f.rep + i, comp=f.comp or 1,
                                sub=f.sub or 1)
            out.append(seg)
        return BuiltMessage(render_message(out), tuple(warnings))


def _encodable(value: str | list[str], codec: str, where: str,
               warnings: list[str]) -> str | list[str]:
    if isinstance(value, list):
        return [_encodable_text(v, codec, where, warnings) for v in value]
    return _encodable_text(value, codec, where, warnings)


def _encodable_text(value: str, codec: str, where: str, warnings: list[str]) -> str:
    try:
        value.encode(codec)
        return value
    except UnicodeEncodeError:
        warning = (f"{where}: characters the destination's character set ({codec}) "
                   "cannot hold were replaced by '?'")
        if warning not in warnings:  # once per position, not once per component
            warnings.append(warning)
        return value.encode(codec, errors="replace").decode(codec)
