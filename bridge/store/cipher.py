"""Optional encryption at rest of the SQLite store with SQLCipher 4 (``pip install
'mwl-bridge[sqlcipher]'``, the ``sqlcipher3-binary`` wheel).

The key never sits in the config: ``store.sqlcipher_key_file`` names a file (0600, its
first line) or ``store.sqlcipher_key_env`` an environment variable that holds it. Every
connection to an encrypted store gives the key first (``PRAGMA key``), then proves it
by reading the schema: a wrong key, or a plain store opened with a key, is a StoreError.

``convert`` encrypts, decrypts or re-keys a store file safely: SQLCipher's
``sqlcipher_export`` writes a new file beside it (0600), the new file is verified with
its own key (integrity check, the same row count in every table), and only then renamed
over the old one. It refuses while another connection (the daemon) has the store open.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from bridge.store.base import StoreError
from bridge.store.private import create_private_file, sqlite_files


def driver() -> ModuleType:
    """sqlcipher3's DB-API module (StoreError when the extra is not installed)."""
    try:
        return importlib.import_module("sqlcipher3.dbapi2")
    except ImportError:
        raise StoreError("a SQLCipher key is configured but sqlcipher3 is not installed; "
                         "pip install 'mwl-bridge[sqlcipher]'") from None


def _quoted(key: str) -> str:
    return "'" + key.replace("'", "''") + "'"


def apply_key(conn: Any, key: str, path: Path) -> None:
    """Give ``key`` to a fresh connection and prove it (StoreError if it is wrong)."""
    conn.execute("PRAGMA cipher_log_level = NONE")  # a wrong key is our StoreError alone
    conn.execute(f"PRAGMA key = {_quoted(key)}")
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except Exception as exc:  # noqa: BLE001 - sqlcipher3's DatabaseError
        conn.close()
        raise StoreError(f"{path}: cannot open the encrypted store: wrong key, or the file "
                         f"is not encrypted with SQLCipher ({exc})") from None


def is_db_error(exc: BaseException) -> bool:
    """An error of sqlite3 or of sqlcipher3 (whose classes are its own)."""
    import sqlite3

    return isinstance(exc, sqlite3.Error) or (
        type(exc).__module__.split(".")[0] == "sqlcipher3" and isinstance(exc, Exception))


def connect(path: Path | str, key: str | None, **kwargs: Any) -> Any:
    """A connection to ``path``: SQLCipher with the key, else the standard sqlite3."""
    if key is None:
        import sqlite3

        return sqlite3.connect(path, **kwargs)
    conn = driver().connect(str(path), **kwargs)
    apply_key(conn, key, Path(str(path).removeprefix("file:").split("?")[0]))
    return conn


def read_key(setting: str, *, file: Path | None, env: str,
             environ: dict[str, str] | None = None) -> str | None:
    """The key from ``file`` (first line; 0600) or the variable ``env``; None if neither."""
    if file is not None and env:
        raise StoreError(f"{setting}_file and {setting}_env: give one of them")
    if file is not None:
        try:
            mode = file.stat().st_mode & 0o777
            lines = file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
            raise StoreError(f"{setting}_file: cannot read {file}: {reason}") from None
        if mode & 0o077:
            raise StoreError(f"{setting}_file: {file} is readable by other users "
                             f"(mode {mode:04o}); fix: chmod 600 {file}")
        if not lines or not lines[0]:
            raise StoreError(f"{setting}_file: {file} is empty")
        return lines[0]
    if env:
        value = (os.environ if environ is None else environ).get(env, "")
        if not value:
            raise StoreError(f"{setting}_env: the environment variable {env} is not set")
        return value
    return None


def _counts(conn: Any) -> dict[str, int]:
    names = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]
    return {n: int(conn.execute(f'SELECT COUNT(*) FROM "{n}"').fetchone()[0]) for n in names}


def convert(path: Path, old_key: str | None, new_key: str | None) -> dict[str, int]:
    """Rewrite the store ``path`` from ``old_key`` to ``new_key`` (None: plain SQLite)
    through a new, verified file; returns the rows per table."""
    if old_key is None and new_key is None:
        raise StoreError("nothing to do: neither the old nor the new store is encrypted")
    if not path.is_file():
        raise StoreError(f"{path}: no such SQLite file")
    sql = driver()
    new = path.with_name(path.name + ".converting")
    for leftover in sqlite_files(new):
        leftover.unlink(missing_ok=True)
    create_private_file(new)
    try:
        src = sql.connect(str(path), timeout=0)
        try:
            if old_key is not None:
                apply_key(src, old_key, path)
            else:
                src.execute("SELECT count(*) FROM sqlite_master").fetchone()
            # Alone on the store: the daemon (or any reader) must be stopped first.
            try:
                src.execute("PRAGMA locking_mode=EXCLUSIVE")
                src.execute("BEGIN EXCLUSIVE")
                src.execute("COMMIT")
            except sql.OperationalError:
                raise StoreError(f"{path}: the store is in use (stop the daemon first)"
                                 ) from None
            src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            before = _counts(src)
            src.execute(f"ATTACH DATABASE {_quoted(str(new))} AS converted "
                        f"KEY {_quoted(new_key or '')}")
            src.execute("SELECT sqlcipher_export('converted')")
            src.execute("DETACH DATABASE converted")
        except sql.DatabaseError as exc:
            raise StoreError(f"{path}: {exc}") from None
        finally:
            src.close()
        check = connect(new, new_key)
        try:
            ok = check.execute("PRAGMA integrity_check").fetchone()[0]
            after = _counts(check)
        finally:
            check.close()
        if ok != "ok" or after != before:
            raise StoreError(f"{new}: the converted copy does not verify (integrity {ok!r}, "
                             f"counts {after} instead of {before}); the store is unchanged")
        with new.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(new, path)
        for stale in sqlite_files(path)[1:]:
            stale.unlink(missing_ok=True)
    finally:
        for leftover in sqlite_files(new):
            leftover.unlink(missing_ok=True)
    return after
