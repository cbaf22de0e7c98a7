"""HL7 ingest throughput: ORM^O01 over MLLP into a running daemon, each ACK awaited.

    .venv/bin/python bench/ingest.py [--messages 3000] [--connections 1 8]
                                     [--workers 0 auto] [--profile]

For each worker setting (orders.workers) and connection count a fresh daemon
(SQLite, synchronous=FULL, the default) is started on free loopback ports in a
temp dir. In the same run, ../shared/bench-peers/mllp_limit.py (when it is
there) measures the machine's limits with the same connection counts: an MLLP
server that only ACKs, and one that commits each frame to SQLite first; our
figures are printed as ratios of those. Every connection
sends one message, waits for its ACK, then sends the next, as a RIS does.
Afterwards the run checks that every ACK was AA and that the store holds
exactly one procedure step and one logged message per message sent. Then the
pieces of the ingest path are timed in-process, per message, to show what
limits the end-to-end figure. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repo root must be importable for "bench" and "bridge".
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    PHYSICIANS,
    PROCEDURES,
    REPO,
    STATIONS,
    Person,
    cpu_seconds,
    make_people,
    median,
    pct,
    print_profile,
    ratio_line,
    start_daemon,
    write_config,
)

TARGET_1 = 800.0  # msg/s on one connection (issue 16)
TARGET_8 = 1600.0  # msg/s over eight connections: half the SQLite-commit limit
LIMIT_SCRIPT = REPO.parent / "shared" / "bench-peers" / "mllp_limit.py"
WARMUP = 100  # messages per phase before the clock starts (imports, caches, first pages)
UID_ROOT = "1.2.826.0.1.3680043.8.498"
FIRST_DAY = datetime(2025, 6, 1)


REASONS = ("Suspected fracture", "Follow-up", "Pain", "Staging", "Trauma", "Pre-op")


def hl7_name(p: Person) -> str:
    return f"{p.family}^{p.given}"


def seg(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields by HL7 position (MSH-1 is the separator)."""
    first = 2 if name == "MSH" else 1
    fields = {k: v for k, v in fields.items() if v}
    values = [fields.get(k, "") for k in range(first, max(fields) + 1)]
    return name + "|" + "|".join(values)


