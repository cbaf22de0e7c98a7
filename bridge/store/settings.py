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
    # The password in a file of its own (0600, first line), not in the DSN or the config;
    # libpq's own PGPASSWORD and PGPASSFILE (~/.pgpass) work as well.
    postgresql_password_file: Path | None = None
    # Messages from several MLLP connections are committed together (group
    # commit): one fsync serves many ACKs, while each message keeps its own
    # savepoint so one failure never takes another message with it.
    # An existing data folder or SQLite file that the group or others may read is a
    # WARNING at start; with this on, the daemon refuses to start instead.
    strict_permissions: bool = False
    # SQLCipher encryption of the SQLite store (pip install 'mwl-bridge[sqlcipher]'): the
    # key from a file (0600, first line) or from the environment variable named here,
    # never from this file. Convert a store with `mwl-bridge db encrypt/decrypt/rekey`.
    sqlcipher_key_file: Path | None = None
    sqlcipher_key_env: str = Field(default="", description="the variable's name, not the key")
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

    def postgresql_password(self) -> str | None:
        """The first line of ``postgresql_password_file`` (None when not set).

        Raises StoreError when it cannot be read or other users may read it (libpq
        ignores such a ~/.pgpass for the same reason)."""
        from bridge.store.base import StoreError

        path = self.postgresql_password_file
        if path is None:
            return None
        try:
            mode = path.stat().st_mode & 0o777
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise StoreError(f"store.postgresql_password_file: cannot read {path}: "
                             f"{reason}") from None
        if mode & 0o077:
            raise StoreError(f"store.postgresql_password_file: {path} is readable by other "
                             f"users (mode {mode:04o}); fix: chmod 600 {path}")
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise StoreError(f"store.postgresql_password_file: {path} is empty")
        return lines[0]

    def sqlcipher_key(self) -> str | None:
        """The SQLCipher key, None when the store is not encrypted (StoreError if the
        file or the variable cannot give it)."""
        from bridge.store.cipher import read_key

        return read_key("store.sqlcipher_key", file=self.sqlcipher_key_file,
                        env=self.sqlcipher_key_env)

    def sqlite_file(self, data_dir: Path) -> Path:
        """The SQLite database file: ``sqlite_path``, else inside the data folder."""
        return self.sqlite_path or data_dir / "bridge.sqlite3"
