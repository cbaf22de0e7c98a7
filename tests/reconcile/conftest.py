"""Reconciliation against a PACS that is a real DICOM peer: a pynetdicom Study Root
C-FIND SCP on a free loopback port holding the studies a test puts there, and
counting the associations and C-FIND requests it serves. Both store backends."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from bridge.outbound.events import Destination, StatusMessages
from bridge.reconcile.loop import Reconciler
from bridge.reconcile.query import no_delay
from bridge.reconcile.settings import ReconcileSettings
from bridge.store import Store, thread_submit
from tests.mpps.conftest import _profiles, mapped_steps
from tests.store.conftest import store  # noqa: F401 - both backends

# Now, for the loop: the fixture orders' items start on 2026-11-28 (local time).
NOW = datetime(2026, 11, 28, 12, 0).astimezone()


@dataclass
class Study:
    uid: str
    accession: str = ""
    patient_id: str = ""
    instances: int = 3
    series: int = 1


@dataclass
class FakePacs:
    """Study Root C-FIND SCP (STUDY level): matches StudyInstanceUID or AccessionNumber."""

    studies: list[Study] = field(default_factory=list)
    requests: list[Dataset] = field(default_factory=list)
    associations: int = 0
    port: int = 0
    ssl_context: ssl.SSLContext | None = None  # a PACS that talks TLS only

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        ae = AE(ae_title="PACS")
        ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
        self._server: Any = ae.start_server(
            ("127.0.0.1", 0), block=False,
            evt_handlers=[(evt.EVT_C_FIND, self._find), (evt.EVT_ACCEPTED, self._accepted),
                          (evt.EVT_CONN_OPEN, no_delay)], ssl_context=self.ssl_context)
        self.port = int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _accepted(self, _event: Any) -> None:
        with self._lock:
            self.associations += 1

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        ident = event.identifier
        with self._lock:
            self.requests.append(ident)
            studies = list(self.studies)
        uid = str(ident.get("StudyInstanceUID", "") or "")
        acc = str(ident.get("AccessionNumber", "") or "")
        for s in studies:
            if (uid and s.uid != uid) or (acc and s.accession != acc) or not (uid or acc):
                continue
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = s.uid
            ds.AccessionNumber = s.accession
            ds.PatientID = s.patient_id
            ds.ModalitiesInStudy = "CT"
            ds.NumberOfStudyRelatedSeries = s.series
            ds.NumberOfStudyRelatedInstances = s.instances
            yield 0xFF00, ds
        yield 0x0000, None


@pytest.fixture
def pacs() -> Iterator[FakePacs]:
    p = FakePacs()
    yield p
    p.stop()


def reporter() -> StatusMessages:
    dest = Destination("ris", _profiles().for_message_type("ORM^O01"), "UNICODE UTF-8",
                       "utf-8", "RIS", "HOSP")
    return StatusMessages([dest], sending_application="MWLBRIDGE",
                          sending_facility="RADIOLOGY")


def make_step(n: int, *, start: str = "20261128093000", modality: str = "CT",
              station: str = "CT01", patient_id: str = "PAT10001") -> Dataset:
    """The IHE CT fixture's item with numbers of its own."""
    (item,) = mapped_steps("orm-o01-ihe-ct.hl7")
    item.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.9{n:05d}"
    item.AccessionNumber = f"ACC{n:07d}"
    item.RequestedProcedureID = f"RP{n}"
    item.PlacerOrderNumberImagingServiceRequest = f"PLC{n}"
    item.FillerOrderNumberImagingServiceRequest = f"FIL{n}"
    item.PatientID = patient_id
    sps = item.ScheduledProcedureStepSequence[0]
    sps.ScheduledProcedureStepID = f"SPS{n}"
    sps.ScheduledProcedureStepStartDate = start[:8]
    sps.ScheduledProcedureStepStartTime = start[8:]
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    return item


def settings(pacs: FakePacs, peers: list[dict[str, Any]] | None = None,
             **kw: Any) -> ReconcileSettings:
    base: dict[str, Any] = {
        "enabled": True, "min_age_min": 10, "max_age_h": 24, "batch_size": 50,
        "max_queries_per_s": 1000, "recheck_s": 300, "settle_poll_s": 60,
        "pacs": [{"name": "pacs1", "ae_title": "PACS", "host": "127.0.0.1",
                  "port": pacs.port, "timeout_s": 10}]}
    if peers is not None:
        base["pacs"] = peers
    base.update(kw)
    return ReconcileSettings.model_validate(base)


def reconciler(target: Store, s: ReconcileSettings, **kw: Any) -> Reconciler:
    return Reconciler(s, target, thread_submit(target), calling_aet="MWLBRIDGE",
                      messages=reporter(), **kw)
