"""Several instances (issue 11): ingest, C-FIND and the failover gap, for 1 and 2
instances on PostgreSQL next to 1 on SQLite.

    .venv/bin/python bench/ha.py [--items 100000] [--messages 3000] [--samples 20]
                                 [--before-s 3] [--after-s 10]

For each setup (``sqlite-1``, ``pg-1``, ``pg-2``) a fresh store (a new PostgreSQL
database on 127.0.0.1:5432, dropped at the end) is loaded with ``--items`` worklist
items as bench/cfind.py makes them, and the daemon(s) start on fixed loopback ports.

- **ingest**: ``--messages`` ORM^O01 (bench/ingest.py's) over 8 connections, each ACK
  awaited; with two instances 4 connections go to each.
- **C-FIND**: DCMTK ``findscu -W`` / ``echoscu`` as whole processes against the first
  instance, bench/cfind.py's query (station CT01, one day, 13 return keys): p50 of
  each and their ratio.
- **failover**: 8 senders keep sending (on a lost connection each sends the same
  message again to the next address, as a RIS with a failover list does) and one
  modality keeps asking C-FIND (trying the addresses in turn); after ``--before-s``
  the first instance is SIGKILLed. With one instance it is restarted at once (what a
  supervisor does: that restart is the gap); with two the survivor serves. Printed:
  the longest time one sender waited for an ACK across the kill (and across all
  senders, the longest time without any ACK), and the longest time without a C-FIND
  answer.

Heartbeat 1 s, leader lease 3 s (the failover of clients needs neither). Every figure
is on the shared machine, clients and daemons and PostgreSQL on the same cores.
Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

# Run as a script from anywhere: the repo root must be importable for "bench" and "bridge".
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfind import bulk_load, client_args, query_file, series, timed
from bench.common import (
    DCMTK,
    Daemon,
    dcmtk_env,
    free_port,
    fresh_database,
    median,
    start_daemon,
    store_yaml,
    vacuum_analyze,
    write_config,
)
from bench.ingest import build_messages

SETUPS = (("sqlite-1", "sqlite", 1), ("pg-1", "postgresql", 1), ("pg-2", "postgresql", 2))
CONNECTIONS = 8
QUERY_DATE = "20250615"


@dataclass
class Result:
    name: str
    items: int
    ingest_rate: float = 0.0
    ingest_codes: dict[str, int] = field(default_factory=dict)
    echo_p50: float = 0.0
    find_p50: float = 0.0
    sender_gap_s: float = 0.0  # the longest one sender waited for an ACK across the kill
    ack_gap_s: float = 0.0  # the longest time without any ACK, after the kill
    find_gap_s: float = 0.0  # the longest time without a C-FIND answer, after the kill
    failover_acks: int = 0
    failover_errors: int = 0

    @property
    def ratio(self) -> float:
        return self.find_p50 / self.echo_p50 if self.echo_p50 else float("nan")


@dataclass
class Instance:
    name: str
    config: Path
    data: Path
    mllp: int
    dicom: int
    daemon: Daemon | None = None

    def start(self) -> None:
        self.daemon = start_daemon(self.config, self.data)

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait()

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()


def make_instances(root: Path, count: int, dsn: str | None) -> list[Instance]:
    out = []
    data = root / "data"  # one SQLite file for the single SQLite instance
    for k in range(count):
        folder = root / f"i{k + 1}"
        folder.mkdir()
        mllp, dicom = free_port(), free_port()
        store = store_yaml(dsn, f"  instance_id: bench-{k + 1}\n  heartbeat_s: 1\n"
                                "  leader_lease_s: 3\n") if dsn else ""
        cfg = write_config(folder, data, store)
        text = cfg.read_text().replace("  port: 0\n", f"  port: {mllp}\n", 1)
        text = text.replace("  port: 0\n", f"  port: {dicom}\n", 1)
        cfg.write_text(text)
        out.append(Instance(f"i{k + 1}", cfg, data, mllp, dicom))
    return out


# --- ingest ---

async def ingest(ports: Sequence[int], messages: Sequence[bytes]) -> tuple[float, dict[str, int]]:
    from bridge.hl7 import MllpClient, ack_code_of

    clients = [await MllpClient.connect("127.0.0.1", ports[k % len(ports)])
               for k in range(CONNECTIONS)]
    todo = iter(messages)
    codes: dict[str, int] = {}

    async def worker(client: MllpClient) -> None:
        for m in todo:
            code = ack_code_of(await client.send(m)) or "none"
            codes[code] = codes.get(code, 0) + 1

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        wall = time.perf_counter() - t0
        for c in clients:
            await c.close()
    return len(messages) / wall, codes


# --- failover ---

async def senders(ports: Sequence[int], messages: Sequence[bytes], stop_at: float,
                  acks: list[list[float]], errors: list[int]) -> None:
    """8 RIS connections until ``stop_at``; each ACK's time, per connection."""
    from bridge.hl7 import MllpClient

    todo = iter(messages)

    async def worker(k: int) -> None:
        target = k % len(ports)
        client: MllpClient | None = None
        for m in todo:
            if time.monotonic() >= stop_at:
                break
            while time.monotonic() < stop_at + 30:
                try:
                    if client is None:
                        client = await MllpClient.connect("127.0.0.1", ports[target],
                                                          timeout=2)
                    await client.send(m, timeout=10)
                    acks[k].append(time.monotonic())
                    break
                except (OSError, ConnectionError, TimeoutError, asyncio.IncompleteReadError):
                    errors[0] += 1
                    if client is not None:
                        try:
                            await client.close()
                        except Exception:  # noqa: BLE001 - the connection is gone anyway
                            pass
                        client = None
                    target = (target + 1) % len(ports)  # the next address on the list
                    await asyncio.sleep(0.05)
        if client is not None:
            await client.close()

    await asyncio.gather(*(worker(k) for k in range(CONNECTIONS)))


