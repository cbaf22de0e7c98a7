"""SQLCipher encryption at rest (bridge/store/cipher.py): the key from a file or the
environment, never the config; a wrong or missing key refused; encrypt, decrypt and
rekey through a new verified file; backups of an encrypted store stay encrypted."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from bridge.store import SqliteStore, StoreError, StoreSettings, open_store
from bridge.store.backup import backup_sqlite, verify_sqlite
from bridge.store.cipher import convert, read_key

from .test_dbcopy import STEPS, fill

pytest.importorskip("sqlcipher3")

KEY, OTHER = "k3y-Ab9'Zx", "n3w-Qp4Rt"


def _key_file(tmp_path: Path, key: str, name: str = "key", mode: int = 0o600) -> Path:
    f = tmp_path / name
    f.write_text(key + "\n")
    f.chmod(mode)
    return f


def _plain_header(path: Path) -> bool:
    return path.read_bytes()[:16] == b"SQLite format 3\0"


@pytest.fixture
def encrypted(tmp_path) -> Any:
    s = SqliteStore(tmp_path / "data" / "bridge.sqlite3", key=KEY)
    s.migrate()
    fill(s)
    yield s
    s.close()


def test_an_encrypted_store_holds_no_plain_text(encrypted):
    encrypted.close()
    raw = b"".join(p.read_bytes() for p in encrypted.path.parent.iterdir())
    assert not _plain_header(encrypted.path)
    assert b"ORM^O01" not in raw and "Müller".encode() not in raw
    with pytest.raises(sqlite3.DatabaseError):
        sqlite3.connect(encrypted.path).execute("SELECT * FROM sqlite_master").fetchall()


def test_a_wrong_key_or_none_is_refused(encrypted):
    encrypted.close()
    with pytest.raises(StoreError, match=r"cannot open the encrypted store: wrong key"):
        SqliteStore(encrypted.path, key="wrong").migrate()
    # plain sqlite3: not a database, and the error says which setting is missing
    with pytest.raises(StoreError, match=r"bridge\.sqlite3: cannot open the store: file is "
                       r"not a database \(an encrypted store\? set store\.sqlcipher_key_file"):
        SqliteStore(encrypted.path).migrate()


def test_the_key_comes_from_a_file_or_a_variable(tmp_path, monkeypatch):
    f = _key_file(tmp_path, KEY)
    assert StoreSettings(sqlcipher_key_file=f).sqlcipher_key() == KEY
    monkeypatch.setenv("MWL_DB_KEY", OTHER)
    assert StoreSettings(sqlcipher_key_env="MWL_DB_KEY").sqlcipher_key() == OTHER
    assert StoreSettings().sqlcipher_key() is None


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"file": "OPEN"}, r"readable by other users \(mode 0644\); fix: chmod 600"),
    ({"file": "EMPTY"}, r"is empty"),
    ({"file": "MISSING"}, r"cannot read .*No such file"),
    ({"env": "MWL_UNSET_KEY_VAR"}, r"the environment variable MWL_UNSET_KEY_VAR is not set"),
    ({"file": "OK", "env": "X"}, r"give one of them"),
])
def test_a_key_that_cannot_be_had_is_a_store_error(tmp_path, kwargs, problem):
    files = {"OPEN": _key_file(tmp_path, KEY, "open", 0o644),
             "EMPTY": _key_file(tmp_path, "", "empty"), "MISSING": tmp_path / "missing",
             "OK": _key_file(tmp_path, KEY)}
    with pytest.raises(StoreError, match=r"^store.sqlcipher_key_(file|env)(_file|_env)?: .*"
                       + problem if "give" not in problem else problem):
        read_key("store.sqlcipher_key", file=files.get(kwargs.get("file", "")),
                 env=kwargs.get("env", ""), environ={})


def test_open_store_uses_the_configured_key(tmp_path, encrypted):
    encrypted.close()
    s = StoreSettings(sqlite_path=encrypted.path, sqlcipher_key_file=_key_file(tmp_path, KEY))
    store = open_store(s, tmp_path)
    try:
        assert store.count_matching(__import__("bridge.store").store.StepFilter()) == STEPS
    finally:
        store.close()


def test_encrypt_decrypt_rekey_in_place(tmp_path):
    path = tmp_path / "bridge.sqlite3"
    plain = SqliteStore(path)
    plain.migrate()
    fill(plain)
    plain.close()
    counts = convert(path, None, KEY)
    assert counts["procedure_step"] == STEPS and not _plain_header(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bridge.sqlite3"]
    assert verify_sqlite(path, KEY).tables["procedure_step"] == STEPS
    convert(path, KEY, OTHER)
    with pytest.raises(StoreError, match="wrong key"):
        verify_sqlite(path, KEY)
    assert verify_sqlite(path, OTHER).ok
    convert(path, OTHER, None)
    assert _plain_header(path) and verify_sqlite(path).tables["procedure_step"] == STEPS


def test_conversion_refuses_while_the_store_is_open_and_leaves_it_alone(tmp_path, encrypted):
    before = encrypted.path.read_bytes()
    with pytest.raises(StoreError, match=r"the store is in use \(stop the daemon first\)"):
        convert(encrypted.path, KEY, OTHER)
    encrypted.close()
    assert verify_sqlite(encrypted.path, KEY).ok
    assert not list(encrypted.path.parent.glob("*.converting*"))
    del before


def test_conversion_errors(tmp_path, encrypted):
    encrypted.close()
    with pytest.raises(StoreError, match="nothing to do"):
        convert(encrypted.path, None, None)
    with pytest.raises(StoreError, match="no such SQLite file"):
        convert(tmp_path / "nope", None, KEY)
    with pytest.raises(StoreError, match="wrong key"):
        convert(encrypted.path, "wrong", OTHER)
    with pytest.raises(StoreError, match="not a database"):
        convert(encrypted.path, None, OTHER)  # it is encrypted already
    assert verify_sqlite(encrypted.path, KEY).ok


def test_a_copy_that_does_not_verify_leaves_the_store_unchanged(tmp_path, encrypted,
                                                                monkeypatch):
    from bridge.store import cipher

    encrypted.close()
    real = cipher._counts
    calls = []

    def short(conn: Any) -> dict[str, int]:
        calls.append(1)
        out = real(conn)
        if len(calls) == 2:  # the new file's counts
            out["procedure_step"] -= 1
        return out

    monkeypatch.setattr(cipher, "_counts", short)
    with pytest.raises(StoreError, match=r"does not verify .* the store is unchanged"):
        convert(encrypted.path, KEY, OTHER)
    assert verify_sqlite(encrypted.path, KEY).ok
    assert not list(encrypted.path.parent.glob("*.converting*"))


def test_a_backup_of_an_encrypted_store_is_encrypted(tmp_path, encrypted):
    report = backup_sqlite(encrypted.path, tmp_path / "b", KEY)
    assert report.ok and report.tables["procedure_step"] == STEPS
    assert not _plain_header(tmp_path / "b")
    with pytest.raises(StoreError, match=r"/b: file is not a database"):
        verify_sqlite(tmp_path / "b")
