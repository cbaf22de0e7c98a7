"""Files that hold patient data are private to the daemon's user.

The data folder is made 0700 and every SQLite file (the database, its -wal and
-shm, a backup) 0600 when this code creates it, whatever the umask. SQLite gives
the -wal and -shm files the database file's own mode, so a 0600 database keeps
them private too.

Files that exist already are not changed behind the operator's back: at start,
``permission_problems`` names each one that the group or others may read, with the
command that fixes it; the daemon logs each as a WARNING, or, with
``store.strict_permissions``, refuses to start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and missing parents) as 0700; an existing folder is left alone."""
    if path.is_dir():
        return
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        os.chmod(created, DIR_MODE)


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when created."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off, never added any
    finally:
        os.close(fd)
    return True


def sqlite_files(db: Path) -> list[Path]:
    """The database file and the files SQLite keeps beside it."""
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
            db.with_name(db.name + "-journal")]


def permission_problems(folders: Iterable[Path], files: Iterable[Path]) -> list[str]:
    """One sentence per existing folder or file that the group or others may read
    (or, for a folder, enter), naming the path and the fix."""
    out = []
    for path, wanted in [*((f, DIR_MODE) for f in folders), *((f, FILE_MODE) for f in files)]:
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            what = "folder" if wanted == DIR_MODE else "file"
            out.append(f"{what} {path} is open to other users (mode {mode:04o}); "
                       f"fix: chmod {wanted:o} {path}")
    return out


def check_private(data_dir: Path, db: Path | None, *, strict: bool) -> list[str]:
    """The data folder (made 0700 if missing) and the SQLite files (``db``, None for
    PostgreSQL) checked at start: the problems to log as warnings, or, when ``strict``,
    a StoreError with the first of them (one line)."""
    from bridge.store.base import StoreError

    make_private_dir(data_dir)
    folders = [data_dir] if db is None or db.parent == data_dir else [data_dir, db.parent]
    problems = permission_problems(folders, sqlite_files(db) if db is not None else [])
    if problems and strict:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise StoreError(f"{problems[0]}{more}; store.strict_permissions is on")
    return problems
