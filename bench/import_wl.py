"""Bulk import of a ``.wl`` folder, before and after, side by side in one run.

```sh
.venv/bin/python bench/import_wl.py --items 50000
```

Writes ``--items`` worklist files (as wlmscpfs keeps them: bench/peers.py
``write_wl``, the items of bench/cfind.py) once, then imports the folder into a
fresh SQLite store per variant, in turns, with bridge/orders/bulk.py
``import_wl`` and a process pool as ``mwl-bridge import`` makes it:

- ``before``: bulk.py ``BEFORE``: batches of 2,000 items, SQLite's default page
  cache (2 MB) on the importing connection;
- ``after``: the defaults (bulk.py ``WlTuning``: batches of 10,000, a 128 MB cache);
- ``cache-only`` (``--variants``): batches of 2,000 with the 128 MB cache.

Both read two batches ahead in the pool (bulk.py ``_wl_tasks``).

Prints wall time, items/s and the CPU (user + sys, workers included) per item.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import peers as peer_servers
from bench.cfind import _init_worker, make_item
from bench.common import STATIONS

_dir: Path | None = None


def _write(task: tuple[int, int, int, int]) -> int:
    from bench import cfind

    lo, hi, n, days = task
    rng = random.Random(n * 1_000_003 + lo)
    assert _dir is not None
    for i in range(lo, hi):
        ds = make_item(i, rng, rng.choice(cfind._worker_people), days)
        peer_servers.write_wl(_dir, i, ds)
    return hi - lo


def _init(n: int, folder: Path) -> None:
    global _dir
    _init_worker(n, 1)
    _dir = folder


def write_files(folder: Path, n: int) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    days = max(30, -(-n // (len(STATIONS) * 17)))
    tasks = [(lo, min(lo + 1000, n), n, days) for lo in range(0, n, 1000)]
    t0 = time.perf_counter()
    # fork: no thread runs in this process yet.
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2, _init,
                                                   (n, folder)) as pool:
        sum(pool.imap_unordered(_write, tasks))
    return time.perf_counter() - t0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(variant: str, folder: Path, db: Path, workers: int) -> tuple[float, float, int]:
    from concurrent.futures import ProcessPoolExecutor

    from bridge.orders.bulk import BEFORE, DeadLetters, ImportReport, WlTuning, import_wl, wl_files
    from bridge.orders.settings import OrdersSettings
    from bridge.store import SqliteStore

    tuning = {"before": BEFORE, "after": WlTuning(),
              "cache-only": WlTuning(batch=BEFORE.batch)}[variant]
    store = SqliteStore(db)
    store.migrate()
    report = ImportReport(DeadLetters(db.with_suffix(".rejects")))
    paths = wl_files(folder)
    cpu0, t0 = _cpu(), time.perf_counter()
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                 ) as pool:
            import_wl(store, paths, OrdersSettings(), report, pool=pool, tuning=tuning)
    finally:
        wall = time.perf_counter() - t0
        store.close()
        report.dead_letters.close()
    if report.rejected_total:
        raise RuntimeError(f"{variant}: rejected {dict(report.rejected)}")
    return wall, _cpu() - cpu0, report.loaded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=1, help="before/after pairs")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", nargs="+", default=["before", "after"],
                    choices=["before", "after", "cache-only"])
    ap.add_argument("--dir", type=Path, default=None, help="keep the .wl files here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="import-wl-") as tmp:
        folder = args.dir or Path(tmp) / "wl"
        if not any(folder.glob("*.wl")):
            print(f"writing {args.items:,} .wl files ... {write_files(folder, args.items):.1f} s",
                  flush=True)
        print(f"load average {os.getloadavg()[0]:.1f}; {args.workers} workers")
        for r in range(args.rounds):
            for variant in args.variants:
                db = Path(tmp) / f"{variant}-{r}.db"
                wall, cpu, n = run(variant, folder, db, args.workers)
                print(f"{variant:>7}: {n:,} items in {wall:5.1f} s = {n / wall:7,.0f} items/s;"
                      f" CPU {cpu / n * 1000:.3f} ms/item; load {os.getloadavg()[0]:.1f}",
                      flush=True)


if __name__ == "__main__":
    main()
