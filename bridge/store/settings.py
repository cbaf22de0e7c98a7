"""The ``store`` configuration section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from bridge.section import Section


class StoreSettings(Section):
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    sqlite_path: Path | None = Field(
        default=None, description="SQLite file; default <data_dir>/bridge.sqlite3")
    postgresql_dsn: str = Field(default="", description="libpq DSN, for backend: postgresql")
    # Messages from several MLLP connections are committed together (group
    # commit): one fsync serves many ACKs, while each message keeps its own
    # savepoint so one failure never takes another message with it.
    max_batch: int = Field(default=64, ge=1, le=10000)
    # Several instances on one PostgreSQL database (docs: "Several instances").
    # Each writes a heartbeat row every heartbeat_s; the maintenance leader's lease
    # lasts leader_lease_s, so its role moves to a survivor within
    # leader_lease_s + heartbeat_s of its death.
    instance_id: str = Field(default="", max_length=64,
                             description="'' means HOST-PID-RANDOM, new at each start")
    heartbeat_s: float = Field(default=5.0, gt=0, le=300)
    leader_lease_s: float = Field(default=15.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> StoreSettings:
        if self.leader_lease_s < 2 * self.heartbeat_s:
            raise ValueError("leader_lease_s must be at least twice heartbeat_s (a leader "
                             "renews its lease at every heartbeat)")
        return self

    def sqlite_file(self, data_dir: Path) -> Path:
        """The SQLite database file: ``sqlite_path``, else inside the data folder."""
        return self.sqlite_path or data_dir / "bridge.sqlite3"
