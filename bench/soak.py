"""Soak: mixed traffic against one daemon for a long time; resources must stay flat.

    .venv/bin/python bench/soak.py                  # 30 minutes (the target)
    .venv/bin/python bench/soak.py --minutes 3      # a quick look

Traffic, all on loopback, all bounded by --minutes:
- orders: new ORM^O01 (NW) at --rate per second over two MLLP connections, each ACK
  awaited; about 1 in 20 is sent twice (an exact resend, answered with its first ACK);
- ADT^A08 demographic updates for patients already ordered, one per 10 orders;
- MPPS: for one order in 5, N-CREATE (IN PROGRESS) and N-SET (COMPLETED) over a
  pynetdicom association, as the modality would after taking the worklist;
- consoles: --consoles DCMTK findscu processes (the real modality peer), each polling
  its station's worklist for one day every --poll-s seconds;
- hostile: every 30 s a frame that is not HL7 on MLLP, and a PDU that is not DICOM
  on the SCP's port; each must end in a defined answer (a closed connection).

Every minute it prints the daemon's RSS, open file descriptors and threads (from
/proc), and the p99 latency of ACKs and C-FINDs in that minute, plus the count of
errors (an ACK other than AA, a C-FIND without a Success status, an MPPS failure).
At the end it checks the database against what was sent: one step per order, the
MPPS-completed ones COMPLETED, the updated names stored; and whether RSS and fd
count stayed within 10 % of their value after the first (warm-up) minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Run as a script from anywhere: the repo root must be importable for "bench" and "bridge".
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    DCMTK,
    STATIONS,
    Daemon,
    dcmtk_env,
    make_people,
    pct,
    start_daemon,
    write_config,
)
from bench.ingest import FIRST_DAY, orm_message

HOSTILE_EVERY_S = 30.0


@dataclass
class Minute:
    """What happened in one minute of the soak (appended to from several threads)."""

    ack_ms: list[float] = field(default_factory=list)
    find_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Recorder:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = Minute()

    def ack(self, ms: float) -> None:
        with self._lock:
            self.current.ack_ms.append(ms)

    def find(self, ms: float) -> None:
        with self._lock:
            self.current.find_ms.append(ms)

    def error(self, what: str) -> None:
        with self._lock:
            if len(self.current.errors) < 20:
                self.current.errors.append(what)

    def rotate(self) -> Minute:
        with self._lock:
            done, self.current = self.current, Minute()
            return done


@dataclass
class Sent:
    """What the soak sent, to check the database against at the end."""

    orders: list[int] = field(default_factory=list)  # message numbers, each one order
    completed: set[int] = field(default_factory=set)  # orders whose MPPS went COMPLETED
    renamed: dict[str, str] = field(default_factory=dict)  # patient ID -> new family name
    lock: threading.Lock = field(default_factory=threading.Lock)


def proc_figures(pid: int) -> tuple[float, int, int]:
    """RSS in MB, open file descriptors, threads."""
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


def adt_update(n: int, patient_id: str, family: str) -> bytes:
    return (f"MSH|^~\\&|RIS|GENERAL HOSPITAL|MWLBRIDGE|RADIOLOGY|20250601120000||ADT^A08|"
            f"SOAKADT{n:09d}|P|2.3.1\r"
            f"EVN|A08|20250601120000\r"
            f"PID|1||{patient_id}^^^HOSP^MR||{family}^SOAK||19700101|F\r"
            f"PV1|1|O\r").encode()


async def order_stream(port: int, stop: threading.Event, rate: float, rec: Recorder,
                       sent: Sent, first: int, step: int, rng: random.Random) -> None:
    from bridge.hl7 import MllpClient, ack_code_of

    people = make_people(rng, 400)
    client = await MllpClient.connect("127.0.0.1", port, timeout=30)
    n = first
    try:
        while not stop.is_set():
            t0 = time.monotonic()
            person = rng.choice(people)
            message = orm_message(n, rng, person)
            for _ in range(2 if rng.random() < 0.05 else 1):  # 1 in 20: an exact resend
                s = time.perf_counter()
                code = ack_code_of(await client.send(message, timeout=30))
                rec.ack((time.perf_counter() - s) * 1000)
                if code != "AA":
                    rec.error(f"order {n}: {code}")
            with sent.lock:
                sent.orders.append(n)
                # The order carried the patient's name as the RIS has it: an earlier
                # ADT rename no longer is the expected state.
                sent.renamed.pop(person.id, None)
            if n % 10 == first % 10:
                family = f"SOAK{n:07d}"
                s = time.perf_counter()
                code = ack_code_of(await client.send(adt_update(n, person.id, family),
                                                     timeout=30))
                rec.ack((time.perf_counter() - s) * 1000)
                if code != "AA":
                    rec.error(f"ADT {n}: {code}")
                with sent.lock:
                    sent.renamed[person.id] = family
            n += step
            await asyncio.sleep(max(0.0, 2 / rate - (time.monotonic() - t0)))
    finally:
        await client.close()


def orders_thread(port: int, stop: threading.Event, rate: float, rec: Recorder, sent: Sent,
                  seed: int) -> None:
    async def both() -> None:
        await asyncio.gather(*(order_stream(port, stop, rate, rec, sent, k, 2,
                                            random.Random(seed + k)) for k in range(2)))

    asyncio.run(both())


def mpps_thread(port: int, aet: str, stop: threading.Event, rec: Recorder, sent: Sent,
                db: Path) -> None:
    from pydicom import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        ModalityPerformedProcedureStep,
    )

    done: set[int] = set()
    while not stop.wait(2.0):
        with sent.lock:
            todo = [n for n in sent.orders if n % 5 == 0 and n not in done][:5]
        for n in todo:
            done.add(n)
            step = _stored_step(db, f"A{n:09d}")
            if step is None:
                rec.error(f"MPPS {n}: order not stored")
                continue
            station, study_uid, modality, patient_id = step
            ae = AE(ae_title=station)
            ae.add_requested_context(ModalityPerformedProcedureStep)
            assoc = ae.associate("127.0.0.1", port, ae_title=aet)
            if not assoc.is_established:
                rec.error(f"MPPS {n}: association refused")
                continue
            try:
                create = Dataset()
                ssa = Dataset()
                ssa.StudyInstanceUID = study_uid
                ssa.AccessionNumber = f"A{n:09d}"
                ssa.RequestedProcedureID = f"RP{n:09d}"
                ssa.ScheduledProcedureStepID = f"SPS{n:09d}"
                create.ScheduledStepAttributesSequence = [ssa]
                create.PatientName = "SOAK^PATIENT"
                create.PatientID = patient_id
                create.PerformedProcedureStepID = f"PPS{n}"
                create.Modality = modality
                create.PerformedStationAETitle = station
                create.PerformedProcedureStepStartDate = "20250601"
                create.PerformedProcedureStepStartTime = "093000"
                create.PerformedProcedureStepStatus = "IN PROGRESS"
                uid = f"1.2.826.0.1.3680043.8.498.9.{n}"
                status, _ = assoc.send_n_create(create, ModalityPerformedProcedureStep, uid)
                final = Dataset()
                final.PerformedProcedureStepStatus = "COMPLETED"
                final.PerformedProcedureStepEndDate = "20250601"
                final.PerformedProcedureStepEndTime = "094000"
                series = Dataset()
                series.SeriesInstanceUID = f"{uid}.1"
                final.PerformedSeriesSequence = [series]
                status2, _ = assoc.send_n_set(final, ModalityPerformedProcedureStep, uid)
                if status.Status == 0 and status2.Status == 0:
                    with sent.lock:
                        sent.completed.add(n)
                else:
                    rec.error(f"MPPS {n}: 0x{status.Status:04X}/0x{status2.Status:04X}")
            finally:
                assoc.release()


def _stored_step(db: Path, accession: str) -> tuple[str, str, str, str] | None:
    # Read-only, beside the daemon (WAL): what the modality would have from the worklist.
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        row = conn.execute("SELECT station_aet, study_instance_uid, modality, patient_id "
                           "FROM procedure_step WHERE accession_number = ?",
                           (accession,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]), str(row[2]), str(row[3]))


def console_thread(port: int, aet: str, station: str, modality: str, poll_s: float,
                   stop: threading.Event, rec: Recorder) -> None:
    # A console asks for its station's day, as modalities do: the orders spread over
    # 30 days, so its answers grow by about 1/30 of the orders for its station.
    day = f"{FIRST_DAY:%Y%m%d}"
    cmd = [str(DCMTK / "findscu"), "-v", "-W", "-aet", station, "-aec", aet,
           "-k", f"ScheduledProcedureStepSequence[0].ScheduledStationAETitle={station}",
           "-k", f"ScheduledProcedureStepSequence[0].Modality={modality}",
           "-k", f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={day}",
           "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber",
           "127.0.0.1", str(port)]
    while not stop.wait(poll_s * random.uniform(0.8, 1.2)):
        s = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk_env(),
                              timeout=120)
        rec.find((time.perf_counter() - s) * 1000)
        # findscu exits 0 on a failed query: the verdict is the final status it prints.
        if "Final Find Response (Success)" not in done.stdout + done.stderr:
            rec.error(f"C-FIND {station}: {done.returncode}")


def hostile_thread(mllp_port: int, dicom_port: int, stop: threading.Event,
                   rec: Recorder) -> None:
    while not stop.wait(HOSTILE_EVERY_S):
        for port, payload in ((mllp_port, b"\x0bGET / HTTP/1.0\r\n\r\n\x1c\r"),
                              (dicom_port, b"\x01\x00\xff\xff\xff\xffGARBAGE" * 8)):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(payload)
                    s.settimeout(10)
                    while s.recv(4096):  # until the daemon closes it
                        pass
            except OSError as exc:
                if not isinstance(exc, ConnectionResetError):
                    rec.error(f"hostile on {port}: {type(exc).__name__}")


def check_database(db: Path, sent: Sent) -> list[str]:
    problems = []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        steps = {r[0]: r[1] for r in conn.execute(
            "SELECT accession_number, sps_status FROM procedure_step")}
        names = {r[0]: r[1] for r in conn.execute(
            "SELECT patient_id, item FROM procedure_step")}
    wanted = {f"A{n:09d}" for n in sent.orders}
    if set(steps) != wanted:
        problems.append(f"steps: {len(steps)} stored, {len(wanted)} ordered, "
                        f"{len(wanted - set(steps))} missing, {len(set(steps) - wanted)} extra")
    not_done = [n for n in sent.completed if steps.get(f"A{n:09d}") != "COMPLETED"]
    if not_done:
        problems.append(f"{len(not_done)} MPPS-completed step(s) not COMPLETED")
    stale = [pid for pid, family in sent.renamed.items()
             if pid in names and family not in names[pid]]
    if stale:
        problems.append(f"{len(stale)} ADT update(s) not in the stored items")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=10.0, help="new orders per second")
    ap.add_argument("--consoles", type=int, default=20)
    ap.add_argument("--poll-s", type=float, default=10.0, help="seconds between a console's "
                                                               "queries")
    ap.add_argument("--warmup-minutes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mwl-soak-") as tmp:
        root = Path(tmp)
        daemon: Daemon = start_daemon(write_config(root, root / "data"), root / "data")
        stop = threading.Event()
        rec = Recorder()
        sent = Sent()
        db = daemon.sqlite_path
        threads = [
            threading.Thread(target=orders_thread, args=(daemon.mllp_port, stop, args.rate,
                                                         rec, sent, args.seed)),
            threading.Thread(target=mpps_thread, args=(daemon.dicom_port, daemon.ae_title,
                                                       stop, rec, sent, db)),
            threading.Thread(target=hostile_thread, args=(daemon.mllp_port, daemon.dicom_port,
                                                          stop, rec)),
            *(threading.Thread(target=console_thread, args=(
                daemon.dicom_port, daemon.ae_title, STATIONS[k % len(STATIONS)][0],
                STATIONS[k % len(STATIONS)][1], args.poll_s, stop, rec))
              for k in range(args.consoles)),
        ]
        print(f"soak: {args.minutes:g} min, {args.rate:g} orders/s (+ resends, ADT, MPPS), "
              f"{args.consoles} consoles every {args.poll_s:g} s, hostile frames every "
              f"{HOSTILE_EVERY_S:g} s; daemon pid {daemon.proc.pid}")
        print(f"{'min':>4} {'RSS MB':>7} {'fds':>5} {'thr':>4} {'ACKs':>6} {'ACK p99':>8} "
              f"{'FINDs':>6} {'FIND p99':>9} errors")
        rows: list[tuple[float, int]] = []
        errors = 0
        try:
            for t in threads:
                t.start()
            end = time.monotonic() + args.minutes * 60
            minute = 0
            while time.monotonic() < end:
                time.sleep(min(60.0, max(0.0, end - time.monotonic())))
                minute += 1
                m = rec.rotate()
                rss, fds, nthreads = proc_figures(daemon.proc.pid)
                rows.append((rss, fds))
                errors += len(m.errors)
                print(f"{minute:>4} {rss:>7.1f} {fds:>5} {nthreads:>4} {len(m.ack_ms):>6} "
                      f"{pct(m.ack_ms, 99) if m.ack_ms else 0:>8.1f} {len(m.find_ms):>6} "
                      f"{pct(m.find_ms, 99) if m.find_ms else 0:>9.1f} "
                      f"{'; '.join(m.errors[:3]) or '-'}", flush=True)
        finally:
            stop.set()
            for t in threads:
                if t.is_alive():
                    t.join(timeout=180)
        time.sleep(1)
        problems = check_database(db, sent)
        code = daemon.stop()
        print(f"sent {len(sent.orders)} orders, {len(sent.renamed)} ADT updates, "
              f"{len(sent.completed)} MPPS completed; daemon exit {code}")
        ok = not problems and errors == 0 and code == 0
        if len(rows) > args.warmup_minutes:
            base_rss, base_fds = rows[args.warmup_minutes - 1] if args.warmup_minutes else rows[0]
            last_rss, last_fds = rows[-1]
            flat = last_rss <= base_rss * 1.10 and last_fds <= max(base_fds * 1.10, base_fds + 2)
            print(f"RSS {base_rss:.1f} -> {last_rss:.1f} MB ({last_rss / base_rss:.2f}), fds "
                  f"{base_fds} -> {last_fds} after warm-up: {'flat' if flat else 'GROWING'}")
            ok = ok and flat
        for p in problems:
            print(f"database: {p}")
        print("soak: PASS" if ok else "soak: FAIL")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
