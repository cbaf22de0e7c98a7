"""Start-up failures end with exit status 2 and one line that names the problem and
the setting to change: no traceback (port conflicts, a database that cannot be
reached or used, and AE/host mistakes are the commonest deployment errors)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from .conftest import REPO, write_config


def _serve(cfg: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "serve"],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**os.environ, **(env or {})})


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("cannot start")]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _taken() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_an_mllp_port_in_use_names_the_listener_and_the_setting(tmp_path):
    with _taken() as held:
        port = held.getsockname()[1]
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("mllp:\n  host: 127.0.0.1\n  port: 0",
                                               f"mllp:\n  host: 127.0.0.1\n  port: {port}"))
        line = _one_line(_serve(cfg))
    assert f"MLLP listener cannot listen on 127.0.0.1:{port}" in line
    assert "change mllp.port (or mllp.host)" in line


def test_a_dicom_port_in_use_names_the_ae_and_the_setting(tmp_path):
    with _taken() as held:
        port = held.getsockname()[1]
        cfg = write_config(tmp_path)
        cfg.write_text(cfg.read_text().replace("dicom:\n  host: 127.0.0.1\n  port: 0",
                                               f"dicom:\n  host: 127.0.0.1\n  port: {port}"))
        line = _one_line(_serve(cfg))
    assert f"DICOM SCP (AE MWLBRIDGE) cannot listen on 127.0.0.1:{port}" in line
    assert "change dicom.port (or dicom.host)" in line


def test_an_unreachable_postgresql_is_one_line(tmp_path):
    with _taken() as held:  # a port that is not PostgreSQL: bound, never answers in kind
        port = held.getsockname()[1]
    cfg = write_config(tmp_path, "store:\n  backend: postgresql\n"
                                 f"  postgresql_dsn: host=127.0.0.1 port={port} "
                                 "dbname=none connect_timeout=5\n")
    line = _one_line(_serve(cfg))
    assert "cannot connect to PostgreSQL" in line


def test_postgresql_without_psycopg_says_what_to_install(tmp_path):
    # Failure injection: a psycopg that cannot be imported, first on the path.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "psycopg.py").write_text("raise ImportError('psycopg is not installed')\n")
    cfg = write_config(tmp_path, "store:\n  backend: postgresql\n"
                                 "  postgresql_dsn: host=127.0.0.1 dbname=test\n")
    line = _one_line(_serve(cfg, {"PYTHONPATH": str(shim)}))
    assert "psycopg is not installed" in line
    assert "pip install 'mwl-bridge[postgresql]'" in line
