from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE, Association
from pynetdicom.sop_class import ModalityPerformedProcedureStep, ModalityWorklistInformationFind

from bridge.hl7 import decode_frame, parse_message
from bridge.mapping import MappingSet, load_mappings
from bridge.mpps.service import MppsService
from bridge.mpps.settings import MppsSettings
from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import ProfileSet, load_profiles
from bridge.store import SqliteStore, Store
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.store.conftest import store  # noqa: F401 - both backends

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures" / "hl7"
MPPS = ModalityPerformedProcedureStep


@functools.cache
def _mappings() -> MappingSet:
    return load_mappings([REPO / "mappings"], default_station_aet="UNASSIGNED")


@functools.cache
def _profiles() -> ProfileSet:
    return load_profiles([REPO / "mappings" / "outbound"])


def mapped_steps(name: str) -> list[Dataset]:
    mappings = _mappings()
    text = decode_frame((FIXTURES / name).read_bytes(), default="ascii", aliases={}).text
    return mappings.map(parse_message(text)).items


def ssa_item(step: Dataset, **override: str) -> Dataset:
    """A Scheduled Step Attributes item as a modality copies it from the worklist item."""
    item = Dataset()
    item.StudyInstanceUID = step.StudyInstanceUID
    item.AccessionNumber = step.AccessionNumber
    item.RequestedProcedureID = step.RequestedProcedureID
    item.ScheduledProcedureStepID = step.ScheduledProcedureStepSequence[0] \
        .ScheduledProcedureStepID
    item.PlacerOrderNumberImagingServiceRequest = step.get(
        "PlacerOrderNumberImagingServiceRequest", "")
    item.FillerOrderNumberImagingServiceRequest = step.get(
        "FillerOrderNumberImagingServiceRequest", "")
    item.RequestedProcedureDescription = step.get("RequestedProcedureDescription", "")
    item.ScheduledProcedureStepDescription = ""
    item.ScheduledProtocolCodeSequence = []
    for key, value in override.items():
        setattr(item, key, value)
    return item


def create_ds(*steps: Dataset, **top: object) -> Dataset:
    """An N-CREATE attribute list (PS3.4 Table F.7.2-1, Type 1 and 2) for ``steps``."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ScheduledStepAttributesSequence = [ssa_item(s) for s in steps]
    first = steps[0] if steps else Dataset()
    ds.PatientName = first.get("PatientName", "")
    ds.PatientID = first.get("PatientID", "")
    ds.PatientBirthDate = first.get("PatientBirthDate", "")
    ds.PatientSex = first.get("PatientSex", "")
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS0001"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedStationName = "CT Room 1"
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20261128"
    ds.PerformedProcedureStepStartTime = "093512"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ""
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = "1"
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    for key, value in top.items():
        setattr(ds, key, value)
    return ds


def final_ds(status: str = "COMPLETED", *, series: int = 1) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20261128"
    ds.PerformedProcedureStepEndTime = "094230"
    items = []
    for n in range(series):
        s = Dataset()
        s.SeriesInstanceUID = f"1.2.826.0.1.3680043.8.498.{n + 1}"
        s.ProtocolName = "CHEST"
        s.PerformingPhysicianName = ""
        s.OperatorsName = ""
        s.SeriesDescription = ""
        s.RetrieveAETitle = ""
        s.ReferencedImageSequence = []
        s.ReferencedNonImageCompositeSOPInstanceSequence = []
        items.append(s)
    ds.PerformedSeriesSequence = items
    return ds


@dataclass
class MppsEnv:
    store: Store
    scp: WorklistSCP
    service: MppsService
    steps: list[Dataset]
    notified: list[int] = field(default_factory=list)
    _assocs: list[Association] = field(default_factory=list)

    def associate(self, calling: str = "CT01") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(MPPS)
        ae.add_requested_context(ModalityWorklistInformationFind)
        assoc = ae.associate("127.0.0.1", self.scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        self._assocs.append(assoc)
        return assoc


def build_env(target: Store, settings: MppsSettings, steps: list[Dataset],
              with_messages: bool = True) -> MppsEnv:
    target.upsert_steps(steps)
    messages = None
    if with_messages:
        profiles = _profiles()
        dest = Destination("ris", profiles.for_message_type("ORM^O01"), "UNICODE UTF-8",
                           "utf-8", "RIS", "HOSP")
        messages = StatusMessages([dest], sending_application="MWLBRIDGE",
                                  sending_facility="RADIOLOGY")
    notified: list[int] = []
    service = MppsService(target, settings, messages=messages,
                          notify=lambda: notified.append(1))
    dicom = DicomSettings(port=0)
    scp = WorklistSCP(target, dicom, WorklistSettings(), services=(service,))
    scp.start()
    return MppsEnv(target, scp, service, steps, notified)


@pytest.fixture
def mpps_settings() -> MppsSettings:
    return MppsSettings()


def _env(target: Store, settings: MppsSettings) -> Iterator[MppsEnv]:
    e = build_env(target, settings, mapped_steps("orm-o01-ihe-ct.hl7")
                  + mapped_steps("orm-o01-two-groups.hl7"))
    yield e
    for assoc in e._assocs:
        if assoc.is_established:
            assoc.release()
    e.scp.stop()


@pytest.fixture
def env(tmp_path, mpps_settings) -> Iterator[MppsEnv]:
    """The MPPS SCP on SQLite (the state machine does not depend on the backend)."""
    s = SqliteStore(tmp_path / "bridge.sqlite3")
    s.migrate()
    yield from _env(s, mpps_settings)
    s.close()


@pytest.fixture
def env_both(store, mpps_settings) -> Iterator[MppsEnv]:  # noqa: F811 - the imported fixture
    """The MPPS SCP on SQLite and on PostgreSQL, for what touches the SQL."""
    yield from _env(store, mpps_settings)


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[Store]:
    s = SqliteStore(tmp_path / "bridge.sqlite3")
    s.migrate()
    yield s
    s.close()
