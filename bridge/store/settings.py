"""The ``store`` configuration section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

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

    def sqlite_file(self, data_dir: Path) -> Path:
        """The SQLite database file: ``sqlite_path``, else inside the data folder."""
        return self.sqlite_path or data_dir / "bridge.sqlite3"