def finder(instances: Sequence[Instance], query: Path, stop: threading.Event,
           answers: list[float]) -> None:
    """A modality asking C-FIND in a loop, trying each address in turn until one answers."""
    k = 0
    while not stop.is_set():
        inst = instances[k % len(instances)]
        res = subprocess.run([str(DCMTK / "findscu"), "-v", "-W", "-sr",
                              *client_args("MWLBRIDGE"), "-to", "2", "127.0.0.1",
                              str(inst.dicom), str(query)],
                             capture_output=True, text=True, env=dcmtk_env())
        if "Received Final Find Response (Success)" in res.stdout + res.stderr:
            answers.append(time.monotonic())
        else:
            k += 1
            time.sleep(0.02)


def longest_gap(times: Sequence[float], since: float, until: float) -> float:
    """The longest stretch in [since, until] without one of ``times``."""
    marks = [since, *sorted(t for t in times if since < t < until), until]
    return max(b - a for a, b in pairwise(marks))


def failover(instances: list[Instance], query: Path, messages: Sequence[bytes],
             before_s: float, after_s: float, result: Result) -> None:
    acks: list[list[float]] = [[] for _ in range(CONNECTIONS)]
    errors = [0]
    answers: list[float] = []
    stop = threading.Event()
    start = time.monotonic()
    kill_at, stop_at = start + before_s, start + before_s + after_s
    ports = [i.mllp for i in instances]
    probe = threading.Thread(target=finder, args=(instances, query, stop, answers),
                             daemon=True)
    probe.start()

    def killer() -> None:
        time.sleep(max(0.0, kill_at - time.monotonic()))
        instances[0].kill()
        if len(instances) == 1:  # no second instance: a supervisor restarts it at once
            instances[0].start()

    kill_thread = threading.Thread(target=killer, daemon=True)
    kill_thread.start()
    asyncio.run(senders(ports, messages, stop_at, acks, errors))
    kill_thread.join()
    stop.set()
    probe.join()
    # A sender's wait across the kill: from its last ACK before the kill to its next one.
    result.sender_gap_s = max(
        (longest_gap(a, kill_at - 0.5, stop_at) for a in acks if a), default=float("nan"))
    result.ack_gap_s = longest_gap([t for a in acks for t in a], kill_at, stop_at)
    result.find_gap_s = longest_gap(answers, kill_at, stop_at)
    result.failover_acks = sum(len(a) for a in acks)
    result.failover_errors = errors[0]


# --- one setup ---

