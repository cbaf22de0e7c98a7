"""Clinical latency with the audit trail's repository up and down.

    .venv/bin/python bench/audit_outage.py [--messages 300] [--queries 200]

Three phases, each on a fresh daemon (SQLite) on free loopback ports: audit off
(the baseline), audit on with a real rsyslog as the Audit Record Repository (TLS,
RFC 5425; tests/audit/rsyslog.py), and audit on with that repository down (its port
closed: every delivery attempt fails and the events pile up in the spool). In each,
one MLLP connection sends new orders one after the other, each ACK awaited (ingest
ACK latency), then one pynetdicom association sends Modality Worklist C-FINDs one
after the other (C-FIND latency, request to final status). The p50 and p95 of each
are printed side by side, with how many audit events the repository received or the
spool holds. Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from bench.common import median, pct, start_daemon, write_config
from bench.ingest import build_messages, send_all
from tests.audit.rsyslog import Rsyslog, free_port
from tests.tlscerts import make_pki


def audit_yaml(r: Rsyslog) -> str:
    return ("audit:\n  enabled: true\n  retry_initial_s: 1\n  retry_max_s: 5\n"
            "  repositories:\n"
            f"    - {{name: arr, port: {r.tls_port}, transport: tls,\n"
            f"       tls: {{enabled: true, ca_file: {r.pki.ca}}}}}\n")


def cfind_latencies(port: int, ae_title: str, queries: int) -> list[float]:
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established
    out = []
    try:
        for _ in range(queries):
            ds = Dataset()
            ds.PatientName = ""
            ds.PatientID = ""
            ds.AccessionNumber = ""
            sps = Dataset()
            sps.ScheduledStationAETitle = "CT01"
            sps.ScheduledProcedureStepStartDate = ""
            sps.Modality = ""
            ds.ScheduledProcedureStepSequence = [sps]
            t0 = time.perf_counter()
            for status, _answer in assoc.send_c_find(ds, ModalityWorklistInformationFind):
                if status is None or status.Status not in (0xFF00, 0xFF01):
                    break
            out.append(time.perf_counter() - t0)
    finally:
        assoc.release()
    return out


def phase(root: Path, name: str, audit: str, messages: list[bytes], queries: int
          ) -> tuple[list[float], list[float], int]:
    folder = root / name
    folder.mkdir()
    daemon = start_daemon(write_config(folder, folder / "data", audit), folder / "data")
    try:
        _wall, acks, replies = asyncio.run(send_all(daemon.mllp_port, messages, 1))
        assert all(b"MSA|AA|" in r for r in replies), "an order was not accepted"
        finds = cfind_latencies(daemon.dicom_port, daemon.ae_title, queries)
        time.sleep(2)  # let the spool catch up before counting
        spooled = pending(daemon.sqlite_path) if audit else 0
    finally:
        daemon.stop()
    return acks, finds, spooled


def pending(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM atna_delivery").fetchone()[0])
    finally:
        conn.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=300)
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        root = Path(tmp)
        r = Rsyslog(root / "rsyslog", make_pki(root / "pki"))
        r.folder.mkdir()
        results = {}
        results["audit off"] = phase(root, "off", "",
                                     build_messages(0, args.messages, 1), args.queries)
        r.start()
        try:
            results["ARR up"] = phase(root, "up", audit_yaml(r),
                                      build_messages(10**6, args.messages, 2), args.queries)
            time.sleep(1)
            received = len(r.messages())
        finally:
            r.stop()
        down = Rsyslog(root / "rsyslog-down", r.pki, tls_port=free_port())
        results["ARR down"] = phase(root, "down", audit_yaml(down),
                                    build_messages(2 * 10**6, args.messages, 3), args.queries)
    print(f"{args.messages} orders (one connection, ACK awaited), {args.queries} C-FINDs "
          "(one association); milliseconds")
    print(f"{'':10} {'ACK p50':>9} {'ACK p95':>9} {'C-FIND p50':>11} {'C-FIND p95':>11}  audit")
    for label, (acks, finds, spooled) in results.items():
        note = ("-" if label == "audit off" else f"{received} received by rsyslog"
                if label == "ARR up" else f"{spooled} waiting in the spool")
        print(f"{label:10} {median(acks) * 1e3:9.2f} {pct(acks, 95) * 1e3:9.2f} "
              f"{median(finds) * 1e3:11.2f} {pct(finds, 95) * 1e3:11.2f}  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
