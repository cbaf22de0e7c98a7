"""Patient data at rest, on the real daemon (issue 19): after an order nothing under the
data folder is open to other users, whatever the umask; an open folder or TLS key stops
start-up with one line; secrets never reach the logs or the ACKs; a backup taken during
a burst of orders restores every order ACKed before it, as findscu sees it."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bridge.hl7 import MllpClient, ack_code_of
from tests.tlscerts import make_pki

from .conftest import FIXTURES, REPO, start_daemon, stop_daemon, write_config

ORDER = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()


def _order(n: int) -> tuple[str, bytes]:
    accession = f"ACCB{n:06d}"
    msg = (ORDER.replace(b"MSG-20261128-0001", f"MSG-B{n:06d}".encode())
           .replace(b"PLC100001", f"PLCB{n:06d}".encode())
           .replace(b"FIL100001", f"FILB{n:06d}".encode())
           .replace(b"ACC20261128001", accession.encode())
           .replace(b"RP20261128001", f"RPB{n:06d}".encode())
           .replace(b"SPS20261128001", f"SPSB{n:06d}".encode())
           .replace(b"1764318615.101", f"1764318615.{n + 1000}".encode()))
    return accession, msg


def _serve(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "serve"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def _cannot_start(done: subprocess.CompletedProcess[str], prefix: str) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_nothing_under_the_data_folder_is_open_to_others_after_an_order(tmp_path):
    old = os.umask(0)  # the daemon inherits the worst umask
    try:
        d = start_daemon(write_config(tmp_path), tmp_path / "data")
    finally:
        os.umask(old)
    try:
        sent = d.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert d.findscu(tmp_path, "AccessionNumber=ACC20261128001", "PatientName")
        seen = {}
        for p in [d.data_dir, *sorted(d.data_dir.rglob("*"))]:
            seen[p.name] = stat.S_IMODE(p.stat().st_mode)
            assert seen[p.name] == (0o700 if p.is_dir() else 0o600), (p, oct(seen[p.name]))
        assert {"data", "bridge.sqlite3", "bridge.sqlite3-wal", "bridge.sqlite3-shm"} <= set(seen)
        assert not [line for line in d.log if "readable by other users" in line]
    finally:
        assert stop_daemon(d) == 0


def test_an_open_data_folder_is_a_warning_or_with_strict_permissions_a_refusal(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o755)
    d = start_daemon(write_config(tmp_path), data)
    try:
        warned = [line for line in d.log if "WARNING" in line and str(data) in line]
        assert warned and f"fix: chmod 700 {data}" in warned[0], d.log
    finally:
        assert stop_daemon(d) == 0
    strict = write_config(tmp_path, "store:\n  strict_permissions: true\n")
    line = _cannot_start(_serve(strict), "cannot start")
    assert line == (f"cannot start: folder {data} is open to other users (mode 0755); fix: "
                    f"chmod 700 {data}; store.strict_permissions is on")
    data.chmod(0o700)
    (data / "bridge.sqlite3").chmod(0o644)
    line = _cannot_start(_serve(strict), "cannot start")
    assert f"file {data / 'bridge.sqlite3'} is open to other users (mode 0644)" in line


def test_a_tls_key_others_may_read_stops_start_up(tmp_path):
    pki = make_pki(tmp_path / "pki")
    pki.server.key.chmod(0o644)
    cfg = write_config(tmp_path, "")
    cfg.write_text(cfg.read_text().replace(
        "mllp:\n  host: 127.0.0.1\n  port: 0\n",
        "mllp:\n  host: 127.0.0.1\n  port: 0\n  tls:\n    enabled: true\n"
        f"    cert_file: {pki.server.cert}\n    key_file: {pki.server.key}\n"
        f"    ca_file: {pki.ca}\n"))
    line = _cannot_start(_serve(cfg), "TLS configuration error")
    assert line == (f"TLS configuration error: mllp.tls.key_file: the private key "
                    f"{pki.server.key} is readable by other users (mode 0644); fix: chmod 600 "
                    f"{pki.server.key}")


def test_secrets_reach_neither_the_logs_nor_the_acks_nor_the_config_shown(tmp_path):
    from argon2 import PasswordHasher

    password, token = "pw-Zq8Hk2LmN9", "tok-Vb7Xc4RtY1wE"
    pw_hash = PasswordHasher().hash(password)
    token_sha = hashlib.sha256(token.encode()).hexdigest()
    pg_secret = tmp_path / "pgpass"
    pg_secret.write_text("pg-Jd3Fs9Qa\n")
    pg_secret.chmod(0o600)
    cfg = write_config(tmp_path, (
        "logging:\n  level: DEBUG\n"
        "admin:\n  enabled: true\n  port: 0\n"
        f"  users: [{{name: alice, password_hash: '{pw_hash}', role: admin}}]\n"
        f"  tokens: [{{name: ci, token_sha256: '{token_sha}', role: admin}}]\n"
        f"store:\n  postgresql_password_file: {pg_secret}\n"
        "  postgresql_dsn: 'host=127.0.0.1 password=dsn-Pw5Ty7'\n"))
    d = start_daemon(cfg, tmp_path / "data")
    try:
        sent = d.send(FIXTURES / "orm-o01-ihe-ct.hl7", FIXTURES / "orm-missing-pid3.hl7")
        acks = sent.stdout
        url = next(line.split("console on ")[1].strip() for line in d.log
                   if "console on " in line)
        import httpx

        shown = httpx.get(f"{url}/api/config", headers={"Authorization": f"Bearer {token}"},
                          timeout=10)
        assert shown.status_code == 200, shown.text
        checked = subprocess.run(
            [sys.executable, "-m", "bridge", "--config", str(cfg), "check-config"],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert checked.returncode == 0, checked.stderr
    finally:
        assert stop_daemon(d) == 0
    assert "MSA|AA|" in acks and "MSA|AE|" in acks
    config = shown.json()
    assert config["admin"]["users"][0]["password_hash"] == "***"
    assert config["admin"]["tokens"][0]["token_sha256"] == "***"
    assert config["store"]["postgresql_dsn"] == "***"
    everything = "\n".join([*d.log, acks, shown.text, checked.stdout, checked.stderr])
    for secret in (password, token, pw_hash, token_sha, "pg-Jd3Fs9Qa", "dsn-Pw5Ty7"):
        assert secret not in everything, secret


async def _burst(port: int, start: int, count: int, acked: list[tuple[float, str]]) -> None:
    client = await MllpClient.connect("127.0.0.1", port, timeout=30)
    try:
        for n in range(start, start + count):
            accession, msg = _order(n)
            ack = await client.send(msg, timeout=30)
            assert ack_code_of(ack) == "AA", ack
            acked.append((time.monotonic(), accession))
    finally:
        await client.close()


def _accessions(d, tmp: Path) -> set[str]:
    answers = d.findscu(tmp, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
                        "AccessionNumber")
    return {str(a.AccessionNumber) for a in answers}


def test_a_backup_taken_during_a_burst_restores_every_order_acked_before_it(tmp_path):
    d = start_daemon(write_config(tmp_path / "old"), tmp_path / "old" / "data") \
        if (tmp_path / "old").mkdir() is None else None
    assert d is not None
    acked: list[tuple[float, str]] = []
    backup = tmp_path / "backup.sqlite3"
    try:
        burst = threading.Thread(target=lambda: asyncio.run(_burst(d.mllp_port, 0, 300, acked)))
        burst.start()
        while len(acked) < 60:
            time.sleep(0.01)
        started = time.monotonic()
        done = d.cli("db", "backup", str(backup))
        burst.join()
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout
    finally:
        assert stop_daemon(d) == 0
    before = {a for t, a in acked if t < started}
    assert 60 <= len(before) < 300, "the backup must fall inside the burst"
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    # Restore: a new data folder, the backup as its database, verified, then started.
    new = tmp_path / "new"
    new.mkdir()
    (new / "data").mkdir(mode=0o700)
    shutil.copy2(backup, new / "data" / "bridge.sqlite3")
    cfg = write_config(new)
    check = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "db",
                            "verify", str(new / "data" / "bridge.sqlite3")],
                           capture_output=True, text=True, timeout=60, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr
    r = start_daemon(cfg, new / "data")
    try:
        restored = _accessions(r, tmp_path)
    finally:
        assert stop_daemon(r) == 0
    assert before <= restored, sorted(before - restored)[:5]
    assert restored <= {a for _, a in acked}  # nothing that was never ACKed
    assert not [line for line in r.log if "WARNING" in line and "readable" in line]


@pytest.mark.parametrize("n", [0, 999999])
def test_the_burst_orders_are_distinct(n):
    accession, msg = _order(n)
    assert accession.encode() in msg and len(accession) <= 16
