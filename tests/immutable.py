"""A file no write reaches, for tests of a store that fails under a command."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def immutable(path: Path) -> Iterator[None]:
    """Root ignores file permissions, not the immutable flag: every write to ``path``
    fails (the SQLite database file: SQLite opens it read-only, and the first write of a
    transaction raises sqlite3's "attempt to write a readonly database")."""
    subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)
