"""What both benchmarks share: a daemon as a subprocess, realistic people, statistics.

The daemon is started the way an operator starts it (``python -m bridge
--config FILE serve``) so every figure includes the real process, its logging
and its threads. The start-up logic is a copy of tests/e2e/conftest.py on
purpose: benchmarks must not import from tests.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DCMTK = Path("/usr/bin")  # never .venv/bin: pynetdicom installs look-alike scripts there
READY = re.compile(r"ready: MLLP on [\d.]+:(\d+), DICOM AE (\S+) on [\d.]+:(\d+)")

# Twenty stations, each bound to one modality: (AE title, modality, station name, location).
STATIONS: tuple[tuple[str, str, str, str], ...] = tuple(
    (f"{mod}{k:02d}", mod, f"{room} {k}", f"RAD-{mod}-{k}")
    for mod, room in (("CT", "CT Room"), ("MR", "MRI Suite"), ("US", "Ultrasound"),
                      ("CR", "X-Ray Room"), ("XA", "Angio Lab"))
    for k in range(1, 5))

PROCEDURES: dict[str, tuple[tuple[str, str], ...]] = {
    "CT": (("CTHEAD", "CT HEAD WITHOUT CONTRAST"), ("CTCHEST", "CT CHEST WITH CONTRAST"),
           ("CTABDPEL", "CT ABDOMEN AND PELVIS WITH CONTRAST"),
           ("CTSPINEC", "CT CERVICAL SPINE WITHOUT CONTRAST")),
    "MR": (("MRBRAIN", "MR BRAIN WITH AND WITHOUT CONTRAST"),
           ("MRKNEEL", "MR KNEE LEFT WITHOUT CONTRAST"), ("MRLSPINE", "MR LUMBAR SPINE")),
    "US": (("USABD", "US ABDOMEN COMPLETE"), ("USTHYR", "US THYROID"), ("USRENAL", "US RENAL")),
    "CR": (("XRCHEST2", "XR CHEST PA AND LATERAL"), ("XRHAND3", "XR HAND 3 VIEWS"),
           ("XRKNEE2", "XR KNEE 2 VIEWS")),
    "XA": (("XACOR", "CORONARY ANGIOGRAPHY"), ("XACEREB", "CEREBRAL ANGIOGRAPHY")),
}

_FAMILY = ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
           "WILSON", "ANDERSON", "TAYLOR", "THOMAS", "MOORE", "MARTIN", "JACKSON", "WHITE",
           "HARRIS", "CLARK", "LEWIS", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT")
_GIVEN = {"M": ("JAMES", "JOHN", "ROBERT", "MICHAEL", "DAVID", "RICHARD", "JOSEPH", "PAUL"),
          "F": ("MARY", "PATRICIA", "JENNIFER", "LINDA", "SUSAN", "SARAH", "KAREN", "ANNA")}
# Latin with diacritics, Greek, Cyrillic, CJK: the names that break naive encoders.
_UNICODE_NAMES = (("Müller", "Jürgen", "M"), ("Groß", "Käthe", "F"), ("Øvergård", "Åse", "F"),
                  ("Gonçalves", "João", "M"), ("Núñez", "Begoña", "F"),
                  ("Dvořák", "Anežka", "F"), ("Özdemir", "Şükrü", "M"),
                  ("Παπαδόπουλος", "Γιώργος", "M"), ("Иванова", "Светлана", "F"),
                  ("山田", "太郎", "M"), ("佐藤", "花子", "F"), ("Nguyễn", "Thị Hương", "F"))
PHYSICIANS = (("HOUSE", "GREGORY"), ("GREY", "MEREDITH"), ("SHEPHERD", "DEREK"),
              ("ROSS", "DOUG"), ("CARTER", "JOHN"), ("BAILEY", "MIRANDA"), ("CHEN", "CRISTINA"))
UNICODE_FRACTION = 0.15


@dataclass(frozen=True, slots=True)
class Person:
    id: str
    family: str
    given: str
    sex: str
    birth: str  # YYYYMMDD

    @property
    def unicode(self) -> bool:
        return not (self.family + self.given).isascii()

    @property
    def dicom_name(self) -> str:
        return f"{self.family}^{self.given}"


def make_people(rng: random.Random, count: int) -> list[Person]:
    people = []
    for k in range(count):
        if rng.random() < UNICODE_FRACTION:
            family, given, sex = rng.choice(_UNICODE_NAMES)
        else:
            sex = rng.choice("MF")
            family, given = rng.choice(_FAMILY), rng.choice(_GIVEN[sex])
        birth = f"{rng.randint(1930, 2020)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
        people.append(Person(f"PID{k + 100000:07d}", family, given, sex, birth))
    return people


# --- statistics ---

def pct(samples: list[float], p: float) -> float:
    """p-th percentile, linear interpolation between closest ranks."""
    s = sorted(samples)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def cpu_seconds(pid: int) -> float:
    """utime+stime of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio_line(label: str, value: float, target: float, *, higher_is_better: bool) -> str:
    ok = value >= target if higher_is_better else value <= target
    rel = value / target
    sign = ">=" if higher_is_better else "<="
    return (f"{label}: {value:,.2f} (target {sign} {target:,.2f}; ratio {rel:.2f}) "
            f"{'PASS' if ok else 'MISS'}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    # Debian's DCMTK turns Nagle off only when asked; without it every
    # exchange stalls ~40 ms on delayed ACKs and the figures measure the kernel.
    return {**os.environ, "TCP_NODELAY": "1"}


# --- PostgreSQL ---

# The local server (trust authentication); each benchmark run makes databases of its own.
PG_SERVER = "host=127.0.0.1 port=5432 user=postgres"


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one measurement (dropped afterwards): its DSN."""
    import psycopg

    name = f"{prefix}_{os.getpid()}_{random.randrange(1 << 30):x}"
    with psycopg.connect(f"{PG_SERVER} dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{PG_SERVER} dbname={name}"
    finally:
        with psycopg.connect(f"{PG_SERVER} dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def vacuum_analyze(dsn: str) -> None:
    """What autovacuum does on its own some time after a bulk load; done at once here."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def store_yaml(dsn: str | None, extra: str = "") -> str:
    """The config's store section: PostgreSQL at ``dsn``, or the default SQLite file."""
    if dsn is None:
        return ""
    return f"store:\n  backend: postgresql\n  postgresql_dsn: \"{dsn}\"\n{extra}"


def rss_mb(pid: int) -> tuple[float, float]:
    """(resident set now, its peak), in MB, from /proc/PID/status."""
    fields = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


# --- the daemon ---

def write_config(folder: Path, data_dir: Path, extra: str = "") -> Path:
    cfg = folder / "mwl-bridge.yaml"
    cfg.write_text(
        f"data_dir: {data_dir}\n"
        "mllp:\n  host: 127.0.0.1\n  port: 0\n"
        "dicom:\n  host: 127.0.0.1\n  port: 0\n  ae_title: MWLBRIDGE\n"
        f"mapping:\n  paths: [{REPO / 'mappings'}]\n  default_station_aet: UNASSIGNED\n"
        + extra, encoding="utf-8")
    return cfg


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    config: Path
    data_dir: Path
    mllp_port: int = 0
    dicom_port: int = 0
    ae_title: str = ""
    log: list[str] = field(default_factory=list)

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "bridge.sqlite3"

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> tuple[float, float]:
        """(RSS now, peak RSS) in MB."""
        return rss_mb(self.proc.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_daemon(config: Path, data_dir: Path, *, profile_to: Path | None = None,
                 timeout: float = 120) -> Daemon:
    """Start ``python -m bridge serve`` and wait for its ready line.

    With ``profile_to`` the daemon runs under cProfile (main thread only: the
    asyncio loop; the commit thread and pynetdicom's threads are not seen).
    """
    prefix = ["-m", "cProfile", "-o", str(profile_to)] if profile_to else []
    proc = subprocess.Popen(
        [sys.executable, *prefix, "-m", "bridge", "--config", str(config), "serve"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    d = Daemon(proc=proc, config=config, data_dir=data_dir)
    ready = threading.Event()

    def drain() -> None:
        # Keep reading even after "ready": a full pipe would block the daemon's logging.
        assert proc.stderr is not None
        for line in proc.stderr:
            if len(d.log) < 200 or "ready:" in line or "ERROR" in line:
                d.log.append(line.rstrip("\n"))
            m = READY.search(line)
            if m:
                d.mllp_port, d.ae_title, d.dicom_port = int(m[1]), m[2], int(m[3])
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise RuntimeError("daemon did not start:\n" + "\n".join(d.log[-40:]))
    return d


def print_profile(path: Path, top: int = 20) -> None:
    import pstats

    print(f"\n--- cProfile of the daemon's main thread, top {top} by own time ({path}) ---")
    pstats.Stats(str(path), stream=sys.stdout).sort_stats("tottime").print_stats(top)
