"""The worklist SCP's old and new paths side by side, next to DCMTK wlmscpfs, in one run.

    .venv/bin/python bench/cfind_paths.py                  # 100,000 items, 40 rounds
    .venv/bin/python bench/cfind_paths.py --items 20000 --rounds 20   # quick look

One store is bulk-loaded as bench/cfind.py loads it. Three worklist SCPs serve it,
each in a process of its own (``WorklistSCP`` as the daemon builds it, with the
daemon's logging levels), differing only in the two switches of issue 16:

- ``before``: answers shaped as Datasets and encoded by pynetdicom, pynetdicom's
  polling reactors (``encoded_answers=False, waking_reactors=False``);
- ``answers``: answers from pre-encoded bytes (bridge/worklist/encoded.py);
- ``after``: that, and the waking reactors (bridge/worklist/reactor.py).

DCMTK ``wlmscpfs`` (forking, bound to loopback by the peer benchmark's
``loopback_bind.c``, compiled here with cc) answers the C-ECHOs of the same run.

Each round runs, for every server in turn, one ``echoscu`` and (not wlmscpfs) one
``findscu -W`` of the station-day query (~17 answers) and one of the same query on
an empty day: whole DCMTK processes with TCP_NODELAY=1, interleaved so that a
drift of the shared machine's speed reaches every server alike. It prints p50s,
C-FIND / C-ECHO, the cost per answer (C-FIND minus the 0-answer C-FIND, per
answer), our C-ECHO / wlmscpfs' C-ECHO, and the SCP process's CPU per request
(from /proc, summed over the run), with the targets of issue 16. Nothing here
runs in the test suite; docs/performance.md explains the figures.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfind import (
    EMPTY_DATE,
    QUERY_DATE,
    answers,
    bulk_load,
    client_args,
    query_file,
    timed,
)
from bench.common import DCMTK, cpu_seconds, dcmtk_env, free_port, median, ratio_line

AE_TITLE = "MWLBRIDGE"
VARIANTS = {"before": (False, False), "answers": (True, False), "after": (True, True)}
TARGET_FIND_ECHO = 1.3
TARGET_PER_ANSWER_MS = 0.2
TARGET_ECHO_PEER = 1.1
PEERS = Path(__file__).resolve().parents[2] / "shared" / "bench-peers"


def serve(db: Path, port: int, variant: str) -> int:
    """The SCP process: one WorklistSCP on ``db`` until SIGTERM."""
    from bridge.store import SqliteStore
    from bridge.worklist import WorklistSCP
    from bridge.worklist.settings import DicomSettings, WorklistSettings

    logging.basicConfig(level=logging.WARNING)  # pynetdicom at WARNING, as the daemon sets it
    encoded, waking = VARIANTS[variant]
    store = SqliteStore(db)
    scp = WorklistSCP(store, DicomSettings(port=port, ae_title=AE_TITLE), WorklistSettings(),
                      encoded_answers=encoded, waking_reactors=waking)
    scp.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    scp.stop()
    store.close()
    return 0


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    finds: bool = True
    echo: list[float] = field(default_factory=list)
    find: list[float] = field(default_factory=list)
    empty: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def run(self, kind: str, cmd: list[str]) -> None:
        before = cpu_seconds(self.proc.pid) if self.finds else 0.0
        ms = timed(cmd) * 1000
        if self.finds:
            self.cpu[kind] = self.cpu.get(kind, 0.0) + cpu_seconds(self.proc.pid) - before
        {"echo": self.echo, "find": self.find, "empty": self.empty}[kind].append(ms)

    def reset(self) -> None:
        for samples in (self.echo, self.find, self.empty):
            samples.clear()
        self.cpu.clear()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # wlmscpfs: its forked children too
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def start_scp(db: Path, variant: str) -> Server:
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--serve", variant, "--db", str(db),
                             "--port", str(port)], stdout=subprocess.PIPE,
                            start_new_session=True)
    assert proc.stdout is not None
    if proc.stdout.readline().strip() != b"ready":
        raise RuntimeError(f"the {variant} SCP did not start")
    return Server(variant, port, proc)


def start_wlmscpfs(root: Path) -> Server:
    folder = root / "wlmscpfs" / AE_TITLE
    folder.mkdir(parents=True)
    (folder / "lockfile").touch()
    shim = root / "loopback_bind.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(shim),
                    str(PEERS / "loopback_bind.c"), "-ldl"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([str(DCMTK / "wlmscpfs"), "--keep-char-set", "--data-files-path",
                             str(root / "wlmscpfs"), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**dcmtk_env(), "LD_PRELOAD": str(shim)},
                            start_new_session=True)
    echo = [str(DCMTK / "echoscu"), *client_args(AE_TITLE), "127.0.0.1", str(port)]
    deadline = time.monotonic() + 30
    while subprocess.run(echo, capture_output=True, env=dcmtk_env()).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("wlmscpfs did not answer a C-ECHO within 30 s")
        time.sleep(0.2)
    return Server("wlmscpfs", port, proc, finds=False)


# --- one association's phases, without a client process ---

def _read_pdu(sock: socket.socket) -> bytes:
    data = b""
    while len(data) < 6 or len(data) < 6 + struct.unpack(">I", data[2:6])[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def echoscu_request() -> bytes:
    """The A-ASSOCIATE-RQ echoscu sends, as it sends it (read by a bare listener)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        client = subprocess.Popen([str(DCMTK / "echoscu"), *client_args(AE_TITLE),
                                   "127.0.0.1", str(port)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, env=dcmtk_env())
        try:
            conn, _ = listener.accept()
            with conn:
                return _read_pdu(conn)
        finally:
            client.kill()
            client.wait()


def echo_phases(port: int, request: bytes) -> tuple[float, float, float]:
    """ms of: connect + A-ASSOCIATE, C-ECHO, A-RELEASE (context 1, as echoscu proposes)."""
    # C-ECHO-RQ, message ID 1, context 1, as pynetdicom encodes it: one P-DATA-TF.
    echo = bytes.fromhex(
        "04000000004a0000004601030000000004000000380000000000020012000000312e322e3834"
        "302e31303030382e312e3100000000010200000030000000100102000000010000000008020000"
        "000101")
    release = bytes.fromhex("05000000000400000000")
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request)
        if _read_pdu(sock)[:1] != b"\x02":
            raise RuntimeError("association not accepted")
        t1 = time.perf_counter()
        sock.sendall(echo)
        if _read_pdu(sock)[:1] != b"\x04":
            raise RuntimeError("no C-ECHO response")
        t2 = time.perf_counter()
        sock.sendall(release)
        if _read_pdu(sock)[:1] != b"\x06":
            raise RuntimeError("no A-RELEASE-RP")
        t3 = time.perf_counter()
    return (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000


def raw_rounds(servers: list[Server], rounds: int) -> None:
    request = echoscu_request()
    phases: dict[str, list[tuple[float, float, float]]] = {s.name: [] for s in servers}
    for n in range(rounds + 3):
        for s in servers:
            got = echo_phases(s.port, request)
            if n >= 3:
                phases[s.name].append(got)
    print(f"\none echo association without a client process, {rounds} rounds, p50 ms:")
    print(f"{'server':>9} {'assoc':>7} {'echo':>7} {'release':>7} {'sum':>7}")
    for name, rows in phases.items():
        cols = [median(list(c)) for c in zip(*rows, strict=True)]
        print(f"{name:>9} " + " ".join(f"{c:>7.2f}" for c in cols) + f" {sum(cols):>7.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--per-station-day", type=int, default=17)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--raw-rounds", type=int, default=200,
                    help="echo associations per server timed phase by phase from this "
                         "process (no client process start); 0: none")
    ap.add_argument("--serve", choices=tuple(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.db, args.port, args.serve)
    with tempfile.TemporaryDirectory(prefix="bench-cfind-paths-") as tmp:
        root = Path(tmp)
        db = root / "bridge.sqlite3"
        print(f"loading {args.items:,} items ...", flush=True)
        loaded = bulk_load(db, args.items, args.per_station_day, args.seed)
        expected = loaded.expected
        print(f"loaded in {loaded.seconds:.0f} s; {len(expected)} answers expected",
              flush=True)
        queries = (query_file(root, QUERY_DATE), query_file(root, EMPTY_DATE))
        servers: list[Server] = []
        try:
            servers = [start_scp(db, v) for v in VARIANTS]
            servers.append(start_wlmscpfs(root))
            ok = True
            for s in servers[:-1]:
                got = answers(s.port, AE_TITLE, queries[0], root)
                if got != expected:
                    print(f"{s.name}: WRONG ANSWERS ({len(got)}/{len(expected)})")
                    ok = False
            print(f"{args.rounds} rounds (+3 warm-up) ...", flush=True)
            for n in range(args.rounds + 3):
                for s in servers:
                    cmds = {"echo": [str(DCMTK / "echoscu"), *client_args(AE_TITLE),
                                     "127.0.0.1", str(s.port)]}
                    if s.finds:
                        for kind, query in (("find", queries[0]), ("empty", queries[1])):
                            cmds[kind] = [str(DCMTK / "findscu"), "-W", "-sr",
                                          *client_args(AE_TITLE), "127.0.0.1", str(s.port),
                                          str(query)]
                    for kind, cmd in cmds.items():
                        s.run(kind, cmd)
                    if n == 2:  # the warm-up ends
                        s.reset()
            if args.raw_rounds:
                raw_rounds(servers, args.raw_rounds)
        finally:
            for s in servers:
                s.stop()
    report(servers, len(expected), args.items, args.rounds)
    return 0 if ok else 1


def report(servers: list[Server], hits: int, items: int, rounds: int) -> None:
    peer = servers[-1]
    peer_echo = median(peer.echo)
    print(f"\n{items:,} items, {hits} answers, {rounds} rounds; p50 of whole DCMTK "
          f"processes (ms); SCP CPU per request from /proc (ms)")
    print(f"{'server':>9} {'C-ECHO':>7} {'C-FIND':>7} {'0-answer':>8} {'FIND/ECHO':>9} "
          f"{'per answer':>10} {'ECHO/wlm':>8} {'CPU echo':>8} {'CPU find':>8} "
          f"{'CPU/answer':>10}")
    for s in servers[:-1]:
        echo, find, empty = median(s.echo), median(s.find), median(s.empty)
        cpu = {k: v * 1000 / rounds for k, v in s.cpu.items()}
        print(f"{s.name:>9} {echo:>7.1f} {find:>7.1f} {empty:>8.1f} {find / echo:>9.2f} "
              f"{(find - empty) / max(1, hits):>10.2f} {echo / peer_echo:>8.2f} "
              f"{cpu['echo']:>8.1f} {cpu['find']:>8.1f} "
              f"{(cpu['find'] - cpu['empty']) / max(1, hits):>10.3f}")
    print(f"{'wlmscpfs':>9} {peer_echo:>7.1f}")
    after = servers[-2]
    echo, find, empty = median(after.echo), median(after.find), median(after.empty)
    print(ratio_line("C-FIND p50 / own C-ECHO p50", find / echo, TARGET_FIND_ECHO,
                     higher_is_better=False))
    print(ratio_line("cost per answer (ms)", (find - empty) / max(1, hits),
                     TARGET_PER_ANSWER_MS, higher_is_better=False))
    print(ratio_line("own C-ECHO p50 / wlmscpfs C-ECHO p50", echo / peer_echo,
                     TARGET_ECHO_PEER, higher_is_better=False))


if __name__ == "__main__":
    sys.exit(main())
