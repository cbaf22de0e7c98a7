"""The ``reconcile`` configuration section: completing worklist items when their study
reaches the PACS (bridge/reconcile/).

Kept beside the code it configures; ``bridge.app.settings.Settings`` holds it.
Documented in docs/completion.md and mwl-bridge.example.yaml.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge.section import Port, Section, ae_title
from bridge.tls import TlsSettings

Watched = Literal["SCHEDULED", "STARTED"]


def _open_statuses() -> list[Watched]:
    return ["SCHEDULED", "STARTED"]


class PacsPeer(Section):
    """One PACS the loop asks (Study Root C-FIND at STUDY level)."""

    name: str = ""  # shown in logs and the CLI; the AE title when empty
    ae_title: str
    host: str = "127.0.0.1"
    port: Port = 104
    timeout_s: float = Field(default=30.0, gt=0, description="association and each answer")
    tls: TlsSettings = TlsSettings()

    _aet = field_validator("ae_title")(classmethod(lambda cls, v: ae_title(v)))

    @property
    def label(self) -> str:
        return self.name or self.ae_title


class ReconcileSettings(Section):
    """Completion without MPPS: PACS query, IAN and the Orthanc push (docs/completion.md)."""

    # The query loop; it runs on the maintenance leader only.
    enabled: bool = False
    pacs: list[PacsPeer] = Field(default_factory=list)
    # Which open items are watched: of these stations / modalities (empty: any), in
    # these statuses, whose scheduled start lies between max_age_h and min_age_min ago.
    stations: list[str] = Field(default_factory=list)
    modalities: list[str] = Field(default_factory=list)
    statuses: list[Watched] = Field(default_factory=_open_statuses, min_length=1)
    min_age_min: float = Field(default=10.0, ge=0)
    max_age_h: float = Field(default=48.0, gt=0)
    interval_s: float = Field(default=60.0, gt=0, description="between two cycles")
    # At most this many items per cycle, asked in associations of batch_size
    # items, at most max_queries_per_s C-FIND requests per second.
    max_items_per_cycle: int = Field(default=1000, ge=1)
    batch_size: int = Field(default=50, ge=1, le=1000)
    max_queries_per_s: float = Field(default=20.0, gt=0)
    # An item not found is asked again after recheck_s.
    recheck_s: float = Field(default=300.0, gt=0)
    # When a found study is complete: "polls", its NumberOfStudyRelatedInstances is
    # the same in two answers settle_poll_s or more apart; "time", that count has
    # not changed for settle_time_s.
    settle: Literal["polls", "time"] = "polls"
    settle_poll_s: float = Field(default=60.0, gt=0)
    settle_time_s: float = Field(default=300.0, gt=0)
    # The calling AE title of the loop's associations ('' = dicom.ae_title).
    calling_ae_title: str = ""
    # Instance Availability Notification (PS3.4 Annex R) on the worklist's AE.
    ian: bool = False

    @field_validator("calling_ae_title")
    @classmethod
    def _calling(cls, value: str) -> str:
        return ae_title(value) if value else value

    @model_validator(mode="after")
    def _pacs_when_enabled(self) -> ReconcileSettings:
        if self.enabled and not self.pacs:
            raise ValueError("reconcile.enabled needs at least one entry in reconcile.pacs")
        if self.min_age_min / 60 >= self.max_age_h:
            raise ValueError("reconcile.min_age_min must be less than max_age_h")
        return self
