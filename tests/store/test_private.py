"""Patient data at rest is private: the data folder 0700, every SQLite file 0600
whatever the umask; an existing open file is a warning, or with
store.strict_permissions a StoreError (bridge/store/private.py)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.store import SqliteStore, StoreError, StoreSettings
from bridge.store.private import (
    check_private,
    create_private_file,
    make_private_dir,
    permission_problems,
)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)  # the worst case: nothing taken off
    yield
    os.umask(old)


def test_a_new_store_is_private_whatever_the_umask(tmp_path, open_umask):
    db = tmp_path / "a" / "b" / "bridge.sqlite3"
    store = SqliteStore(db)
    store.migrate()
    store.write([lambda tx: None])
    try:
        files = sorted(p for p in (tmp_path / "a").rglob("*"))
        assert {p.name for p in files} >= {"b", "bridge.sqlite3", "bridge.sqlite3-wal",
                                           "bridge.sqlite3-shm"}
        for p in files:
            assert _mode(p) == (0o700 if p.is_dir() else 0o600), p
        assert _mode(tmp_path / "a") == 0o700
    finally:
        store.close()


def test_make_private_dir_leaves_an_existing_folder_alone(tmp_path):
    (tmp_path / "d").mkdir(mode=0o755)
    os.chmod(tmp_path / "d", 0o755)
    make_private_dir(tmp_path / "d")
    assert _mode(tmp_path / "d") == 0o755


def test_create_private_file_does_not_touch_an_existing_file(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    f.chmod(0o644)
    assert not create_private_file(f)
    assert _mode(f) == 0o644 and f.read_text() == "x"


def test_open_folders_and_files_are_named_with_the_fix(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    db = data / "bridge.sqlite3"
    db.write_text("")
    db.chmod(0o640)
    problems = permission_problems([data], [db, data / "missing"])
    assert problems == [
        f"folder {data} is open to other users (mode 0755); fix: chmod 700 {data}",
        f"file {db} is open to other users (mode 0640); fix: chmod 600 {db}"]


def test_private_ones_are_no_problem(tmp_path):
    make_private_dir(tmp_path / "data")
    create_private_file(tmp_path / "data" / "x")
    assert permission_problems([tmp_path / "data"], [tmp_path / "data" / "x"]) == []


def test_check_private_warns_or_refuses(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o750)
    db = data / "bridge.sqlite3"
    db.write_text("")
    db.chmod(0o644)
    assert len(check_private(data, db, strict=False)) == 2
    with pytest.raises(StoreError, match=r"^folder .* \(mode 0750\); fix: chmod 700 .* "
                                         r"\(and 1 more\); store.strict_permissions is on$"):
        check_private(data, db, strict=True)
    data.chmod(0o700)
    db.chmod(0o600)
    assert check_private(data, db, strict=True) == []


def test_check_private_makes_a_missing_data_folder_and_checks_a_db_elsewhere(tmp_path):
    other = tmp_path / "elsewhere"
    other.mkdir()
    other.chmod(0o755)
    assert check_private(tmp_path / "data", other / "db", strict=False) == [
        f"folder {other} is open to other users (mode 0755); fix: chmod 700 {other}"]
    assert _mode(tmp_path / "data") == 0o700
    assert check_private(tmp_path / "pg", None, strict=True) == []  # PostgreSQL: folder only


def _pw(tmp_path: Path, text: str, mode: int = 0o600) -> StoreSettings:
    f = tmp_path / "pgpass"
    f.write_text(text)
    f.chmod(mode)
    return StoreSettings(backend="postgresql", postgresql_password_file=f)


def test_the_postgresql_password_is_the_first_line_of_its_file(tmp_path):
    assert _pw(tmp_path, "s3cret\n").postgresql_password() == "s3cret"
    assert StoreSettings().postgresql_password() is None


@pytest.mark.parametrize(("text", "mode", "problem"), [
    ("s3cret\n", 0o644, r"readable by other users \(mode 0644\); fix: chmod 600"),
    ("\n", 0o600, r"is empty"),
    ("", 0o600, r"is empty"),
    (None, 0o600, r"cannot read .*: No such file"),
])
def test_a_bad_password_file_is_a_store_error(tmp_path, text, mode, problem):
    s = _pw(tmp_path, text or "", mode)
    if text is None:
        s = StoreSettings(postgresql_password_file=tmp_path / "nope")
    with pytest.raises(StoreError, match=r"^store.postgresql_password_file: .*" + problem):
        s.postgresql_password()


def test_an_undecodable_password_file_is_a_store_error(tmp_path):
    f = tmp_path / "pgpass"
    f.write_bytes(b"\xff\xfe")
    f.chmod(0o600)
    with pytest.raises(StoreError, match="not UTF-8"):
        StoreSettings(postgresql_password_file=f).postgresql_password()


def test_the_password_file_reaches_libpq_beside_the_dsn(tmp_path, pg_dsn):
    from bridge.store import open_store

    s = _pw(tmp_path, "s3cret-from-file\n").model_copy(update={"postgresql_dsn": pg_dsn})
    store = open_store(s, tmp_path)
    try:
        conn = store._writer_conn()  # type: ignore[attr-defined]
        assert conn.info.password == "s3cret-from-file"
        assert "s3cret" not in store.dsn  # type: ignore[attr-defined]
    finally:
        store.close()


def test_check_config_reads_the_secret_files_without_printing_them(tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    f = tmp_path / "pgpass"
    f.write_text("pw-Hq3Lm8\n")
    f.chmod(0o644)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mapping:\n  paths: [{repo / 'mappings'}]\n"
                   f"store:\n  postgresql_password_file: {f}\n")

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg),
                               "check-config"], capture_output=True, text=True, timeout=60,
                              cwd=repo)

    bad = check()
    assert bad.returncode == 2
    assert bad.stderr.startswith("store error: store.postgresql_password_file: ")
    assert "fix: chmod 600" in bad.stderr
    f.chmod(0o600)
    ok = check()
    assert ok.returncode == 0, ok.stderr
    assert "pw-Hq3Lm8" not in ok.stdout + ok.stderr
