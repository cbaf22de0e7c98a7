"""The ``mpps`` configuration section.

Kept beside the code it configures; ``bridge.app.settings.Settings`` holds it.
Documented in docs/mpps-outbound.md and mwl-bridge.example.yaml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bridge.section import Section

# The same names as bridge.mpps.linking.MatchKey (settings import no code they configure).
MatchKey = Literal["study_sps", "accession", "study", "order_numbers"]


def _default_match_keys() -> list[MatchKey]:
    return ["study_sps", "accession"]


class MppsSettings(Section):
    """The MPPS SCP on the worklist's AE (bridge/mpps/service.py)."""

    enabled: bool = True
    # How an MPPS finds its worklist items: per Scheduled Step Attributes item, the
    # first key that finds steps wins (bridge/mpps/linking.py).
    match_keys: list[MatchKey] = Field(default_factory=_default_match_keys, min_length=1)
    # An MPPS that matches no worklist item: "emit" stores it and sends status
    # messages built from its own attributes (ORC-16 UNSCHEDULED); "store" only stores.
    unscheduled: Literal["emit", "store"] = "emit"
    # COMPLETED/DISCONTINUED must carry PPS End Date/Time (COMPLETED also a
    # Performed Series Sequence item), as PS3.4 F.7.2 requires.
    final_state_checks: bool = True

    @field_validator("match_keys")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each match key at most once")
        return value