def orm_message(i: int, rng: random.Random, person: Person) -> bytes:
    """One new order (ORC-1 NW) for one requested procedure, v2.3.1 with the IHE ZDS.

    ``i`` makes every identifier unique: control ID, placer/filler numbers,
    accession, requested procedure, SPS ID and study UID.
    """
    station, modality, station_name, _ = rng.choice(STATIONS)
    code, text = rng.choice(PROCEDURES[modality])
    day = FIRST_DAY.toordinal() + rng.randrange(30)
    slot = rng.randrange(7 * 4, 19 * 4)
    start = f"{datetime.fromordinal(day):%Y%m%d}{slot // 4:02d}{slot % 4 * 15:02d}00"
    ref_family, ref_given = rng.choice(PHYSICIANS)
    charset = "UNICODE UTF-8" if person.unicode else ""
    now = f"{FIRST_DAY:%Y%m%d}{i % 86400 // 3600:02d}{i % 3600 // 60:02d}{i % 60:02d}"
    placer, filler = f"PLC{i:09d}", f"FIL{i:09d}"
    doctor = f"R{i % 97:04d}^{ref_family}^{ref_given}^^^DR"
    tech_family, tech_given = rng.choice(PHYSICIANS)
    timing = f"1^once^^{start}^^{rng.choice('RRRRRRSA')}"
    segments = [
        seg("MSH", {2: "^~\\&", 3: "RIS", 4: "GENERAL HOSPITAL", 5: "MWLBRIDGE",
                    6: "RADIOLOGY", 7: now, 9: "ORM^O01", 10: f"MSG{i:09d}", 11: "P",
                    12: "2.3.1", 15: "AL", 16: "NE", 18: charset}),
        seg("PID", {1: "1", 3: f"{person.id}^^^HOSP^MR", 5: hl7_name(person),
                    7: person.birth, 8: person.sex,
                    11: "1 Main St^^Springfield^IL^62701^USA", 13: "(217)555-0100",
                    18: f"ACCT{i:09d}"}),
        seg("PV1", {1: "1", 2: "O", 3: "RAD^WAIT^1", 8: doctor, 19: f"V{i:09d}"}),
        seg("ORC", {1: "NW", 2: f"{placer}^RIS", 3: f"{filler}^RIS", 5: "SC", 7: timing,
                    9: now, 12: doctor, 17: "RAD^General Radiology",
                    18: f"{station}^{station_name}"}),
        seg("OBR", {1: "1", 2: f"{placer}^RIS", 3: f"{filler}^RIS",
                    4: f"{code}^{text}^LOCAL^{code}-P^{text} protocol^LOCAL",
                    13: rng.choice(("", "", "", "Contrast allergy", "Pacemaker")),
                    16: doctor, 18: f"A{i:09d}", 19: f"RP{i:09d}", 20: f"SPS{i:09d}",
                    24: modality, 27: timing, 31: f"^{rng.choice(REASONS)}",
                    34: f"{i % 89}&{tech_family}&{tech_given}"}),
        seg("ZDS", {1: f"{UID_ROOT}.7.{i}^RIS^Application^DICOM"}),
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


def build_messages(first: int, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed * 1_000_003 + first)
    people = make_people(rng, max(1, count * 6 // 10))
    return [orm_message(first + k, rng, rng.choice(people)) for k in range(count)]


# --- end to end ---

@dataclass
class Phase:
    workers: str
    connections: int
    sent: int
    wall_s: float
    latencies_s: list[float]
    codes: dict[str, int]
    daemon_cpu_s: float
    own_cpu_s: float  # the daemon process alone: event loop, store writer (one GIL)
    client_cpu_s: float
    stored_steps: int
    logged: dict[str, int]

    @property
    def rate(self) -> float:
        return self.sent / self.wall_s


async def send_all(port: int, messages: Sequence[bytes], connections: int
                   ) -> tuple[float, list[float], list[bytes]]:
    """Send every message once over ``connections`` connections, one in flight on each."""
    from bridge.hl7 import MllpClient

    clients = [await MllpClient.connect("127.0.0.1", port) for _ in range(connections)]
    latencies: list[float] = []
    acks: list[bytes] = [b""] * len(messages)
    todo = iter(range(len(messages)))  # shared: each worker takes the next unsent message

    async def worker(client: Any) -> None:
        for i in todo:
            t0 = time.perf_counter()
            acks[i] = await client.send(messages[i])
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        wall = time.perf_counter() - t0
        for c in clients:
            await c.close()
    return wall, latencies, acks


def store_counts(path: Path) -> tuple[int, dict[str, int]]:
    # Read-only and while the daemon runs, so the WAL index is there to read through.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        steps = conn.execute("SELECT COUNT(*) FROM procedure_step").fetchone()[0]
        logged = dict(conn.execute(
            "SELECT ack_code, COUNT(*) FROM message_log GROUP BY ack_code").fetchall())
    finally:
        conn.close()
    return int(steps), logged


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its descendants (the daemon, its forkserver and
    decide workers), read from /proc."""
    total = cpu_seconds(pid)
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = children.read_text().split()
        except OSError:
            continue
        total += sum(tree_cpu(int(k)) for k in kids)
    return total


def run_limit(connections: int, count: int, sqlite: bool) -> float | None:
    """mllp_limit.py's msg/s with ``connections`` connections, or None without it."""
    if not LIMIT_SCRIPT.exists():
        return None
    out = subprocess.run([sys.executable, str(LIMIT_SCRIPT), "--conns", str(connections),
                          "--n", str(count), *(["--sqlite"] if sqlite else [])],
                         capture_output=True, text=True, timeout=300, check=False)
    m = re.search(r"(\d+) msg/s", out.stdout)
    return float(m[1]) if m else None


def run_phase(root: Path, workers: str, connections: int, count: int, seed: int, *,
              profile: bool) -> Phase:
    from bridge.hl7 import ack_code_of

    folder = root / f"w{workers}-conn{connections}"
    folder.mkdir()
    data = folder / "data"
    prof = folder / "daemon.prof" if profile else None
    daemon = start_daemon(write_config(folder, data, f"orders:\n  workers: {workers}\n"),
                          data, profile_to=prof)
    try:
        warm = build_messages(10_000_000, WARMUP, seed)
        asyncio.run(send_all(daemon.mllp_port, warm, connections))
        messages = build_messages(connections * 1_000_000, count, seed)
        pid = daemon.proc.pid
        cpu0, own0, client0 = tree_cpu(pid), cpu_seconds(pid), time.process_time()
        wall, latencies, acks = asyncio.run(send_all(daemon.mllp_port, messages, connections))
        cpu1, own1, client1 = tree_cpu(pid), cpu_seconds(pid), time.process_time()
        codes: dict[str, int] = {}
        for ack in acks:
            code = ack_code_of(ack) or "none"
            codes[code] = codes.get(code, 0) + 1
        steps, logged = store_counts(daemon.sqlite_path)
    finally:
        rc = daemon.stop()
    if rc != 0:
        print(f"warning: daemon exit code {rc}; last log lines:", *daemon.log[-10:], sep="\n  ")
    if prof is not None and prof.exists():
        print_profile(prof)
    return Phase(workers, connections, count, wall, latencies, codes, cpu1 - cpu0,
                 own1 - own0, client1 - client0, steps - WARMUP,
                 {k: v - (WARMUP if k == "AA" else 0) for k, v in logged.items()})


# --- the pieces, in-process ---

def per_message_us(fn: Callable[[Any], object], items: Sequence[Any]) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1e6


def measure_pieces(messages: list[bytes], root: Path) -> list[tuple[str, float]]:
    from bridge.hl7 import build_ack, decode_frame, parse_message, read_header
    from bridge.hl7.settings import MllpSettings
    from bridge.mapping import load_mappings
    from bridge.store import InboundMessage, SqliteStore
    from bridge.store.items import dumps_item, index_values

    aliases = MllpSettings().charset_aliases
    texts = [decode_frame(m, default="ascii", aliases=aliases).text for m in messages]
    parsed = [parse_message(t) for t in texts]
    mappings = load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")
    results = [mappings.map(m) for m in parsed]
    steps = [s for r in results for s in r.items]
    now = datetime.now()
    rows: list[tuple[str, float]] = [
        ("decode frame (MSH-18 charset)",
         per_message_us(lambda m: decode_frame(m, default="ascii", aliases=aliases), messages)),
        ("tokenize (bridge.hl7.parse_message)", per_message_us(parse_message, texts)),
        ("read header + build ACK",
         per_message_us(lambda t: build_ack(read_header(t), "AA", control_id="1", now=now),
                        texts)),
        ("mapping (MappingSet.map)", per_message_us(mappings.map, parsed)),
        ("item to JSON + index values (per step)",
         per_message_us(lambda s: (dumps_item(s), index_values(s)), steps)),
    ]

    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message as hl7apy_parse

    sample = [t.replace("\n", "\r") for t in texts[:300]]
    rows.append(("hl7apy parse_message (tolerant, find_groups=False), for comparison",
                 per_message_us(lambda t: hl7apy_parse(
                     t, validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=False),
                     sample)))

    store = SqliteStore(root / "pieces" / "bridge.sqlite3")
    store.migrate()

    def job_for(k: int) -> Callable[[Any], object]:
        record = InboundMessage(
            received_at=datetime.now(UTC), peer="127.0.0.1:1", sending_application="RIS",
            sending_facility="HOSP", control_id=f"X{k}", message_type="ORM^O01",
            raw=messages[k], ack_code="AA", ack=b"MSH|^~\\&|\rMSA|AA|X\r")

        def job(tx: Any) -> object:
            mid = tx.record_message(record)
            return [tx.upsert_step(s, mid) for s in results[k].items]
        return job

    n_single = min(300, len(messages) // 2)
    t0 = time.perf_counter()
    for k in range(n_single):
        store.write([job_for(k)])
    single = (time.perf_counter() - t0) / n_single * 1e6
    rows.append(("store: record + upsert, one commit (fsync) per message", single))
    batch = 8
    rest = range(n_single, len(messages))
    t0 = time.perf_counter()
    for lo in range(rest.start, rest.stop, batch):
        store.write([job_for(k) for k in range(lo, min(lo + batch, rest.stop))])
    rows.append((f"store: record + upsert, commits of {batch} messages",
                 (time.perf_counter() - t0) / max(1, len(rest)) * 1e6))
    store.close()
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000, help="messages per phase")
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8],
                    help="concurrent MLLP connections, one phase each (default: 1 8)")
    ap.add_argument("--workers", nargs="+", default=["0", "auto"],
                    help="orders.workers settings, one daemon each (default: 0 auto)")
    ap.add_argument("--no-limits", action="store_true", help="skip mllp_limit.py")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="run the daemon under cProfile and print its hottest functions")
    ap.add_argument("--skip-pieces", action="store_true", help="end-to-end figures only")
    args = ap.parse_args(argv)

    sample = build_messages(0, 200, args.seed)
    avg = sum(map(len, sample)) / len(sample)
    print(f"ingest benchmark: {args.messages} distinct ORM^O01 v2.3.1 messages per phase "
          f"(MSH PID PV1 ORC OBR ZDS, {avg:.0f} bytes on average, ~15 % non-ASCII names "
          "in UTF-8), each ACK awaited before the next message on its connection; "
          f"{WARMUP} warm-up messages per phase not timed; SQLite synchronous=FULL, "
          "MLLP on 127.0.0.1 (TCP_NODELAY set by client and server)")
    phases: list[Phase] = []
    limits: dict[tuple[int, bool], float | None] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        for c in args.connections:
            for w in args.workers:
                phases.append(run_phase(root, w, c, args.messages, args.seed,
                                        profile=args.profile))
            if not args.no_limits:
                for sqlite in (False, True):
                    limits[c, sqlite] = run_limit(c, args.messages, sqlite)
        print()
        print(f"{'workers':>7} {'conns':>5} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'daemon CPU':>11} {'of it, own':>11} {'client CPU':>11} {'ACKs':>10} "
              f"{'stored':>7} {'logged':>7}")
        print(f"{'':>7} {'':>5} {'':>8} {'':>7} {'':>7} {'ms/msg':>11} {'ms/msg':>11} "
              f"{'ms/msg':>11}")
        ok = True
        for p in phases:
            lat = [x * 1000 for x in p.latencies_s]
            acks = ",".join(f"{k}:{v}" for k, v in sorted(p.codes.items()))
            logged = p.logged.get("AA", 0)
            good = p.codes == {"AA": p.sent} and p.stored_steps == p.sent and logged == p.sent
            ok &= good
            print(f"{p.workers:>7} {p.connections:>5} {p.rate:>8.0f} {median(lat):>7.2f} "
                  f"{pct(lat, 99):>7.2f} {p.daemon_cpu_s / p.sent * 1000:>11.3f} "
                  f"{p.own_cpu_s / p.sent * 1000:>11.3f} "
                  f"{p.client_cpu_s / p.sent * 1000:>11.3f}"
                  f" {acks:>10} {p.stored_steps:>7} {logged:>7}{'' if good else '  MISMATCH'}")
        if limits:
            print("\nmllp_limit.py, same run (msg/s): "
                  + "; ".join(f"{c} conn(s): ACK only {_num(limits[c, False])}, SQLite commit "
                              f"{_num(limits[c, True])}" for c in args.connections))
            print(f"{'workers':>7} {'conns':>5} {'msgs/s':>8} {'/ ACK-only':>11} "
                  f"{'/ SQLite':>9}")
            for p in phases:
                print(f"{p.workers:>7} {p.connections:>5} {p.rate:>8.0f} "
                      f"{_ratio(p.rate, limits.get((p.connections, False))):>11} "
                      f"{_ratio(p.rate, limits.get((p.connections, True))):>9}")
        print()
        by = {(p.workers, p.connections): p for p in phases}
        for c in args.connections:
            if ("0", c) in by and ("auto", c) in by:
                print(f"workers auto / workers 0 over {c} connection(s): "
                      f"{by['auto', c].rate / by['0', c].rate:.2f}")
        for p in phases:
            target = TARGET_1 if p.connections == 1 else TARGET_8 if p.connections == 8 else None
            if target is not None:
                print(ratio_line(f"msgs/s over {p.connections} connection(s), workers "
                                 f"{p.workers}", p.rate, target, higher_is_better=True))
        print("check: every ACK AA and stored = logged = sent:", "yes" if ok else "NO")

        if not args.skip_pieces:
            print("\nin-process cost of the pieces, per message (2000 messages; hl7apy on 300):")
            for label, us in measure_pieces(build_messages(20_000_000, 2000, args.seed), root):
                print(f"  {us:>9.1f} us  {label}")
    return 0 if ok else 1


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _ratio(value: float, limit: float | None) -> str:
    return "-" if not limit else f"{value / limit:.2f}"


if __name__ == "__main__":
    sys.exit(main())
