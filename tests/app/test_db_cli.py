"""``mwl-bridge db encrypt`` and ``db backup`` when the file system refuses the write:
one line on standard error and exit 1, not a traceback; the store as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.app.cli import main
from bridge.store import SqliteStore
from tests.immutable import immutable


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A plain SQLite store, migrated, at the configured data_dir."""
    path = tmp_path / "data" / "bridge.sqlite3"
    store = SqliteStore(path)
    store.migrate()
    store.close()
    return path


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(folder.iterdir())}


def test_encrypt_of_a_read_only_store_says_so_and_leaves_it_plain(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sqlcipher3")
    monkeypatch.setenv("MWL_TEST_DB_KEY", "a-key-for-the-test")
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {db.parent}\nstore:\n  sqlcipher_key_env: MWL_TEST_DB_KEY\n",
                   encoding="utf-8")
    before = _files(db.parent)
    assert before[db.name].startswith(b"SQLite format 3")
    # The copy is made and verified beside it; replacing the store is what fails.
    with immutable(db):
        code = main(["--config", str(cfg), "db", "encrypt"])
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")
    assert captured.err.splitlines() == [
        f"store error: PermissionError: [Errno 1] Operation not permitted: "
        f"'{db}.converting' -> '{db}'; the store is not encrypted"]
    after = _files(db.parent)
    assert after[db.name] == before[db.name]  # plain, byte for byte as it was
    # No converted copy left (an empty -wal and the -shm of its reading connection are).
    assert [n for n in after if "converting" in n] == []


def test_backup_into_a_read_only_folder_says_so_and_writes_nothing(
        tmp_path: Path, db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mwl-bridge.yaml"
    cfg.write_text(f"data_dir: {db.parent}\n", encoding="utf-8")
    folder = tmp_path / "backups"
    folder.mkdir()
    before = _files(db.parent)
    with immutable(folder):
        code = main(["--config", str(cfg), "db", "backup", str(folder / "b.sqlite3")])
    captured = capsys.readouterr()
    assert (code, captured.out) == (1, "")
    assert captured.err.splitlines() == [
        f"db backup: [Errno 1] Operation not permitted: '{folder / 'b.sqlite3'}.partial'"]
    assert list(folder.iterdir()) == []
    assert _files(db.parent) == before
