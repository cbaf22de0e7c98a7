"""Backups of the SQLite store that restore: a consistent snapshot taken while the
daemon runs, and the check of a backup file.

``backup_sqlite`` copies the database with SQLite's online backup API in one step,
inside one read transaction: the copy is the store as of one commit, and the daemon's
writer goes on committing meanwhile (WAL mode: readers never block the writer). The
copy is written to ``PATH.partial`` (0600 from its creation), switched from WAL to a
plain rollback journal so that it is one self-contained file, checked
(``verify_sqlite``), then renamed to ``PATH``. A failure leaves no ``PATH``.

``verify_sqlite`` opens a file read-only: ``PRAGMA integrity_check``, the schema
version (and whether this release knows it), and the rows per table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from bridge.store import cipher, migrations
from bridge.store.base import StoreError
from bridge.store.private import create_private_file


@dataclass
class BackupReport:
    path: Path
    size: int = 0
    schema_version: int = 0
    integrity: str = ""
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.integrity == "ok" and 0 < self.schema_version <= migrations.latest_version()


def _problem(path: Path, exc: Exception) -> StoreError:
    return StoreError(f"{path}: {exc}")


def verify_sqlite(path: Path, key: str | None = None) -> BackupReport:
    """Check a SQLite store or backup without changing it (StoreError if unreadable);
    ``key`` for a SQLCipher-encrypted one."""
    if not path.is_file():
        raise StoreError(f"{path}: no such file")
    report = BackupReport(path=path, size=path.stat().st_size)
    try:
        conn = cipher.connect(f"{path.resolve().as_uri()}?mode=ro", key, uri=True)
    except Exception as exc:
        if not cipher.is_db_error(exc):
            raise
        raise _problem(path, exc) from None
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        report.integrity = "; ".join(str(r[0]) for r in rows[:5])
        names = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        if "schema_version" in names:
            report.schema_version = int(conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
        for name in names:
            if name != "schema_version":
                count = conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0]
                report.tables[name] = int(count)
    except Exception as exc:  # sqlite3's or sqlcipher3's: not a database, truncated
        if not cipher.is_db_error(exc):
            raise
        raise _problem(path, exc) from None
    finally:
        conn.close()
    return report


def backup_sqlite(source: Path, target: Path, key: str | None = None) -> BackupReport:
    """Snapshot ``source`` into the new file ``target`` (0600), verified; an encrypted
    store (``key``) gives a backup encrypted with the same key."""
    if not source.is_file():
        raise StoreError(f"{source}: no such SQLite file")
    if target.exists():
        raise StoreError(f"{target}: exists; a backup goes to a new file")
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    if not target.parent.is_dir():
        raise StoreError(f"{target.parent}: no such folder")
    create_private_file(partial)
    try:
        src = cipher.connect(source, key, timeout=30.0)
        try:
            dst = cipher.connect(partial, key)
            try:
                src.backup(dst)  # every page in one step: one consistent snapshot
                dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
                dst.commit()
            finally:
                dst.close()
        finally:
            src.close()
        report = verify_sqlite(partial, key)
        if not report.ok:
            raise StoreError(f"{partial}: the copy does not verify: integrity "
                             f"{report.integrity!r}, schema version {report.schema_version}")
        with partial.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
    except Exception as exc:
        if not cipher.is_db_error(exc):
            raise
        raise StoreError(f"{source}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    report.path = target
    return report
