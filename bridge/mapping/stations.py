"""Station assignment: rules with priorities decide Scheduled Station AE Title and Name.

    stations:
      rules:
        - {name: ris-says, priority: 100, aet: ORC-18.1, station_name: ORC-18.2}
        - {name: ct, priority: 10, when: 'OBR-24 = CT', aet: {const: [CT01, CT02]}}
      default: {aet: $default_station_aet}

Rules are tried by priority (highest first; equal priorities in file order).
The first rule whose ``when:`` holds and whose ``aet`` yields a value decides
both attributes of the step; when none does, the default does. The AE Title
may have several values (VM 1-n): a list constant, every repetition of a path,
or a lookup-table value with ``\\`` between titles (``CT01\\CT02``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.mapping.engine import ValueRule
from bridge.mapping.paths import Anchor, Condition
from bridge.mapping.scope import Context, Hit

AET_KEYWORD = "ScheduledStationAETitle"
NAME_KEYWORD = "ScheduledStationName"


@dataclass(frozen=True, slots=True)
class StationRule:
    name: str
    priority: int
    index: int  # place in the file's rules list, for messages and explain
    when: Condition | None
    aet: ValueRule
    station_name: ValueRule | None


@dataclass(frozen=True, slots=True)
class Pick:
    """What decided a step's station: a rule, or the default (rule None)."""

    rule: StationRule | None
    aets: list[Any]
    hit: Hit | None


@dataclass(frozen=True, slots=True)
class StationRules:
    rules: tuple[StationRule, ...]  # in the order they are tried
    default_aet: ValueRule
    default_name: ValueRule | None

    def pick(self, ctx: Context, anchor: Anchor) -> Pick:
        for rule in self.rules:
            if rule.when is not None and not rule.when.test(ctx, anchor):
                continue
            values, hit = rule.aet.produce(ctx, anchor, True)
            aets = split_titles(values)
            if aets:
                return Pick(rule, aets, hit)
        values, hit = self.default_aet.produce(ctx, anchor, True)
        return Pick(None, split_titles(values), hit)


def split_titles(values: list[Any]) -> list[Any]:
    """``CT01\\CT02`` (DICOM's value delimiter, as a lookup table holds it) -> two titles."""
    out: list[Any] = []
    for value in values:
        if isinstance(value, str) and "\\" in value:
            out.extend(v for v in value.split("\\") if v.strip())
        else:
            out.append(value)
    return out


@dataclass(frozen=True, slots=True)
class StationAetSource:
    rules: StationRules

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[tuple[Any, Hit | None]]:
        pick = self.rules.pick(ctx, anchor)
        return [(v, pick.hit) for v in pick.aets]

    @property
    def text(self) -> str:
        return "stations: rules"


@dataclass(frozen=True, slots=True)
class StationNameSource:
    """The name that goes with the AE title: from the same rule, picked the same way."""

    rules: StationRules

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[tuple[Any, Hit | None]]:
        pick = self.rules.pick(ctx, anchor)
        rule = pick.rule.station_name if pick.rule is not None else self.rules.default_name
        if rule is None:
            return []
        values, hit = rule.produce(ctx, anchor, False)
        return [(v, hit) for v in values[:1]]

    @property
    def text(self) -> str:
        return "stations: rules"
