"""The daemon as a user runs it: a subprocess, real MLLP, real DCMTK tools."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from tests.findstatus import SUCCESS, check_status

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "hl7"
DCMTK = Path("/usr/bin")
READY = re.compile(r"ready: MLLP on [\d.]+:(\d+), DICOM AE (\S+) on [\d.]+:(\d+)")


def dcmtk_env() -> dict[str, str]:
    # Debian's DCMTK turns Nagle off only when asked; without it every
    # exchange stalls ~40 ms on delayed ACKs.
    return {**os.environ, "TCP_NODELAY": "1"}


@dataclass
class RunningDaemon:
    proc: subprocess.Popen[str]
    config: Path
    data_dir: Path
    mllp_port: int = 0
    dicom_port: int = 0
    ae_title: str = ""
    log: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bridge", "--config", str(self.config), *args],
            capture_output=True, text=True, timeout=timeout, cwd=REPO)

    def send(self, *files: Path) -> subprocess.CompletedProcess[str]:
        return self.cli("send", "--port", str(self.mllp_port), *map(str, files))

    def findscu(self, tmp: Path, *keys: str, extra: tuple[str, ...] = (),
                status: str = SUCCESS) -> list[Dataset]:
        """The answers of one ``findscu -W``; fails unless its final status is ``status``.

        findscu exits 0 even when the query failed, so an empty answer is told apart from
        a failure only by the final status it prints with ``-v``.
        """
        out = tmp / f"rsp-{time.monotonic_ns()}"
        out.mkdir()
        args = [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aec", self.ae_title,
                *extra]
        # findscu lets a later -k override an earlier one: a bare return key
        # must not wipe out a matching value given for the same attribute.
        merged: dict[str, str | None] = {}
        for k in keys:
            path, _, value = k.partition("=")
            if "=" in k or merged.get(path) is None:
                merged[path] = value if "=" in k else merged.get(path)
        for path, value in merged.items():
            args += ["-k", path if value is None else f"{path}={value}"]
        args += ["127.0.0.1", str(self.dicom_port)]
        # Bytes: -v echoes the query, whose values need not be UTF-8.
        res = subprocess.run(args, capture_output=True, timeout=60, env=dcmtk_env())
        log = (res.stdout + res.stderr).decode("utf-8", "replace")
        assert res.returncode == 0, log
        check_status(log, status)
        return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]

    def echoscu(self) -> int:
        return subprocess.run(
            [str(DCMTK / "echoscu"), "-aec", self.ae_title, "127.0.0.1", str(self.dicom_port)],
            capture_output=True, timeout=30, env=dcmtk_env()).returncode

    def alive(self) -> bool:
        return self.proc.poll() is None


def write_config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "mwl-bridge.yaml"
    cfg.write_text(
        f"data_dir: {tmp / 'data'}\n"
        "mllp:\n  host: 127.0.0.1\n  port: 0\n"
        "dicom:\n  host: 127.0.0.1\n  port: 0\n  ae_title: MWLBRIDGE\n"
        f"mapping:\n  paths: [{REPO / 'mappings'}]\n  default_station_aet: UNASSIGNED\n"
        + extra, encoding="utf-8")
    return cfg


def start_daemon(config: Path, data_dir: Path) -> RunningDaemon:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    d = RunningDaemon(proc=proc, config=config, data_dir=data_dir)
    ready = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            d.log.append(line.rstrip("\n"))
            m = READY.search(line)
            if m:
                d.mllp_port, d.ae_title, d.dicom_port = int(m[1]), m[2], int(m[3])
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 60
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("daemon did not start:\n" + "\n".join(d.log))
    return d


def stop_daemon(d: RunningDaemon) -> int:
    if d.proc.poll() is None:
        d.proc.send_signal(signal.SIGTERM)
        try:
            d.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            d.proc.kill()
            d.proc.wait()
    return d.proc.returncode


@pytest.fixture
def daemon(tmp_path) -> Iterator[RunningDaemon]:
    d = start_daemon(write_config(tmp_path), tmp_path / "data")
    yield d
    code = stop_daemon(d)
    assert code == 0, "daemon did not stop cleanly:\n" + "\n".join(d.log[-30:])
