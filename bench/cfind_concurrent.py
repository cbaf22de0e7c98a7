"""C-FIND under load: 20 consoles polling at once, our daemon next to DCMTK wlmscpfs.

    .venv/bin/python bench/cfind_concurrent.py [--items 100000] [--peer-items 10000]
        [--consoles 20 50] [--polls 15] [--peers-dir ../shared/bench-peers]

Both servers are measured in the same run, one after the other, with the same
clients: each console is a thread that runs whole DCMTK ``findscu -W``
processes back to back (start, association, C-FIND, release, exit, as a
console polls), every console asking for its own station's day (20
stations CT01..XA04, station + date + modality, 13 return keys: the peer
benchmark's query). Each console first polls once unmeasured, then
``--polls`` times measured; p50/p99 are over all measured polls of all
consoles. TCP_NODELAY=1 for the clients; the daemon sets it on its own
sockets, wlmscpfs follows the same variable. Our daemon is measured at each
``--consoles`` count in turn (default 20, then 50: issue 16's targets at 50, no
rejected association and p99 < 500 ms); wlmscpfs at the first count, and the
polls/s ratio (issue 16: >= 15x) is taken at that count. A poll whose findscu
reports a rejected association counts as rejected; any other non-zero exit or
error line as failed.

- our daemon: ``--items`` items bulk-loaded into a fresh SQLite store
  (bench/cfind.py's generator: a station-day holds ~17 items however long
  the history), started as ``python -m bridge serve``;
- wlmscpfs 3.6.7 (forks a process per association, re-reads every ``.wl``
  file per query): ``--peer-items`` files from the peer benchmark's
  ``gen_worklist.py``, run with ``--keep-char-set``, bound to loopback by the
  peer benchmark's ``loopback_bind.c`` shim (compiled here with cc).

Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmread

from bench.cfind import bulk_load, station_queries
from bench.common import (
    DCMTK,
    REPO,
    dcmtk_env,
    free_port,
    median,
    pct,
    ratio_line,
    start_daemon,
    write_config,
)

PEER_AE = "MWLSCP"
TARGET_POLLS_RATIO = 15.0  # polls/s, ours at --items / wlmscpfs at --peer-items (issue 16)
TARGET_P99_MS = 500.0  # p99 at 50 consoles, 100k items (issue 16)


@dataclass
class Load:
    name: str
    items: int
    latencies_ms: list[float]
    wall_s: float
    failures: int
    answers_ct01: int
    expected_ct01: int
    consoles: int = 0
    rejected: int = 0

    @property
    def polls_per_s(self) -> float:
        return len(self.latencies_ms) / self.wall_s

    def line(self) -> str:
        n = len(self.latencies_ms)
        return (f"{self.name:<22} {self.items:>8,} {self.consoles:>8} {n:>6} "
                f"{median(self.latencies_ms):>8.0f} "
                f"{pct(self.latencies_ms, 99):>8.0f} {max(self.latencies_ms):>8.0f} "
                f"{self.polls_per_s:>9.1f} {self.rejected:>5} {self.failures:>5} "
                f"{self.answers_ct01:>4}/{self.expected_ct01:<4}")


def findscu(port: int, aec: str, query: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [str(DCMTK / "findscu"), "-W", "-aet", "CONSOLE", "-aec", aec, "-to", "120",
            "-ta", "120", "-td", "600", *extra, "127.0.0.1", str(port), str(query)]


def count_answers(port: int, aec: str, query: Path, folder: Path) -> int:
    out = folder / f"answers-{aec}-{time.monotonic_ns()}"
    out.mkdir()
    subprocess.run(findscu(port, aec, query, ("-X", "-od", str(out))), check=True,
                   capture_output=True, env=dcmtk_env())
    answers = sorted(out.glob("rsp*.dcm"))
    for path in answers:
        dcmread(path)  # each answer must be a readable dataset
    return len(answers)


def poll(name: str, items: int, port: int, aec: str, queries: list[Path], consoles: int,
         polls: int, expected_ct01: int, folder: Path) -> Load:
    answers = count_answers(port, aec, queries[0], folder)
    latencies: list[float] = []
    failures = rejected = 0
    lock = threading.Lock()
    start = threading.Barrier(consoles + 1)

    def console(k: int) -> None:
        nonlocal failures, rejected
        cmd = findscu(port, aec, queries[k % len(queries)])
        mine: list[float] = []
        bad = refused = 0
        start.wait()
        for i in range(polls + 1):
            t0 = time.perf_counter()
            done = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, env=dcmtk_env())
            elapsed = (time.perf_counter() - t0) * 1000
            err = done.stderr.decode(errors="replace")
            if "Rejected" in err:
                refused += 1
            elif done.returncode != 0 or "E: " in err:
                bad += 1
            elif i > 0:  # the first poll of each console warms up
                mine.append(elapsed)
        with lock:
            latencies.extend(mine)
            failures += bad
            rejected += refused

    threads = [threading.Thread(target=console, args=(k,)) for k in range(consoles)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    # Throughput counts the measured polls over the whole wall time, warm-ups included
    # in the time: a slight underestimate, the same for both servers.
    return Load(name, items, latencies, wall, failures, answers, expected_ct01, consoles,
                rejected)


def run_ours(root: Path, n: int, queries: list[Path], consoles: list[int], polls: int
             ) -> list[Load]:
    """Our daemon on one loaded store, at each console count in turn."""
    data = root / "ours" / "data"
    data.mkdir(parents=True)
    print(f"[ours] loading {n:,} items ...", flush=True)
    loaded = bulk_load(data / "bridge.sqlite3", n, 17, 1)
    print(f"[ours] loaded in {loaded.seconds:.0f} s", flush=True)
    daemon = start_daemon(write_config(root / "ours", data), data)
    try:
        out = []
        for count in consoles:
            print(f"[ours] {count} consoles polling ...", flush=True)
            out.append(poll("mwl-bridge (SQLite)", n, daemon.dicom_port, daemon.ae_title,
                            queries, count, polls, len(loaded.expected), root))
        return out
    finally:
        daemon.stop()


def run_wlmscpfs(root: Path, n: int, peers: Path, consoles: int, polls: int) -> Load:
    data = root / "peer"
    print(f"[wlmscpfs] generating {n:,} .wl files ...", flush=True)
    subprocess.run([sys.executable, str(peers / "gen_worklist.py"), str(n), "--out", str(data),
                    "--called-aet", PEER_AE, "--force"], check=True, capture_output=True)
    manifest = json.loads((data / "manifest.json").read_text())
    expected = int(manifest["standard_query"]["expected_hits"])
    shim = root / "loopback_bind.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                    str(peers / "loopback_bind.c"), "-ldl"], check=True, capture_output=True)
    port = free_port()
    log = (root / "wlmscpfs.log").open("wb")
    proc = subprocess.Popen(
        [str(DCMTK / "wlmscpfs"), "--keep-char-set", "--data-files-path",
         str(data / "wlmscpfs"), str(port)],
        stdout=log, stderr=subprocess.STDOUT, env={**dcmtk_env(), "LD_PRELOAD": str(shim)},
        start_new_session=True)
    try:
        _wait_port(port, proc)
        queries = station_queries(root / "peer-queries")
        print(f"[wlmscpfs] {consoles} consoles polling ...", flush=True)
        return poll("DCMTK wlmscpfs 3.6.7", n, port, PEER_AE, queries, consoles, polls,
                    expected, root)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the forked children too
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("wlmscpfs exited at start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("wlmscpfs did not listen within 30 s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--peer-items", type=int, default=10_000)
    ap.add_argument("--consoles", type=int, nargs="+", default=[20, 50],
                    help="console counts for our daemon, in turn; wlmscpfs runs the first")
    ap.add_argument("--polls", type=int, default=15, help="measured polls per console")
    ap.add_argument("--peers-dir", type=Path, default=REPO.parent / "shared" / "bench-peers")
    ap.add_argument("--skip-peer", action="store_true", help="measure our daemon only")
    args = ap.parse_args(argv)
    peer_ok = (args.peers_dir / "gen_worklist.py").is_file() and shutil.which("cc")
    if not args.skip_peer and not peer_ok:
        print(f"peer files not found in {args.peers_dir} (or no cc): use --peers-dir or "
              "--skip-peer", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-cfind-concurrent-") as tmp:
        root = Path(tmp)
        queries = station_queries(root)
        results.extend(run_ours(root, args.items, queries, args.consoles, args.polls))
        if not args.skip_peer:
            results.append(run_wlmscpfs(root, args.peer_items, args.peers_dir,
                                        args.consoles[0], args.polls))
    print()
    print("consoles each poll their own station's day (~17 answers, 13 return keys),"
          f" whole findscu processes back to back; TCP_NODELAY=1; {args.polls} measured polls "
          "each")
    print(f"{'server':<22} {'items':>8} {'consoles':>8} {'polls':>6} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'max ms':>8} {'polls/s':>9} {'rej.':>5} {'fail':>5} "
          f"{'CT01 answers':>12}")
    for r in results:
        print(r.line())
    first = args.consoles[0]
    ours_first = next(r for r in results if r.consoles == first and r.name.startswith("mwl"))
    peer = next((r for r in results if r.name.startswith("DCMTK")), None)
    if peer is not None:
        print(ratio_line(f"polls/s at {first} consoles, ours ({args.items:,} items) / "
                         f"wlmscpfs ({args.peer_items:,})",
                         ours_first.polls_per_s / peer.polls_per_s, TARGET_POLLS_RATIO,
                         higher_is_better=True))
    for r in results:
        if r.name.startswith("mwl") and r.consoles >= 50:
            print(f"rejected associations at {r.consoles} consoles: {r.rejected} (target 0) "
                  f"{'PASS' if r.rejected == 0 else 'MISS'}")
            print(ratio_line(f"p99 ms at {r.consoles} consoles",
                             pct(r.latencies_ms, 99), TARGET_P99_MS, higher_is_better=False))
    return 0 if all(r.failures == 0 and r.rejected == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
