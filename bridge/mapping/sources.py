"""Value sources beyond the basic four (from, const, first, concat) of the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.mapping.engine import ValueRule
from bridge.mapping.paths import Anchor
from bridge.mapping.scope import Context, Hit


@dataclass(frozen=True, slots=True)
class JoinSource:
    """``join: SEP``: every value the inner rule yields (all repetitions, all segments),
    each through its steps, joined into one: NTE comments, several notes, and so on."""

    inner: ValueRule
    separator: str

    def fetch(self, ctx: Context, anchor: Anchor, multi: bool) -> list[tuple[Any, Hit | None]]:
        values, hit = self.inner.produce(ctx, anchor, True)
        if not values:
            return []
        return [(self.separator.join(str(v) for v in values), hit)]

    @property
    def text(self) -> str:
        return self.inner.source.text
