"""The daemon on a SQLCipher-encrypted store (issue 19): order in, findscu, MPPS and the
status messages out, no patient data in the file; a plain store encrypted in place with
``db encrypt`` serves what it held; a backup of it is encrypted and verifies."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.outbound.mllp_receiver import MllpReceiver

from .conftest import FIXTURES, start_daemon, stop_daemon, write_config
from .test_mpps_roundtrip import KEYS, assert_ip_then_cm, modality_performs, outbound_config

pytest.importorskip("sqlcipher3")

KEY = "e2e-K3y-for-the-store"


def _no_plain_text(data: Path) -> None:
    for f in data.iterdir():
        raw = f.read_bytes()
        assert not raw.startswith(b"SQLite format 3"), f
        assert b"PAT10001" not in raw and b"DOE^JOHN" not in raw, f


def test_order_findscu_and_mpps_on_an_encrypted_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MWL_E2E_DB_KEY", KEY)
    receiver = MllpReceiver()
    receiver.start()
    cfg = write_config(tmp_path, outbound_config(receiver.port)
                       + "store:\n  sqlcipher_key_env: MWL_E2E_DB_KEY\n")
    d = start_daemon(cfg, tmp_path / "data")
    try:
        res = d.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        assert res.returncode == 0, res.stdout + res.stderr
        (item,) = d.findscu(tmp_path, *KEYS)
        modality_performs(d, item)
        assert_ip_then_cm(receiver.wait_for(2), item)
        backup = d.cli("db", "backup", str(tmp_path / "backup.sqlite3"))
        assert backup.returncode == 0, backup.stderr
    finally:
        code = stop_daemon(d)
        receiver.stop()
    assert code == 0, "\n".join(d.log[-30:])
    assert KEY not in "\n".join(d.log)
    _no_plain_text(tmp_path / "data")
    b = tmp_path / "backup.sqlite3"
    assert stat.S_IMODE(b.stat().st_mode) == 0o600
    assert not b.read_bytes().startswith(b"SQLite format 3") and b"PAT10001" not in b.read_bytes()
    verified = d.cli("db", "verify", str(b))
    assert verified.returncode == 0 and "verified" in verified.stdout, verified.stderr
    monkeypatch.delenv("MWL_E2E_DB_KEY")
    refused = d.cli("db", "verify", str(b))
    assert refused.returncode == 1 and "MWL_E2E_DB_KEY is not set" in refused.stderr


def test_a_plain_store_encrypted_in_place_serves_what_it_held(tmp_path, monkeypatch):
    plain = write_config(tmp_path)
    d = start_daemon(plain, tmp_path / "data")
    try:
        assert d.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
    finally:
        assert stop_daemon(d) == 0
    key = tmp_path / "db.key"
    key.write_text(KEY + "\n")
    key.chmod(0o600)
    cfg = tmp_path / "keyed.yaml"
    cfg.write_text(plain.read_text() + f"store:\n  sqlcipher_key_file: {key}\n")
    refused = d.cli("db", "encrypt")  # d.cli uses the plain config: no key there
    assert refused.returncode == 2 and "set store.sqlcipher_key_file" in refused.stderr
    d.config = cfg
    done = d.cli("db", "encrypt")
    assert done.returncode == 0, done.stderr
    assert "encrypted:" in done.stdout and "verified" in done.stdout
    _no_plain_text(tmp_path / "data")
    e = start_daemon(cfg, tmp_path / "data")
    try:
        (item,) = e.findscu(tmp_path, "AccessionNumber=ACC20261128001", "PatientName")
        assert str(item.PatientName).startswith("DOE^JOHN")
        monkeypatch.setenv("MWL_OTHER_KEY", "another-key")
        busy = e.cli("db", "rekey", "--new-key-env", "MWL_OTHER_KEY")
        assert busy.returncode == 1 and "the store is in use (stop the daemon first)" in \
            busy.stderr, busy.stderr
    finally:
        assert stop_daemon(e) == 0
    rekeyed = e.cli("db", "rekey", "--new-key-env", "MWL_OTHER_KEY")
    assert rekeyed.returncode == 0, rekeyed.stderr
    old_key = e.cli("worklist")
    assert old_key.returncode != 0 and "wrong key" in old_key.stderr
