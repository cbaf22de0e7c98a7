"""The cost of SQLCipher encryption at rest (issue 19): the same daemon on a plain and on
an encrypted SQLite store, in one run.

    .venv/bin/python bench/encryption.py [--items 20000] [--messages 2000] [--samples 20]

For each store (``plain``, ``sqlcipher``) a fresh folder is loaded with ``--items``
worklist items as bench/cfind.py makes them (the encrypted one is then converted with
``db encrypt``'s code, bridge/store/cipher.py) and a daemon starts on it (the key from
an environment variable, as a site would). Both run at once and every sample alternates
between them, so that other load on the machine weighs on both alike:

- **C-FIND**: DCMTK ``findscu -W`` as whole processes, bench/cfind.py's query (station
  CT01, one day, 13 return keys): p50 and p95 over ``--samples``; ``echoscu`` p50 beside;
- **ingest**: ``--messages`` ORM^O01 (bench/ingest.py's) per store, in 4 alternating
  rounds on 1 and on 8 connections, each ACK awaited: the median round's messages/s.

Every figure is on the shared machine (clients and daemon on the same cores).
Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cfind import bulk_load, client_args, query_file, series, timed
from bench.common import DCMTK, Daemon, median, pct, start_daemon, write_config
from bench.ingest import build_messages

QUERY_DATE = "20250615"
KEY_VAR = "MWL_BENCH_DB_KEY"


async def ingest(port: int, messages: Sequence[bytes], connections: int) -> float:
    from bridge.hl7 import MllpClient, ack_code_of

    clients = [await MllpClient.connect("127.0.0.1", port) for _ in range(connections)]
    todo = iter(messages)

    async def worker(client: MllpClient) -> None:
        for m in todo:
            code = ack_code_of(await client.send(m))
            if code != "AA":
                raise RuntimeError(f"ACK {code}")

    t0 = time.perf_counter()
    try:
        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        wall = time.perf_counter() - t0
        for c in clients:
            await c.close()
    return len(messages) / wall


def prepare(name: str, root: Path, args: argparse.Namespace) -> Daemon:
    from bridge.store.cipher import convert

    folder = root / name
    data = folder / "data"
    data.mkdir(parents=True)
    db = data / "bridge.sqlite3"
    loaded = bulk_load(db, args.items, 17, 1)
    extra = ""
    note = ""
    if name == "sqlcipher":
        t0 = time.perf_counter()
        convert(db, None, os.environ[KEY_VAR])
        note = f", encrypted in {time.perf_counter() - t0:.1f} s"
        extra = f"store:\n  sqlcipher_key_env: {KEY_VAR}\n"
    print(f"[{name}] {args.items:,} items loaded in {loaded.seconds:.1f} s{note}", flush=True)
    return start_daemon(write_config(folder, data, extra), data)


def measure(daemons: dict[str, Daemon], args: argparse.Namespace, query: Path
            ) -> dict[str, dict[str, float]]:
    """Both daemons run at once and every sample alternates between them, so that a
    machine busy with something else slows both alike."""
    def cmds(d: Daemon) -> tuple[list[str], list[str]]:
        return ([str(DCMTK / "findscu"), "-W", "-sr", *client_args("MWLBRIDGE"), "127.0.0.1",
                 str(d.dicom_port), str(query)],
                [str(DCMTK / "echoscu"), *client_args("MWLBRIDGE"), "127.0.0.1",
                 str(d.dicom_port)])

    names = list(daemons)
    finds: dict[str, list[float]] = {n: [] for n in names}
    echoes: dict[str, list[float]] = {n: [] for n in names}
    for n in names:  # warm-up
        find_cmd, echo_cmd = cmds(daemons[n])
        series(lambda c=find_cmd: timed(c), 0)
        asyncio.run(ingest(daemons[n].mllp_port, build_messages(40_000_000, 100, 1), 1))
    for i in range(args.samples):
        for n in (names if i % 2 == 0 else names[::-1]):
            find_cmd, echo_cmd = cmds(daemons[n])
            finds[n].append(timed(find_cmd) * 1000)
            echoes[n].append(timed(echo_cmd) * 1000)
    rates: dict[str, dict[int, list[float]]] = {n: {1: [], 8: []} for n in names}
    rounds = 4
    first = 50_000_000
    for r in range(rounds):
        for conns in (1, 8):
            for n in (names if r % 2 == 0 else names[::-1]):
                rates[n][conns].append(asyncio.run(ingest(
                    daemons[n].mllp_port, build_messages(first, args.messages // rounds, 1),
                    conns)))
                first += args.messages
    out = {}
    for n in names:
        out[n] = {"find_p50": median(finds[n]), "find_p95": pct(finds[n], 95),
                  "echo_p50": median(echoes[n]),
                  "ingest_1": median(rates[n][1]), "ingest_8": median(rates[n][8])}
        print(f"[{n}] C-FIND p50 {out[n]['find_p50']:.1f} ms (p95 {out[n]['find_p95']:.1f}), "
              f"C-ECHO p50 {out[n]['echo_p50']:.1f} ms; ingest {out[n]['ingest_1']:,.0f} msg/s "
              f"on 1 connection, {out[n]['ingest_8']:,.0f} on 8", flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--samples", type=int, default=20)
    args = p.parse_args(argv)
    os.environ.setdefault(KEY_VAR, "bench-" + os.urandom(8).hex())
    with tempfile.TemporaryDirectory(prefix="mwl-bench-enc-") as tmp:
        root = Path(tmp)
        query = query_file(root, QUERY_DATE)
        daemons: dict[str, Daemon] = {}
        try:
            for name in ("plain", "sqlcipher"):
                daemons[name] = prepare(name, root, args)
            results = measure(daemons, args, query)
        finally:
            for d in daemons.values():
                d.stop()
    plain, enc = results["plain"], results["sqlcipher"]
    print(f"\n{'':<22}{'plain':>10}{'sqlcipher':>12}{'cost':>9}")
    for key, label, unit, higher in (
            ("ingest_1", "ingest, 1 connection", "msg/s", True),
            ("ingest_8", "ingest, 8 connections", "msg/s", True),
            ("find_p50", "C-FIND p50", "ms", False),
            ("find_p95", "C-FIND p95", "ms", False),
            ("echo_p50", "C-ECHO p50", "ms", False)):
        cost = (1 - enc[key] / plain[key]) if higher else (enc[key] / plain[key] - 1)
        print(f"{label:<22}{plain[key]:>10,.1f}{enc[key]:>12,.1f}{cost:>+8.0%}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
