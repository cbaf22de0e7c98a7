"""Fixtures for the worklist SCP: a real SqliteStore, the SCP on a free port, DCMTK peers."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from bridge.store.base import Store
from bridge.store.sqlite import SqliteStore
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.findstatus import SUCCESS, check_status, final_status

FINDSCU = "/usr/bin/findscu"   # never .venv/bin/findscu (pynetdicom's namesake)
ECHOSCU = "/usr/bin/echoscu"
# Debian's DCMTK turns Nagle off only with this set.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_item(name: str, patient_id: str, accession: str, uid: str, station: str,
              modality: str, date: str, time: str, status: str = "SCHEDULED",
              issuer: str = "HOSP") -> Dataset:
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.Modality = modality
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.ScheduledProcedureStepID = "S" + accession
    sps.ScheduledProcedureStepDescription = "Schädel nativ"
    sps.ScheduledProcedureStepStatus = status
    item = Dataset()
    item.PatientName = name
    item.PatientID = patient_id
    item.IssuerOfPatientID = issuer
    item.AccessionNumber = accession
    item.StudyInstanceUID = uid
    item.RequestedProcedureID = "R" + accession
    item.RequestedProcedureDescription = "CT Kopf"
    item.ScheduledProcedureStepSequence = [sps]
    return item


@dataclass(frozen=True)
class FindResult:
    returncode: int
    answers: list[Dataset]
    log: str

    @property
    def accessions(self) -> list[str]:
        return [str(a.AccessionNumber) for a in self.answers]

    @property
    def status(self) -> str:
        """The final C-FIND status findscu printed (it exits 0 whatever the status)."""
        return final_status(self.log)


@pytest.fixture
def new_store(tmp_path: Path) -> Iterator[Callable[[list[Dataset]], SqliteStore]]:
    stores: list[SqliteStore] = []

    def create(items: list[Dataset]) -> SqliteStore:
        store = SqliteStore(tmp_path / f"store{len(stores)}.sqlite3")
        store.migrate()
        if items:
            store.upsert_steps(items)
        stores.append(store)
        return store

    yield create
    for store in stores:
        store.close()


@pytest.fixture
def start_scp() -> Iterator[Callable[..., WorklistSCP]]:
    started: list[WorklistSCP] = []

    def start(store: Store, dicom: DicomSettings | None = None,
              worklist: WorklistSettings | None = None) -> WorklistSCP:
        scp = WorklistSCP(store, dicom or DicomSettings(port=0), worklist or WorklistSettings())
        scp.start()
        started.append(scp)
        return scp

    yield start
    for scp in started:
        scp.stop()


def run_findscu(port: int, keys: list[str], out_dir: Path,
                status: str = SUCCESS) -> FindResult:
    """One ``findscu -W`` process; answers are read back from its extracted files.

    Fails unless the final status is ``status``: Success, unless the test names the failure
    it expects (findscu exits 0 even when the query failed).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [FINDSCU, "-v", "-W", "-X", "-od", str(out_dir), "-aet", "CONSOLE",
            "-aec", "MWLBRIDGE", "127.0.0.1", str(port)]
    for key in keys:
        args += ["-k", key]
    # Bytes: -v echoes the query, whose values need not be UTF-8.
    done = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=60, check=False)
    answers = [dcmread(path, force=True) for path in sorted(out_dir.glob("rsp*.dcm"))]
    log = (done.stdout + done.stderr).decode("utf-8", "replace")
    check_status(log, status)
    return FindResult(done.returncode, answers, log)


@pytest.fixture
def findscu(tmp_path: Path) -> Callable[..., FindResult]:
    runs = iter(range(1_000_000))

    def find(port: int, keys: list[str], status: str = SUCCESS) -> FindResult:
        return run_findscu(port, keys, tmp_path / f"find{next(runs)}", status)

    return find


@pytest.fixture(scope="session")
def item() -> Callable[..., Dataset]:
    """The worklist item builder, for tests that need their own items."""
    return make_item
