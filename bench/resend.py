"""What an exact resend costs, next to a new message: ORM^O01 over MLLP, each ACK awaited.

    .venv/bin/python bench/resend.py [--messages 3000] [--connections 1 8]

Per connection count, on one daemon (SQLite, synchronous=FULL, the default):

1. new      -- N distinct new orders (each a durable commit);
2. resend   -- the same N messages again, byte for byte: answered from the
               recent-ACK cache, before decoding (no store access);
3. restart  -- the daemon restarted on the same store, the same N again: the
               cache is warmed from the message log at start;
4. no cache -- restarted with orders.messages.replay_cache: 0, the same N
               again: each resend is found in the message log by the write
               job (the path for resends older than the cache).

Every resend must come back with the byte-identical original ACK, and the
message log and the worklist must not grow; otherwise the row says
MISMATCH and the exit code is 1. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import median, pct, start_daemon, write_config
from bench.ingest import build_messages, send_all

WARMUP = 100


@dataclass
class Row:
    connections: int
    phase: str
    sent: int
    wall_s: float
    latencies_s: list[float]
    daemon_cpu_s: float
    ok: bool

    @property
    def rate(self) -> float:
        return self.sent / self.wall_s


def counts(path: Path) -> tuple[int, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        steps = conn.execute("SELECT COUNT(*) FROM procedure_step").fetchone()[0]
        logged = conn.execute("SELECT COUNT(*) FROM message_log").fetchone()[0]
    finally:
        conn.close()
    return int(steps), int(logged)


def timed(daemon, messages: list[bytes], connections: int
          ) -> tuple[float, list[float], list[bytes], float]:
    cpu0 = daemon.cpu()
    wall, latencies, acks = asyncio.run(send_all(daemon.mllp_port, messages, connections))
    return wall, latencies, acks, daemon.cpu() - cpu0


def run(root: Path, connections: int, count: int, seed: int) -> list[Row]:
    folder = root / f"conn{connections}"
    folder.mkdir()
    data = folder / "data"
    config = write_config(folder, data)
    (folder / "no-cache").mkdir()
    no_cache = write_config(folder / "no-cache", data,
                            "orders:\n  messages:\n    replay_cache: 0\n")
    rows: list[Row] = []
    messages = build_messages(connections * 1_000_000, count, seed)
    daemon = start_daemon(config, data)
    try:
        asyncio.run(send_all(daemon.mllp_port, build_messages(10_000_000, WARMUP, seed),
                             connections))
        wall, lat, originals, cpu = timed(daemon, messages, connections)
        steps, logged = counts(daemon.sqlite_path)
        ok = all(b"MSA|AA|" in a for a in originals)
        rows.append(Row(connections, "new", count, wall, lat, cpu, ok))
        wall, lat, acks, cpu = timed(daemon, messages, connections)
        same = acks == originals and counts(daemon.sqlite_path) == (steps, logged)
        rows.append(Row(connections, "resend (cache)", count, wall, lat, cpu, same))
    finally:
        daemon.stop()
    for label, cfg in (("resend after restart", config), ("resend (no cache)", no_cache)):
        daemon = start_daemon(cfg, data)
        try:
            wall, lat, acks, cpu = timed(daemon, messages, connections)
            same = acks == originals and counts(daemon.sqlite_path) == (steps, logged)
            rows.append(Row(connections, label, count, wall, lat, cpu, same))
        finally:
            daemon.stop()
    return rows


def pieces(messages: list[bytes]) -> list[tuple[str, float]]:
    from bridge.orders.replay import RecentAcks, content_hash, replay_key

    cache = RecentAcks(len(messages))
    keys = [replay_key(m) for m in messages]
    for k, m in zip(keys, messages, strict=True):
        assert k is not None
        cache.put(k, content_hash(m), b"ACK")

    def per(fn, items) -> float:
        t0 = time.perf_counter()
        for item in items:
            fn(item)
        return (time.perf_counter() - t0) / len(items) * 1e6

    return [("content hash (normalised, MSH-7 left out)", per(content_hash, messages)),
            ("replay key (MSH-3/4/10 from the raw MSH)", per(replay_key, messages)),
            ("cache lookup", per(cache.get, keys))]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(f"resend benchmark: {args.messages} ORM^O01 messages per phase, each ACK awaited; "
          "SQLite synchronous=FULL; MLLP on 127.0.0.1 with TCP_NODELAY")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-resend-") as tmp:
        for c in args.connections:
            rows.extend(run(Path(tmp), c, args.messages, args.seed))
    print()
    print(f"{'conns':>5}  {'phase':<22} {'msgs/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'daemon CPU ms/msg':>18}  {'vs new':>7}")
    ok = True
    for r in rows:
        new = next(x for x in rows if x.connections == r.connections and x.phase == "new")
        lat = [x * 1000 for x in r.latencies_s]
        ok &= r.ok
        print(f"{r.connections:>5}  {r.phase:<22} {r.rate:>8.0f} {median(lat):>7.2f} "
              f"{pct(lat, 99):>7.2f} {r.daemon_cpu_s / r.sent * 1000:>18.3f}  "
              f"{r.rate / new.rate:>6.2f}x{'' if r.ok else '  MISMATCH'}")
    print("\nin-process cost per message of the resend check:")
    for label, us in pieces(build_messages(0, 2000, args.seed)):
        print(f"  {us:>7.2f} us  {label}")
    print("\ncheck: original ACKs byte for byte, nothing stored twice:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
