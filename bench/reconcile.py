"""One PACS reconciliation cycle at scale: 100k open worklist items of which 1,000
are due for a look at the PACS (docs/completion.md).

    .venv/bin/python bench/reconcile.py                  # 100,000 items, 1,000 due
    .venv/bin/python bench/reconcile.py --items 20000 --due 200

The store (SQLite, made by the store's own API before the daemon starts) holds
``--items`` open items: ``--due`` scheduled in the watch window and never asked,
``--checked`` in the window but asked recently (not due), the rest scheduled
tomorrow. The PACS is a pynetdicom Study Root C-FIND SCP in this process (so its
CPU is not the daemon's) holding the due items' studies; it counts associations
and C-FIND requests. It listens only once the daemon is ready: the daemon's
first cycle fails at once on the refused association, and its next cycle
(``interval_s`` later) is the one measured, from the PACS opening to the
daemon's log line of the cycle. Printed: the due query's time on the store, the
C-FIND requests and associations the cycle made, its wall time, and the daemon's
CPU seconds over it (/proc). The figure that matters: requests follow ``--due``,
not ``--items``.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from bench.common import free_port, start_daemon, write_config
from bridge.reconcile.query import no_delay
from bridge.store import SqliteStore, reconcile_tx
from bridge.store.sqltx import stamp

CYCLE = re.compile(r"reconciliation: (\d+) item\(s\) due, (\d+) C-FIND request\(s\) in "
                   r"([\d.]+) s")
UID_ROOT = "1.2.826.0.1.3680043.8.498.7"


def item(n: int, start: datetime) -> Dataset:
    ds = Dataset()
    ds.PatientID = f"P{n:07d}"
    ds.PatientName = f"BENCH^{n}"
    ds.AccessionNumber = f"A{n:09d}"
    ds.StudyInstanceUID = f"{UID_ROOT}.{n}"
    ds.RequestedProcedureID = f"RP{n}"
    sps = Dataset()
    sps.Modality = "CR"
    sps.ScheduledStationAETitle = "CR01"
    sps.ScheduledProcedureStepStartDate = f"{start:%Y%m%d}"
    sps.ScheduledProcedureStepStartTime = f"{start:%H%M%S}"
    sps.ScheduledProcedureStepID = f"SPS{n}"
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def fill(store: SqliteStore, items: int, due: int, checked: int) -> None:
    now = datetime.now().astimezone()
    window = now - timedelta(hours=2)  # inside [now - 24 h, now - 10 min)
    tomorrow = now + timedelta(days=1)
    chunk: list[Dataset] = []
    for n in range(items):
        start = window + timedelta(seconds=n % 3600) if n < due + checked else \
            tomorrow + timedelta(seconds=n % 36000)
        chunk.append(item(n, start))
        if len(chunk) == 5000:
            store.upsert_steps(chunk)
            chunk = []
    if chunk:
        store.upsert_steps(chunk)
    later = stamp(datetime.now(UTC) + timedelta(days=1))

    def mark(tx: Any) -> None:
        tx.cur.execute(f"SELECT id FROM procedure_step WHERE accession_number >= {tx.param} "
                       f"AND accession_number < {tx.param}", (f"A{due:09d}",
                                                              f"A{due + checked:09d}"))
        for (step_id,) in tx.cur.fetchall():
            reconcile_tx.record_check(tx, int(step_id), next_check=later)

    store.write([mark])


class Pacs:
    def __init__(self, port: int, due: int) -> None:
        self.port, self.due = port, due
        self.requests = self.associations = 0
        self._lock = threading.Lock()
        self._server: Any = None

    def start(self) -> None:
        ae = AE(ae_title="PACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        ae.maximum_associations = 50
        self._server = ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[
            (evt.EVT_C_FIND, self._find), (evt.EVT_ACCEPTED, self._accepted),
            (evt.EVT_CONN_OPEN, no_delay)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _accepted(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        with self._lock:
            self.requests += 1
        uid = str(event.identifier.get("StudyInstanceUID", "") or "")
        n = int(uid.rsplit(".", 1)[1]) if uid.startswith(UID_ROOT + ".") else -1
        if 0 <= n < self.due:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = uid
            ds.AccessionNumber = f"A{n:09d}"
            ds.PatientID = f"P{n:07d}"
            ds.ModalitiesInStudy = "CR"
            ds.NumberOfStudyRelatedSeries = 1
            ds.NumberOfStudyRelatedInstances = 2
            yield 0xFF00, ds
        yield 0x0000, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--due", type=int, default=1_000)
    ap.add_argument("--checked", type=int, default=9_000,
                    help="in the window but asked recently: not due")
    ap.add_argument("--rate", type=float, default=1000.0, help="reconcile.max_queries_per_s")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        folder = Path(tmp)
        data = folder / "data"
        data.mkdir(mode=0o700)
        store = SqliteStore(data / "bridge.sqlite3")
        store.migrate()
        t0 = time.perf_counter()
        fill(store, args.items, args.due, args.checked)
        print(f"store: {store.count_steps():,} open items ({args.due:,} due, "
              f"{args.checked:,} asked recently) made in {time.perf_counter() - t0:.1f} s")
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        due = reconcile_tx.due_steps(
            store, statuses=["SCHEDULED", "STARTED"],
            start_from=(now - timedelta(hours=24)).astimezone().strftime("%Y%m%d%H%M%S"),
            start_to=(now - timedelta(minutes=10)).astimezone().strftime("%Y%m%d%H%M%S"),
            now=stamp(now), limit=100_000)
        print(f"due query: {len(due):,} item(s) in {(time.perf_counter() - t0) * 1000:.1f} ms")
        store.close()

        pacs = Pacs(free_port(), args.due)
        interval = 5.0
        config = write_config(folder, data, (
            "reconcile:\n  enabled: true\n"
            f"  pacs: [{{name: bench, ae_title: PACS, host: 127.0.0.1, port: {pacs.port}}}]\n"
            f"  interval_s: {interval}\n  max_items_per_cycle: 100000\n  batch_size: 50\n"
            f"  max_queries_per_s: {args.rate}\n"))
        daemon = start_daemon(config, data)
        try:
            cpu0 = daemon.cpu()
            pacs.start()  # the daemon's next cycle is the one measured
            opened = time.perf_counter()
            deadline = opened + interval + 600
            cycle = None
            while cycle is None and time.perf_counter() < deadline:
                cycle = next((m for line in daemon.log if (m := CYCLE.search(line))
                              and int(m[2]) > 0), None)
                time.sleep(0.05)
            cpu = daemon.cpu() - cpu0
            if cycle is None:
                print("no measured cycle in the daemon's log:\n" + "\n".join(daemon.log[-20:]))
                return 1
            print(f"cycle: {int(cycle[1]):,} due, {int(cycle[2]):,} C-FIND request(s) "
                  f"(PACS counted {pacs.requests:,} in {pacs.associations} association(s)), "
                  f"{float(cycle[3]):.2f} s wall; daemon CPU {cpu:.2f} s from the PACS "
                  f"opening to the cycle's end (includes up to {interval:g} s idle)")
            print(f"C-FIND requests per stored item: {pacs.requests / args.items:.4f}; "
                  f"per due item: {pacs.requests / max(args.due, 1):.2f}")
        finally:
            daemon.stop()
            pacs.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
