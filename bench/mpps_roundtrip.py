"""MPPS to HL7 status latency: from the N-SET response to the status message arriving
at a local MLLP receiver (the RIS), over many procedures.

    .venv/bin/python bench/mpps_roundtrip.py [--procedures 1000] [--backend sqlite]

The daemon runs as a subprocess (``python -m bridge serve``) with one outbound
destination (ORM^O01) pointing at a receiver in this process. Orders are loaded
over MLLP first. Then, one procedure at a time, a pynetdicom SCU (the modality)
sends N-CREATE (IN PROGRESS), waits for the IP message at the receiver, sends
N-SET (COMPLETED) and waits for the CM message. Both clocks are this process's
``time.monotonic()``. The daemon commits the status change and the outbox row
(one fsync, SQLite synchronous=FULL) before it answers the N-SET, and sends the
message right after the commit, so the message can reach the receiver before the
SCU has read the N-SET response: such a sample is negative. "from request" is the
same arrival measured from just before the N-SET request was sent.

Prints p50/p99/max for CM (and IP) and the ratio line against the target
(p50 < 50 ms from the N-SET response). Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS

from bench.common import REPO, pct, ratio_line, start_daemon, write_config

TARGET_P50_MS = 50.0
UID_ROOT = "1.2.826.0.1.3680043.8.498.7"


class Receiver:
    """A minimal MLLP receiver: records (ORC-5, OBR-18) -> arrival time, answers AA."""

    def __init__(self) -> None:
        self.arrivals: dict[tuple[str, str], float] = {}
        self.count = 0
        self.cond = threading.Condition()
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buf = b""
                while True:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                    while b"\x1c" in buf:
                        frame, buf = buf.split(b"\x1c", 1)
                        buf = buf.removeprefix(b"\r")
                        now = time.monotonic()
                        text = frame.lstrip(b"\x0b").decode("utf-8", errors="replace")
                        fields = {s[:3]: s.split("|") for s in text.split("\r") if s}
                        control = fields["MSH"][9]
                        key = (fields["ORC"][5], fields["OBR"][18])
                        with outer.cond:
                            outer.arrivals.setdefault(key, now)
                            outer.count += 1
                            outer.cond.notify_all()
                        ack = (f"MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|"
                               f"{datetime.now():%Y%m%d%H%M%S}||ACK^O01|A{control}|P|2.3.1\r"
                               f"MSA|AA|{control}\r")
                        sock.sendall(b"\x0b" + ack.encode() + b"\x1c\r")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, key: tuple[str, str], timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        with self.cond:
            while key not in self.arrivals:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no {key[0]} message for {key[1]} within {timeout} s")
                self.cond.wait(left)
            return self.arrivals[key]


def order_message(n: int) -> bytes:
    acc = f"BM{n:08d}"
    return (
        f"MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RADIOLOGY|20261128080000||ORM^O01|BM{n:08d}|P|2.3.1\r"
        f"PID|1||PID{n:07d}^^^HOSP^MR||DOE^JOHN||19750312|M\r"
        f"ORC|NW|PLC{n:07d}^RIS|FIL{n:07d}^RIS||SC||1^once^^20261128093000^^R||"
        f"20261128080000|||||||||CT01\r"
        f"OBR|1|PLC{n:07d}^RIS|FIL{n:07d}^RIS|CTCHEST^CT Chest^LOCAL||||||||||||||{acc}|"
        f"RP{n:08d}|SPS{n:08d}||||CT\r"
        f"ZDS|{UID_ROOT}.{n + 1}^RIS^Application^DICOM\r").encode()


def create_ds(n: int) -> Dataset:
    ds = Dataset()
    ssa = Dataset()
    ssa.StudyInstanceUID = f"{UID_ROOT}.{n + 1}"
    ssa.AccessionNumber = f"BM{n:08d}"
    ssa.RequestedProcedureID = f"RP{n:08d}"
    ssa.ScheduledProcedureStepID = f"SPS{n:08d}"
    ds.ScheduledStepAttributesSequence = [ssa]
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = f"PID{n:07d}"
    ds.PerformedProcedureStepID = f"PPS{n}"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261128"
    ds.PerformedProcedureStepStartTime = "093000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    return ds


def set_ds(n: int) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate = "20261128"
    ds.PerformedProcedureStepEndTime = "094000"
    series = Dataset()
    series.SeriesInstanceUID = f"{UID_ROOT}.{n + 1}.1"
    ds.PerformedSeriesSequence = [series]
    return ds


def load_orders(port: int, count: int) -> None:
    import asyncio

    from bridge.hl7 import MllpClient, ack_code_of

    async def run() -> None:
        client = await MllpClient.connect("127.0.0.1", port)
        try:
            for n in range(count):
                code = ack_code_of(await client.send(order_message(n)))
                if code != "AA":
                    raise RuntimeError(f"order {n} answered {code}")
        finally:
            await client.close()

    asyncio.run(run())


def summary(label: str, samples: list[float]) -> str:
    return (f"{label:32} p50 {pct(samples, 50):7.2f} ms   p99 {pct(samples, 99):7.2f} ms   "
            f"max {max(samples):7.2f} ms   min {min(samples):7.2f} ms")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procedures", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=20)
    args = ap.parse_args()
    total = args.procedures + args.warmup
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        extra = ("outbound:\n"
                 f"  profiles: [{REPO / 'mappings' / 'outbound'}]\n"
                 "  destinations:\n"
                 f"    - {{name: ris, port: {receiver.port}, message_type: ORM^O01}}\n")
        daemon = start_daemon(write_config(folder, folder / "data", extra), folder / "data")
        try:
            started = time.monotonic()
            load_orders(daemon.mllp_port, total)
            print(f"{total} orders loaded over MLLP in {time.monotonic() - started:.1f} s")
            ae = AE(ae_title="CT01")
            ae.add_requested_context(MPPS)
            assoc = ae.associate("127.0.0.1", daemon.dicom_port, ae_title=daemon.ae_title)
            if not assoc.is_established:
                raise RuntimeError("association refused")
            # pynetdicom's SCU leaves Nagle on: its command and data PDUs would then wait
            # for the daemon's delayed ACK (~40 ms per request), which is the client's cost.
            assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ip_rsp, cm_rsp, cm_req = [], [], []
            cpu0 = daemon.cpu()
            t0 = time.monotonic()
            for n in range(total):
                uid = f"{UID_ROOT}.9.{n + 1}"
                acc = f"BM{n:08d}"
                status, _ = assoc.send_n_create(create_ds(n), MPPS, uid)
                after_create = time.monotonic()
                if status.Status != 0:
                    raise RuntimeError(f"N-CREATE {n}: 0x{status.Status:04X}")
                ip_at = receiver.wait(("IP", acc))
                before_set = time.monotonic()
                status, _ = assoc.send_n_set(set_ds(n), MPPS, uid)
                after_set = time.monotonic()
                if status.Status != 0:
                    raise RuntimeError(f"N-SET {n}: 0x{status.Status:04X}")
                cm_at = receiver.wait(("CM", acc))
                if n >= args.warmup:
                    ip_rsp.append((ip_at - after_create) * 1000)
                    cm_rsp.append((cm_at - after_set) * 1000)
                    cm_req.append((cm_at - before_set) * 1000)
            elapsed = time.monotonic() - t0
            cpu = daemon.cpu() - cpu0
            assoc.release()
        finally:
            code = daemon.stop()
            receiver.server.shutdown()
    n = len(cm_rsp)
    print(f"{n} procedures (after {args.warmup} warm-up), N-CREATE + N-SET each, one "
          f"association, TCP_NODELAY on every socket; SQLite synchronous=FULL")
    print(summary("CM: N-SET response -> arrival", cm_rsp))
    print(summary("CM: N-SET request -> arrival", cm_req))
    print(summary("IP: N-CREATE response -> arrival", ip_rsp))
    early = sum(1 for v in cm_rsp if v < 0)
    print(f"CM arrived before the SCU had read the N-SET response: {early} of {n}")
    print(f"wall {elapsed:.1f} s for {total} procedures ({total / elapsed:.1f}/s); daemon CPU "
          f"{cpu * 1000 / total:.2f} ms per procedure (2 status messages)")
    print(f"messages received: {receiver.count} (expected {2 * total})")
    print(ratio_line("CM p50 ms from the N-SET response", pct(cm_rsp, 50), TARGET_P50_MS,
                     higher_is_better=False))
    if code != 0 or receiver.count < 2 * total:
        print("daemon did not stop cleanly or messages are missing")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