def run_setup(name: str, backend: str, count: int, args: argparse.Namespace, root: Path,
              queries: Path) -> Result:
    folder = root / name
    folder.mkdir()
    result = Result(name, args.items)
    (folder / "data").mkdir()
    database: AbstractContextManager[str | None] = (
        fresh_database("bench_ha") if backend == "postgresql" else nullcontext(None))
    with database as dsn:
        print(f"[{name}] loading {args.items:,} items ...", flush=True)
        loaded = bulk_load(folder / "data" / "bridge.sqlite3", args.items, 17, 1, dsn)
        print(f"[{name}] loaded in {loaded.seconds:.1f} s ({args.items / loaded.seconds:,.0f} "
              "items/s)", flush=True)
        if dsn is not None:
            vacuum_analyze(dsn)
        instances = make_instances(folder, count, dsn)
        try:
            for inst in instances:
                inst.start()
            first = instances[0]
            echo_cmd = [str(DCMTK / "echoscu"), *client_args("MWLBRIDGE"), "127.0.0.1",
                        str(first.dicom)]
            find_cmd = [str(DCMTK / "findscu"), "-W", "-sr", *client_args("MWLBRIDGE"),
                        "127.0.0.1", str(first.dicom), str(queries)]
            result.echo_p50 = median(series(lambda: timed(echo_cmd), args.samples))
            result.find_p50 = median(series(lambda: timed(find_cmd), args.samples))
            warm = build_messages(40_000_000, 100, 1)
            asyncio.run(ingest([i.mllp for i in instances], warm))
            messages = build_messages(50_000_000, args.messages, 1)
            result.ingest_rate, result.ingest_codes = asyncio.run(
                ingest([i.mllp for i in instances], messages))
            print(f"[{name}] ingest {result.ingest_rate:,.0f} msg/s {result.ingest_codes}; "
                  f"C-ECHO p50 {result.echo_p50:.1f} ms, C-FIND p50 {result.find_p50:.1f} ms",
                  flush=True)
            more = build_messages(60_000_000, args.failover_messages, 1)
            failover(instances, queries, more, args.before_s, args.after_s, result)
            print(f"[{name}] failover: sender gap {result.sender_gap_s:.2f} s, no ACK "
                  f"{result.ack_gap_s:.2f} s, no C-FIND answer {result.find_gap_s:.2f} s "
                  f"({result.failover_acks:,} ACKs, {result.failover_errors} reconnects)",
                  flush=True)
        finally:
            for inst in instances:
                inst.stop()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--messages", type=int, default=3000, help="ingest messages per setup")
    ap.add_argument("--failover-messages", type=int, default=30_000,
                    help="messages available to the failover phase (it stops on time)")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--before-s", type=float, default=3.0)
    ap.add_argument("--after-s", type=float, default=10.0)
    ap.add_argument("--setups", nargs="+", default=[s[0] for s in SETUPS],
                    choices=[s[0] for s in SETUPS])
    args = ap.parse_args(argv)
    print(f"HA benchmark: {args.items:,} items, {args.messages:,} ingest messages over "
          f"{CONNECTIONS} connections, {args.samples} samples per C-ECHO/C-FIND series, "
          f"kill after {args.before_s:g} s, watched {args.after_s:g} s; pid {os.getpid()}")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-ha-") as tmp:
        root = Path(tmp)
        query = query_file(root, QUERY_DATE)
        for name, backend, count in SETUPS:
            if name in args.setups:
                results.append(run_setup(name, backend, count, args, root, query))
    base = {r.name: r for r in results}.get("sqlite-1")
    print()
    print(f"{'setup':<9} {'ingest':>9} {'vs':>6} {'C-ECHO':>7} {'C-FIND':>7} {'FIND/':>6} "
          f"{'sender':>7} {'no ACK':>7} {'no FIND':>8}")
    print(f"{'':<9} {'msg/s':>9} {'sqlite':>6} {'p50 ms':>7} {'p50 ms':>7} {'ECHO':>6} "
          f"{'gap s':>7} {'gap s':>7} {'gap s':>8}")
    for r in results:
        vs = r.ingest_rate / base.ingest_rate if base else float("nan")
        print(f"{r.name:<9} {r.ingest_rate:>9,.0f} {vs:>6.2f} {r.echo_p50:>7.1f} "
              f"{r.find_p50:>7.1f} {r.ratio:>6.2f} {r.sender_gap_s:>7.2f} {r.ack_gap_s:>7.2f} "
              f"{r.find_gap_s:>8.2f}")
    print("gap: longest stretch after SIGKILL of the first instance (one instance: it is "
          "restarted at once; two: the survivor serves)")
    bad = [r.name for r in results if set(r.ingest_codes) != {"AA"}]
    if bad:
        print("NOT ALL AA in:", ", ".join(bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
