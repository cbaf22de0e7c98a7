"""The ``mpps`` and ``housekeeping`` configuration sections.

Kept beside the code they configure; ``bridge.config.Settings`` holds them.
Documented in docs/mpps-outbound.md and mwl-bridge.example.yaml.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CS = re.compile(r"^[A-Z0-9_ ]{1,16}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MppsSettings(_Section):
    """The MPPS SCP on the worklist's AE (bridge/mpps/service.py)."""

    enabled: bool = True
    # How an MPPS finds its worklist items: per Scheduled Step Attributes item, the
    # first key that finds steps wins (bridge/mpps/linking.py).
    match_keys: list[Literal["study_sps", "accession", "study", "order_numbers"]] = Field(
        default_factory=lambda: ["study_sps", "accession"], min_length=1)
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


class IdleRule(_Section):
    """Items of these stations/modalities, idle this long, change status."""

    stations: list[str] = Field(default_factory=list, description="empty: any station")
    modalities: list[str] = Field(default_factory=list, description="empty: any modality")
    statuses: list[str] = Field(default_factory=lambda: ["SCHEDULED"],
                                description="the statuses that expire")
    # Idle: both the scheduled start and the last change lie this far in the past.
    idle_hours: float = Field(gt=0)
    set_status: str = "DISCONTINUED"
    # Also send the status message (COMPLETED -> CM, DISCONTINUED -> DC) to the
    # outbound destinations, for sites whose modalities have no MPPS.
    notify: bool = False

    @field_validator("set_status")
    @classmethod
    def _cs(cls, value: str) -> str:
        if not _CS.match(value):
            raise ValueError("an SPS status is 1-16 characters A-Z, 0-9, _ or space (VR CS)")
        return value

    @model_validator(mode="after")
    def _notify_needs_hl7_status(self) -> IdleRule:
        if self.notify and self.set_status not in ("COMPLETED", "DISCONTINUED"):
            raise ValueError("notify: true needs set_status COMPLETED or DISCONTINUED "
                             "(they become ORC-5 CM / DC)")
        return self


class HousekeepingSettings(_Section):
    """Idle items and old rows (bridge/mpps/housekeeping.py). 0 days keeps rows forever."""

    enabled: bool = True
    interval_s: float = Field(default=300.0, gt=0)
    idle_rules: list[IdleRule] = Field(default_factory=list)
    purge_sent_days: float = Field(default=30.0, ge=0, description="delivered outbox messages")
    purge_dead_days: float = Field(default=90.0, ge=0, description="dead letters")
    purge_mpps_days: float = Field(default=90.0, ge=0, description="final MPPS instances")
    purge_steps_days: float = Field(
        default=0.0, ge=0, description="COMPLETED/DISCONTINUED/CANCELED worklist items")
