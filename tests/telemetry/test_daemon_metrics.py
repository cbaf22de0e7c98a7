"""The real daemon, wired by bridge/app/services.py, driven over the network: an HL7
order over MLLP, a C-FIND from DCMTK's findscu, an MPPS N-CREATE/N-SET from pynetdicom
and the status messages to a RIS; the counters of its one Metrics object move, and
/readyz follows the services.

The daemon runs in this process (its own thread and event loop) so that the test
reads the very Metrics object the services were given; the HTTP server that serves
it is the console's, tested there.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from bridge.app.daemon import Daemon
from bridge.app.services import ServiceSet
from bridge.app.settings import load_settings
from bridge.hl7 import MllpClient
from bridge.telemetry import metrics_endpoint, readyz_endpoint
from tests.e2e.conftest import DCMTK, FIXTURES, dcmtk_env, write_config
from tests.e2e.test_mpps_roundtrip import MPPS_UID, n_create, n_set_completed, outbound_config
from tests.findstatus import check_status
from tests.outbound.mllp_receiver import MllpReceiver

pytestmark = pytest.mark.skipif(not (DCMTK / "findscu").exists(), reason="DCMTK not installed")


class InProcessDaemon:
    def __init__(self, config: Path) -> None:
        self.daemon = Daemon(load_settings(config, {}))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="daemon", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        def ready(_: Daemon) -> None:
            self._loop = asyncio.get_running_loop()
            self._ready.set()

        try:
            asyncio.run(self.daemon.run(on_ready=ready))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
            self._ready.set()

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(60), "daemon did not start"
        assert self.error is None, self.error

    def stop(self) -> None:
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.daemon.request_stop)
        self._thread.join(60)

    @property
    def services(self) -> ServiceSet:
        assert self.daemon.services is not None
        return self.daemon.services


def samples(services: ServiceSet) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = metrics_endpoint(services.metrics)
    assert answer.status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(answer.body.decode())
            for s in f.samples}


def total(snapshot: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return sum(v for (n, ls), v in snapshot.items()
               if n == name and all((k, want) in ls for k, want in labels.items()))


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[InProcessDaemon, MllpReceiver]]:
    receiver = MllpReceiver()
    receiver.start()
    extra = outbound_config(receiver.port) + "logging:\n  level: WARNING\n"
    d = InProcessDaemon(write_config(tmp_path, extra))
    d.start()
    try:
        yield d, receiver
    finally:
        d.stop()
        receiver.stop()


async def _send(port: int, payload: bytes) -> bytes:
    client = await MllpClient.connect("127.0.0.1", port, timeout=10)
    try:
        return await client.send(payload, timeout=10)
    finally:
        await client.close()


def _findscu(port: int, tmp: Path) -> int:
    out = tmp / f"rsp-{time.monotonic_ns()}"
    out.mkdir()
    res = subprocess.run(
        [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aet", "CT01",
         "-aec", "MWLBRIDGE",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
         "-k", "AccessionNumber", "-k", "StudyInstanceUID", "-k", "PatientID",
         "-k", "RequestedProcedureID", "-k", "PlacerOrderNumberImagingServiceRequest",
         "-k", "FillerOrderNumberImagingServiceRequest", "-k", "PatientName",
         "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepID",
         "127.0.0.1", str(port)], capture_output=True, text=True, timeout=60, env=dcmtk_env())
    assert res.returncode == 0, res.stderr
    check_status(res.stdout + res.stderr)  # findscu exits 0 on a failed query too
    return len(list(out.glob("rsp*.dcm")))


def test_the_counters_follow_an_order_a_query_an_mpps_and_the_status_messages(
        running: tuple[InProcessDaemon, MllpReceiver], tmp_path: Path):
    d, receiver = running
    services = d.services
    ready = readyz_endpoint(services.readiness)
    assert ready.status == 200, ready.body
    assert json.loads(ready.body)["checks"]["dicom"] == {"ok": True, "detail": "listening"}

    before = samples(services)
    assert total(before, "mwl_bridge_mappings_active") > 0
    assert total(before, "mwl_bridge_ready", check="all") == 1

    order = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes()
    ack = asyncio.run(_send(d.daemon.mllp_port, order))
    assert b"MSA|AA" in ack
    bad = asyncio.run(_send(d.daemon.mllp_port, (FIXTURES / "orm-missing-pid3.hl7").read_bytes()))
    assert b"MSA|AE" in bad
    assert asyncio.run(_send(d.daemon.mllp_port, order)) == ack  # an exact resend

    assert _findscu(d.daemon.dicom_port, tmp_path) == 1

    item = dcmread(sorted(tmp_path.glob("rsp-*/rsp*.dcm"))[0])
    ae = AE(ae_title="CT01")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", d.daemon.dicom_port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_create(n_create(item), ModalityPerformedProcedureStep,
                                        MPPS_UID)
        assert status.Status == 0
        status, _ = assoc.send_n_set(n_set_completed(), ModalityPerformedProcedureStep,
                                     MPPS_UID)
        assert status.Status == 0
        status, _ = assoc.send_n_set(n_set_completed(), ModalityPerformedProcedureStep,
                                     MPPS_UID)
        assert status.Status != 0  # after COMPLETED: refused
    finally:
        assoc.release()
    assert len(receiver.wait_for(2)) == 2

    # A console that calls the wrong AE title is rejected.
    stranger = AE(ae_title="CT01")
    stranger.add_requested_context(ModalityPerformedProcedureStep)
    refused = stranger.associate("127.0.0.1", d.daemon.dicom_port, ae_title="NOTUS")
    assert refused.is_rejected

    deadline = time.monotonic() + 10
    while True:  # the sender records "sent" after the RIS's ACK
        after = samples(services)
        if total(after, "mwl_bridge_outbox_sent_total", destination="ris") >= 2 or \
                time.monotonic() > deadline:
            break
        time.sleep(0.1)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("mwl_bridge_hl7_messages_total", type="ORM^O01", outcome="AA") == 2
    assert moved("mwl_bridge_hl7_messages_total", type="ORM^O01", outcome="AE") == 1
    assert moved("mwl_bridge_hl7_resends_total") == 1
    assert moved("mwl_bridge_hl7_ack_latency_seconds_count") == 3
    assert moved("mwl_bridge_cfind_requests_total", calling_ae="CT01", outcome="success") == 1
    assert moved("mwl_bridge_cfind_answers_sum") == 1
    assert moved("mwl_bridge_cfind_duration_seconds_count") == 1
    assert moved("mwl_bridge_dicom_associations_total", calling_ae="CT01") == 2
    assert moved("mwl_bridge_dicom_association_rejections_total",
                 reason="called_ae_not_recognized") == 1
    assert moved("mwl_bridge_mpps_events_total", operation="n_create",
                 status="in_progress") == 1
    assert moved("mwl_bridge_mpps_events_total", operation="n_set", status="completed") == 1
    assert moved("mwl_bridge_mpps_events_total", operation="n_set", status="refused") == 1
    assert moved("mwl_bridge_outbox_sent_total", destination="ris") == 2
    assert total(after, "mwl_bridge_outbox_pending", destination="ris") == 0
    assert total(after, "mwl_bridge_outbox_dead", destination="ris") == 0
    assert moved("mwl_bridge_store_commit_duration_seconds_count") >= 3
    assert total(after, "mwl_bridge_metrics_read_errors_total") == 0

    d.stop()
    gone = readyz_endpoint(services.readiness)
    assert gone.status == 503
    checks = json.loads(gone.body)["checks"]
    assert not checks["mllp"]["ok"] and not checks["dicom"]["ok"]
    assert not checks["store_writer"]["ok"]
