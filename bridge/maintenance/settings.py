"""The ``housekeeping`` configuration section: idle rules and purges.

Documented in docs/mpps-outbound.md and mwl-bridge.example.yaml. Message
retention is configured under ``orders.messages`` (bridge/orders/settings.py),
where the message log is described; its loop runs here.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from bridge.section import Section, sps_status


class IdleRule(Section):
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

    _cs = field_validator("set_status")(classmethod(lambda cls, v: sps_status(v)))

    @model_validator(mode="after")
    def _notify_needs_hl7_status(self) -> IdleRule:
        if self.notify and self.set_status not in ("COMPLETED", "DISCONTINUED"):
            raise ValueError("notify: true needs set_status COMPLETED or DISCONTINUED "
                             "(they become ORC-5 CM / DC)")
        return self


class HousekeepingSettings(Section):
    """Idle items and old rows (bridge/maintenance/). 0 days keeps rows forever."""

    enabled: bool = True
    interval_s: float = Field(default=300.0, gt=0)
    idle_rules: list[IdleRule] = Field(default_factory=list)
    purge_sent_days: float = Field(
        default=30.0, ge=0, description="delivered outbox messages and forwarded MPPS requests")
    purge_dead_days: float = Field(
        default=90.0, ge=0, description="dead letters (outbox and MPPS forwarding)")
    purge_mpps_days: float = Field(default=90.0, ge=0, description="final MPPS instances")
    purge_steps_days: float = Field(
        default=0.0, ge=0, description="COMPLETED/DISCONTINUED/CANCELED worklist items")
