"""The daemon under attack: tests/e2e's subprocess daemon, with hostile-input limits
set low enough that a test reaches them in seconds, and the checks every attack
ends with (the daemon still serves HL7 and DICOM, its memory stayed bounded)."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from itertools import count
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    DCMTK,
    FIXTURES,
    RunningDaemon,
    dcmtk_env,
    start_daemon,
    stop_daemon,
    write_config,
)

# What the daemon's resident memory may grow by over the whole module, whatever
# the attacks sent (each streams tens of MB; before issue 10 the daemon kept it).
RSS_GROWTH_BOUND_MB = 64
ACK_WITHIN_S = 1.0

DICOM_LIMITS = """\
  network_timeout_s: 2
  max_message_bytes: 1048576
  allowed_hosts: [127.0.0.1/32]
"""

_orders = count(1)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def new_order() -> bytes:
    """The IHE CT order with fresh IDs: a new order, not a resend or a duplicate."""
    n = next(_orders)
    text = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(b"\n", b"\r")
    for old, new in ((b"MSG-20261128-0001", b"MSG-HOSTILE-%d" % n),
                     (b"PLC100001", b"PLH%06d" % n), (b"FIL100001", b"FIH%06d" % n),
                     (b"ACC20261128001", b"ACH%011d" % n), (b"RP20261128001", b"RPH%010d" % n),
                     (b"SPS20261128001", b"SPH%010d" % n),
                     (b"1764318615.101", b"1764318615.101.%d" % n)):
        text = text.replace(old, new)
    return text


def mllp_ack(port: int, message: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send one framed message; the ACK and how long it took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"\x0b" + message + b"\x1c\r")
        ack = b""
        while not ack.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            ack += chunk
    return ack, time.monotonic() - started


def echoscu_ok(d: RunningDaemon) -> bool:
    done = subprocess.run([str(DCMTK / "echoscu"), "-aec", d.ae_title, "127.0.0.1",
                           str(d.dicom_port)], capture_output=True, timeout=30,
                          env=dcmtk_env(), check=False)
    return done.returncode == 0


class Target:
    """The running daemon and its baseline memory."""

    def __init__(self, daemon: RunningDaemon) -> None:
        self.daemon = daemon
        self.baseline_mb = rss_mb(daemon.proc.pid)
        self.peak_mb = self.baseline_mb

    def still_serving(self) -> None:
        """After an attack: a new order gets AA within 1 s, echoscu succeeds, memory
        stayed within the bound."""
        d = self.daemon
        assert d.alive(), "\n".join(d.log[-30:])
        ack, took = mllp_ack(d.mllp_port, new_order())
        assert b"MSA|AA|" in ack, ack
        assert took < ACK_WITHIN_S, f"the ACK took {took:.2f} s"
        assert echoscu_ok(d)
        self.check_memory()

    def check_memory(self) -> None:
        now = rss_mb(self.daemon.proc.pid)
        self.peak_mb = max(self.peak_mb, now)
        assert now - self.baseline_mb < RSS_GROWTH_BOUND_MB, (
            f"RSS {now:.0f} MB, baseline {self.baseline_mb:.0f} MB")

    def lines_since(self, mark: int) -> list[str]:
        return self.daemon.log[mark:]

    def wait_for(self, mark: int, text: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        """The log lines since ``mark`` holding ``text``, once ``count`` of them are
        there or ``timeout`` has passed (stderr is read by another thread)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [line for line in self.daemon.log[mark:] if text in line]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    cfg = write_config(tmp)
    cfg.write_text(cfg.read_text().replace("  ae_title: MWLBRIDGE\n",
                                           "  ae_title: MWLBRIDGE\n" + DICOM_LIMITS),
                   encoding="utf-8")
    d = start_daemon(cfg, tmp / "data")
    t = Target(d)
    t.still_serving()  # warm: the first order and association load what they need
    t.baseline_mb = rss_mb(d.proc.pid)
    yield t
    print(f"\ndaemon RSS: baseline {t.baseline_mb:.1f} MB, peak {t.peak_mb:.1f} MB, "
          f"end {rss_mb(d.proc.pid):.1f} MB")
    assert stop_daemon(d) == 0, "\n".join(d.log[-30:])
