"""The shape of a mapping file, in pydantic.

Each node of the file is checked by the model for its place: the file itself,
``match``, ``study_uid``, a lookup, one attribute's value spec, a ``for_each``
sequence. Attributes are keyed by DICOM keyword, so the loader walks them and
validates each value with the model that fits its VR; that keeps pydantic's
messages about one node instead of a union of every possible shape.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) \
        else value


def _words(value: Any) -> Any:
    """YAML reads 2.5 as a float and 1 as an int; in a mapping file they are words."""
    value = _as_list(value)
    if isinstance(value, list):
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
                for v in value]
    return value


def _word_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k) if isinstance(k, int | float) and not isinstance(k, bool) else k: v
                for k, v in value.items()}
    return value


def _scalar(value: Any) -> str | int | float:
    # YAML turns 1975-03-12 into a date: in a mapping file it is the text as written.
    if isinstance(value, date | datetime):
        return value.isoformat()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("expected a word or a number (quote words like yes/no/on/off)")
    return value


def _scalars(value: Any) -> str | int | float | list[str | int | float]:
    if isinstance(value, list):
        return [_scalar(v) for v in value]
    return _scalar(value)


Words = Annotated[list[str], BeforeValidator(_words)]
SegmentId = Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{2}$")]
Scalar = Annotated[Any, PlainValidator(_scalar)]
Scalars = Annotated[Any, PlainValidator(_scalars)]
Condition = str | dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class MatchSpec(_Strict):
    """Which messages a mapping takes. Every given criterion must hold."""

    message_type: Words = Field(default_factory=list, description="ORM^O01, ORM^*, ORM")
    versions: Words = Field(default_factory=list,
                            description="MSH-12; '2.5' also covers '2.5.1'; empty: any")
    sending_application: Words = Field(default_factory=list, description="MSH-3.1")
    sending_facility: Words = Field(default_factory=list, description="MSH-4.1")
    when: Condition | None = None
    priority: int = Field(default=0, description="higher is tried first; equal: file order")
    fallback: bool = Field(default=False,
                           description="tried after every other mapping, whatever its place")

    @field_validator("message_type")
    @classmethod
    def _message_types(cls, value: list[str]) -> list[str]:
        for mt in value:
            code, _, event = mt.partition("^")
            if len(code) != 3 or not code.isalnum() or (
                    event and event != "*" and not event.isalnum()):
                raise ValueError(f"{mt!r} is not like ORM^O01, ORM^* or ORM")
        return value

    @model_validator(mode="after")
    def _something(self) -> MatchSpec:
        if not self.message_type and not self.fallback:
            raise ValueError("give message_type (e.g. ORM^O01), or fallback: true")
        return self


class StudyUidSpec(_Strict):
    """What to do when the message carries no Study Instance UID."""

    missing: Literal["derive", "generate", "reject"] = "derive"
    derive_from: Words = Field(
        default_factory=lambda: ["AccessionNumber", "RequestedProcedureID"],
        description="keywords of mapped attributes whose values make the derived UID")
    namespace: str = Field(
        default="", description="set one per site when several sites share an archive")


class LookupSpec(_Strict):
    file: str = Field(description="CSV with a header row, or YAML mapping; relative to the "
                                  "mapping file's folder")
    key: str | None = Field(default=None, description="CSV key column; default the first")


Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


class StationRuleSpec(_Strict):
    """One station rule: when it holds and its aet yields a value, it decides the station."""

    name: Name
    priority: int = Field(default=0, description="higher is tried first; equal: file order")
    when: Condition | None = None
    aet: Any = Field(description="a value: path, or mapping with from/const/lookup/...; "
                                 "several AE titles allowed")
    station_name: Any = Field(default=None, description="a value for ScheduledStationName")


class StationDefaultSpec(_Strict):
    aet: Any = Field(default=None, description="default: $default_station_aet")
    station_name: Any = None


class StationsSpec(_Strict):
    """Scheduled Station AE Title and Name of each step, decided by rules."""

    rules: list[StationRuleSpec] = Field(default_factory=list)
    default: StationDefaultSpec = StationDefaultSpec()


class MappingSpec(_Strict):
    name: Name
    description: str = ""
    match: MatchSpec
    group_by: Annotated[list[SegmentId], BeforeValidator(_as_list)] = Field(
        default_factory=list, description="ORC, or [ORC, IPC] for nested groups")
    take_first: Annotated[list[SegmentId], BeforeValidator(_as_list)] = Field(
        default_factory=list,
        description="segment types read without a selector (OBX-5) that may repeat where an "
                    "item looks: the first is read and the others ignored, on purpose; "
                    "any other such repeat rejects the message")
    vars: Annotated[dict[str, Scalar | None], BeforeValidator(_word_keys)] = Field(
        default_factory=dict)
    study_uid: StudyUidSpec = StudyUidSpec()
    order_control: dict[Annotated[str, Field(pattern=r"^[A-Z0-9]{3}$")],
                        Annotated[str, Field(pattern=r"^[A-Z]{2}(/[A-Z]{0,2})?$")]] = Field(
        default_factory=dict,
        description="for messages without ORC (SIU): trigger event (MSH-9.2) -> the ORC-1 "
                    "code, optionally /ORC-5, the order control table reads for it")
    lookups: dict[str, LookupSpec] = Field(default_factory=dict)
    hooks: dict[str, Annotated[str, Field(pattern=r"^[^:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")]] = \
        Field(default_factory=dict, description="name -> file.py:function, the last resort")
    stations: StationsSpec | None = None
    attributes: dict[str, Any]


class ValueSpec(_Strict):
    """One value: a source (from, const, first, concat or hook), then the steps, in this
    order: when, regex, replace, map, lookup, as, case, join, default; then
    truncate/required."""

    from_: str | None = Field(default=None, alias="from")
    const: Scalars | None = None
    first: list[Any] | None = None
    concat: list[Any] | None = None
    hook: str | None = None
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of hook")
    separator: str = " "
    join: str | None = Field(default=None, description="join every value with this text")
    when: Condition | None = None
    regex: str | None = None
    replace: Annotated[list[str], Field(min_length=2, max_length=2)] | None = None
    map: Annotated[dict[str, Scalar | None], BeforeValidator(_word_keys)] | None = None
    lookup: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_ -]+)?$")
    lookup_miss: Literal["empty", "error"] = "empty"
    as_: Literal["DA", "TM", "DT", "TZ", "PN", "PN_XCN", "CODE", "CODE_ALT"] | None = Field(
        default=None, alias="as")
    case: Literal["upper", "lower"] | None = None
    default: Scalars | None = None
    required: bool = False
    truncate: bool = False
    omit_empty: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> ValueSpec:
        given = [k for k, v in (("from", self.from_), ("const", self.const),
                                ("first", self.first), ("concat", self.concat),
                                ("hook", self.hook)) if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one source: from, const, first, concat or hook"
                             + (f" (found {', '.join(given)})" if given else ""))
        if self.args and self.hook is None:
            raise ValueError("args: are for a hook")
        return self


class ForEachSpec(_Strict):
    """A sequence with one item per repetition (``PID-3[2..]``) or segment (``OBX(*)``)."""

    for_each: str
    item: dict[str, Any]
    when: Condition | None = None
