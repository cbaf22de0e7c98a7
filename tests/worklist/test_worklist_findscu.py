"""The SCP against DCMTK's findscu -W and echoscu, over a real SqliteStore."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator

import pytest
from pydicom import Dataset, dcmread

from bridge.store.sqlite import SqliteStore
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.findstatus import check_status

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
UID = "1.2.826.0.1.3680043.10.1."
SPS = "ScheduledProcedureStepSequence[0]."
RETURN_KEYS = [
    "(0008,0005)=ISO_IR 192", "PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID",
    SPS + "ScheduledStationAETitle", SPS + "Modality", SPS + "ScheduledProcedureStepStartDate",
    SPS + "ScheduledProcedureStepStartTime", SPS + "ScheduledProcedureStepStatus",
]
# (name, patient ID, accession, station, modality, date, time, status)
ITEMS = [
    ("Müller^Hans", "P1", "A1", "CT01", "CT", "20261128", "080000", "SCHEDULED"),
    ("Doe^John", "P2", "A2", "CT01", "CT", "20261128", "093000", "SCHEDULED"),
    ("Smith^Anna", "P3", "A3", "MR01", "MR", "20261128", "100000", "SCHEDULED"),
    ("Meier^Eva", "P4", "A4", "CT01", "CT", "20261129", "080000", "SCHEDULED"),
    ("MÜLLER^Otto", "P5", "A5", "CT02", "CT", "20261201", "120000", "SCHEDULED"),
    ("Done^Dan", "P6", "A6", "CT01", "CT", "20261128", "110000", "COMPLETED"),
    ("山田^太郎", "P7", "A7", "CT01", "CT", "20261130", "070000", "SCHEDULED"),
]


def standard_items(make: Callable[..., Dataset]) -> list[Dataset]:
    # Inserted out of time order: the answer order must come from the store.
    rows = list(reversed(ITEMS))
    return [make(name, pid, acc, UID + acc[1:], station, modality, date, time, status)
            for name, pid, acc, station, modality, date, time, status in rows]


@pytest.fixture(scope="module")
def scp(tmp_path_factory: pytest.TempPathFactory,
        item: Callable[..., Dataset]) -> Iterator[WorklistSCP]:
    store = SqliteStore(tmp_path_factory.mktemp("store") / "bridge.sqlite3")
    store.migrate()
    store.upsert_steps(standard_items(item))
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings())
    scp.start()
    yield scp
    scp.stop()
    store.close()


def test_echoscu(scp):
    done = subprocess.run(["/usr/bin/echoscu", "-aec", "MWLBRIDGE", "127.0.0.1", str(scp.port)],
                          env=DCMTK_ENV, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_station_and_date(scp, findscu):
    result = findscu(scp.port, [*RETURN_KEYS, SPS + "ScheduledStationAETitle=CT01",
                                SPS + "ScheduledProcedureStepStartDate=20261128"])
    assert result.returncode == 0, result.log
    assert "Final Find Response (Success)" in result.log
    assert result.accessions == ["A1", "A2"]  # A6 is COMPLETED, hidden
    first = result.answers[0]
    assert first.PatientName == "Müller^Hans"
    assert first.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "080000"


@pytest.mark.parametrize(("dates", "expected"), [
    ("20261128-20261129", ["A1", "A2", "A3", "A4"]),
    ("20261129-", ["A4", "A7", "A5"]),
    ("-20261128", ["A1", "A2", "A3"]),
])
def test_date_ranges(scp, findscu, dates, expected):
    result = findscu(scp.port, [*RETURN_KEYS, SPS + "ScheduledProcedureStepStartDate=" + dates])
    assert result.accessions == expected


def test_a_failed_query_is_not_an_empty_answer(scp, findscu):
    # findscu exits 0 and writes no answer either way: only the final status tells them apart.
    bad = [*RETURN_KEYS, SPS + "ScheduledProcedureStepStartDate=2026"]
    with pytest.raises(AssertionError, match=r"ended with 'Failed: UnableToProcess', "
                                             r"expected 'Success'"):
        findscu(scp.port, bad)
    failed = findscu(scp.port, bad, status="Failed: UnableToProcess")
    assert failed.returncode == 0 and failed.answers == []
    empty = findscu(scp.port, [*RETURN_KEYS, "PatientID=NOBODY"])
    assert empty.status == "Success" and empty.answers == []


def test_date_and_time_form_one_range(scp, findscu):
    # From 28 Nov 09:00 to 29 Nov 09:00, not "09:00 on either day".
    result = findscu(scp.port, [*RETURN_KEYS,
                                SPS + "ScheduledProcedureStepStartDate=20261128-20261129",
                                SPS + "ScheduledProcedureStepStartTime=0900-0900"])
    assert result.accessions == ["A2", "A3", "A4"]


def test_time_range_alone(scp, findscu):
    result = findscu(scp.port, [*RETURN_KEYS, SPS + "ScheduledProcedureStepStartTime=0700-0800"])
    assert result.accessions == ["A1", "A4", "A7"]


@pytest.mark.parametrize("pattern", ["mül*", "MUL*", "m?ller^*"])
def test_wildcard_name_ignores_case_and_accents(scp, findscu, pattern):
    result = findscu(scp.port, [*RETURN_KEYS, "PatientName=" + pattern])
    assert result.accessions == ["A1", "A5"]
    assert [str(a.PatientName) for a in result.answers] == ["Müller^Hans", "MÜLLER^Otto"]


def test_exact_name_ignores_case_and_accents(scp, findscu):
    result = findscu(scp.port, [*RETURN_KEYS, "PatientName=muller^hans"])
    assert result.accessions == ["A1"]


@pytest.mark.parametrize(("key", "expected"), [
    ("PatientID=P3", ["A3"]),
    ("AccessionNumber=A4", ["A4"]),
    ("IssuerOfPatientID=OTHER", []),
    (SPS + "Modality=MR", ["A3"]),
    (SPS + "ScheduledStationAETitle=CT0*", ["A1", "A2", "A4", "A7", "A5"]),
    (f"StudyInstanceUID={UID}1\\{UID}3", ["A1", "A3"]),
    ("RequestedProcedureID=RA2", ["A2"]),
    (SPS + "ScheduledProcedureStepID=SA7", ["A7"]),
])
def test_single_keys(scp, findscu, key, expected):
    result = findscu(scp.port, [*RETURN_KEYS, key])
    assert result.accessions == expected


def test_hidden_status_only_when_asked(scp, findscu):
    assert "A6" not in findscu(scp.port, RETURN_KEYS).accessions
    result = findscu(scp.port, [*RETURN_KEYS, SPS + "ScheduledProcedureStepStatus=COMPLETED"])
    assert result.accessions == ["A6"]


def test_non_indexed_key_is_post_filtered(scp, findscu):
    result = findscu(scp.port, [*RETURN_KEYS, "RequestedProcedureDescription=CT*",
                                SPS + "Modality=CT", "PatientID=P2"])
    assert result.accessions == ["A2"]
    result = findscu(scp.port, [*RETURN_KEYS, "RequestedProcedureDescription=MR*"])
    assert result.accessions == []


def test_non_ascii_name_reads_back_in_utf8(scp, findscu):
    result = findscu(scp.port, [*RETURN_KEYS, "PatientID=P7"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName == "山田^太郎"


def test_unknown_and_missing_keys_are_answered_empty(scp, findscu):
    result = findscu(scp.port, [
        "PatientID=P1", "PatientBirthDate", "PatientSex", "(0010,1000)",
        SPS + "ScheduledPerformingPhysicianName", SPS + "Modality",
        "(0009,0010)=ACME", "(0009,1001)"])
    (answer,) = result.answers
    assert "WarningUnsupportedOptionalKeys" in result.log  # 0xFF01: private keys dropped
    keywords = {e.keyword for e in answer}
    assert keywords == {"SpecificCharacterSet", "PatientID", "PatientBirthDate", "PatientSex",
                        "OtherPatientIDs", "ScheduledProcedureStepSequence"}
    assert answer["PatientBirthDate"].is_empty and answer["PatientSex"].is_empty
    sps = answer.ScheduledProcedureStepSequence[0]
    assert sps.Modality == "CT"
    assert sps["ScheduledPerformingPhysicianName"].is_empty
    assert len(sps) == 2


def test_empty_sequence_key_returns_every_attribute_of_the_sps_item(scp, findscu):
    result = findscu(scp.port, ["PatientID=P1", "(0040,0100)"])
    (answer,) = result.answers
    sps = answer.ScheduledProcedureStepSequence[0]
    assert sps.ScheduledProcedureStepDescription == "Schädel nativ"
    assert sps.ScheduledProcedureStepID == "SA1"
    # wlmscpfs's 16 step attributes (bridge.worklist.answer.EXPANDED_SEQUENCES), the
    # ones not stored empty (PS3.4 C.2.2.2.6)
    assert len(sps) == 16
    assert sps.PreMedication == ""


def test_max_answers_stops_with_success(new_store, start_scp, findscu, item):
    scp = start_scp(new_store(standard_items(item)), worklist=WorklistSettings(max_answers=2))
    result = findscu(scp.port, RETURN_KEYS)
    assert result.accessions == ["A1", "A2"]
    assert "Final Find Response (Success)" in result.log
    filtered = findscu(scp.port, [*RETURN_KEYS, "RequestedProcedureDescription=CT*"])
    assert filtered.accessions == ["A1", "A2"]


def test_latin1_answers(new_store, start_scp, findscu, item):
    store = new_store(standard_items(item))
    scp = start_scp(store, dicom=DicomSettings(port=0, character_set="ISO_IR 100"))
    result = findscu(scp.port, ["PatientName", "PatientID=P1"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert answer.PatientName == "Müller^Hans"
    # A name Latin-1 cannot hold is answered in UTF-8 rather than as "??".
    result = findscu(scp.port, ["PatientName", "PatientID=P7"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName == "山田^太郎"


def test_query_in_latin1_is_decoded(scp, tmp_path):
    # A query dataset written with dump2dcm in ISO_IR 100, sent as a file.
    dump = tmp_path / "query.dump"
    dump.write_bytes(
        b"(0008,0005) CS [ISO_IR 100]\n"
        b"(0010,0010) PN [M\xfcl*]\n"
        b"(0008,0050) SH []\n")
    query = tmp_path / "query.dcm"
    subprocess.run(["/usr/bin/dump2dcm", "--write-dataset", str(dump), str(query)],
                   check=True, capture_output=True, timeout=30)
    out = tmp_path / "out"
    out.mkdir()
    done = subprocess.run(["/usr/bin/findscu", "-v", "-W", "-X", "-od", str(out),
                           "-aec", "MWLBRIDGE", "127.0.0.1", str(scp.port), str(query)],
                          env=DCMTK_ENV, capture_output=True, timeout=60, check=False)
    assert done.returncode == 0
    check_status((done.stdout + done.stderr).decode("utf-8", "replace"))
    answers = [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]
    assert [a.AccessionNumber for a in answers] == ["A1", "A5"]
