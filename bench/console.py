"""The operator console at scale (issue 12): the worklist search with filters at 1M
items (target: p50 < 300 ms server time) and /metrics (target: p50 < 20 ms).

Not a test: run it by hand (``python bench/console.py``; ``--items 200000`` for a
quicker run). The store is bulk-loaded with bench/cfind.py's realistic items, then
the daemon runs with the console on a loopback port (anonymous loopback admin),
and each request is timed from the client over loopback (an upper bound of the
server time: the daemon's access log line has the server's own milliseconds).

Searched, as an operator would: one station and day; a modality, status and a
week's date range; a Patient ID; an accession number; the same station and day
as the HTML page (the POST form, rendered); and a deep page (offset 1,000).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.cfind import QUERY_DATE, QUERY_MODALITY, QUERY_STATION, bulk_load
from bench.common import (
    free_port,
    median,
    pct,
    ratio_line,
    start_daemon,
    write_config,
)

TARGET_PAGE_MS = 300.0
TARGET_METRICS_MS = 20.0


def timed(fn: Callable[[], httpx.Response], samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        t0 = time.perf_counter()
        res = fn()
        out.append((time.perf_counter() - t0) * 1000)
        if res.status_code != 200:
            raise RuntimeError(f"{res.request.method} {res.request.url.path}: "
                               f"{res.status_code} {res.text[:200]}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--per-station-day", type=int, default=40)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        root = Path(tmp)
        data = root / "data"
        data.mkdir()
        print(f"loading {args.items:,} items ...", flush=True)
        loaded = bulk_load(data / "bridge.sqlite3", args.items, args.per_station_day,
                           args.seed)
        print(f"loaded {loaded.items:,} items over {loaded.days} days in "
              f"{loaded.seconds:.0f} s ({loaded.items / loaded.seconds:,.0f}/s)", flush=True)
        port = free_port()
        cfg = write_config(root, data, f"admin:\n  enabled: true\n  port: {port}\n"
                                       "  allow_anonymous_loopback: true\n"
                                       "  access_log: false\n")
        d = start_daemon(cfg, data)
        try:
            base = f"http://127.0.0.1:{port}"
            c = httpx.Client(base_url=base, timeout=60)
            some = c.post("/api/worklist/search", json={"station": QUERY_STATION,
                                                        "date": QUERY_DATE}).json()
            patient = some["items"][0]["patient_id"] if some["items"] else "nobody"
            accession = some["items"][0]["accession"] if some["items"] else "nothing"
            week_end = str(int(QUERY_DATE) + 6)
            searches = {
                "station + day": {"station": QUERY_STATION, "date_from": QUERY_DATE,
                                  "date_to": QUERY_DATE},
                "modality + status + week": {"modality": QUERY_MODALITY,
                                             "status": "SCHEDULED",
                                             "date_from": QUERY_DATE, "date_to": week_end},
                "patient id": {"patient_id": patient},
                "accession": {"accession": accession},
                "station, page at offset 1000": {"station": QUERY_STATION,
                                                 "offset": 1000},
            }
            figures: dict[str, list[float]] = {}
            for label, body in searches.items():
                figures[f"API {label}"] = timed(
                    lambda body=body: c.post("/api/worklist/search", json=body),
                    args.samples)
            # The HTML page: the anonymous admin's session cookie and CSRF token first.
            page = c.get("/worklist")
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
            form = {"station": QUERY_STATION, "date_from": QUERY_DATE, "date_to": QUERY_DATE,
                    "csrf_token": csrf[1] if csrf else ""}
            figures["page station + day (HTML)"] = timed(
                lambda: c.post("/worklist", data=form), args.samples)
            figures["/metrics"] = timed(lambda: c.get("/metrics"), args.samples)
            total = some["total"]
        finally:
            d.stop()

    print(f"\n{args.items:,} items; station {QUERY_STATION} on {QUERY_DATE}: {total} items; "
          f"{args.samples} samples each, ms from the client over loopback")
    print(f"{'request':36} {'p50':>8} {'p95':>8} {'max':>8}")
    for label, samples in figures.items():
        print(f"{label:36} {median(samples):8.1f} {pct(samples, 95):8.1f} "
              f"{max(samples):8.1f}")
    pages = [median(v) for k, v in figures.items() if k != "/metrics"]
    print()
    print(ratio_line("worklist search/page p50, slowest filter (ms)", max(pages),
                     TARGET_PAGE_MS, higher_is_better=False))
    print(ratio_line("/metrics p50 (ms)", median(figures["/metrics"]), TARGET_METRICS_MS,
                     higher_is_better=False))
    if args.items < 1_000_000:
        print(f"(at {args.items:,} items, not the 1M of the target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
