"""The findscu -W query matrix against a fixed data set, through the daemon.

Every matching kind of PS3.4 C.2.2.2 that the Modality Worklist model uses,
each with its expected answers in the SCP's order (SPS start, then insertion):
single value, universal, wildcards (on names: case and accents ignored),
list of UIDs, date and time ranges (closed and open), date+time combined,
sequence matching with non-indexed keys, a query in ISO 2022 IR 87, the
answer cap (worklist.max_answers) and C-CANCEL.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from bridge.store.sqlite import SqliteStore
from tests.findstatus import SUCCESS, check_status, final_status

from .conftest import DCMTK, dcmtk_env, start_daemon, stop_daemon, write_config

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

UID = "1.2.826.0.1.3680043.10.77."
SPS = "ScheduledProcedureStepSequence[0]."
CAP = 50
# accession, name, patient ID, station, modality, date, time, status, performing physician,
# SPS description, requested procedure description, birth date
ITEMS = [
    ("A01", "Müller^Hans", "P01", "CT01", "CT", "20261128", "080000", "SCHEDULED",
     "House^Greg", "CT Kopf nativ", "CT Kopf", "19620704"),
    ("A02", "MULLER^Otto", "P02", "CT01", "CT", "20261128", "093000", "SCHEDULED",
     "Wilson^James", "CT Thorax mit KM", "CT Thorax", "19750312"),
    ("A03", "Mueller^Eva", "P03", "CT02", "CT", "20261128", "141500", "SCHEDULED",
     "House^Greg", "CT Knie", "CT Knie rechts", "19881224"),
    ("A04", "Smith^Anna", "P04", "MR01", "MR", "20261128", "100000", "SCHEDULED",
     "House^Greg", "MRT Knie", "MRT Knie links", "19790101"),
    ("A05", "Ñúñez^José", "P05", "MR01", "MR", "20261129", "073000", "SCHEDULED",
     "Cuddy^Lisa", "MRT Schädel", "MRT Kopf", "20010530"),
    ("A06", "Doe^John", "P06", "CT01", "CT", "20261127", "230000", "SCHEDULED",
     "Wilson^James", "CT Abdomen", "CT Abdomen", "19550815"),
    ("A07", "山田^太郎", "P07", "CT02", "CT", "20261130", "120000", "SCHEDULED",
     "Cuddy^Lisa", "CT Kopf", "CT Kopf", "19700220"),
    ("A08", "Done^Dan", "P08", "CT01", "CT", "20261128", "110000", "COMPLETED",
     "House^Greg", "CT Kopf", "CT Kopf", "19600101"),
    ("A09", "Nakamura^Yuki", "P09", "US01", "US", "20261201", "060000", "SCHEDULED",
     "Chase^Robert", "US Abdomen", "US Abdomen", "19991111"),
]
BULK = 60  # station BULK, more than the cap


def item(acc: str, name: str, pid: str, station: str, modality: str, date: str, tm: str,
         status: str, performer: str, sps_description: str, rp_description: str,
         birth: str) -> Dataset:
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.Modality = modality
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = tm
    sps.ScheduledProcedureStepID = "S" + acc
    sps.ScheduledProcedureStepDescription = sps_description
    sps.ScheduledProcedureStepStatus = status
    sps.ScheduledPerformingPhysicianName = performer
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = pid
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = birth
    ds.PatientSex = "O"
    ds.AccessionNumber = acc
    ds.StudyInstanceUID = UID + str(int(acc[1:]) if acc[0] == "A" else 1000 + int(acc[1:]))
    ds.RequestedProcedureID = "R" + acc
    ds.RequestedProcedureDescription = rp_description
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def dataset() -> list[Dataset]:
    items = [item(*row) for row in reversed(ITEMS)]  # stored out of order on purpose
    items += [item(f"B{i:03}", f"Bulk^{i:03}", f"PB{i:03}", "BULK", "CR", "20261205",
                   f"{7 + i // 12:02}{(i % 12) * 5:02}00", "SCHEDULED", "Foreman^Eric",
                   "CR Thorax", "CR Thorax", "19800101") for i in range(BULK)]
    return items


@pytest.fixture(scope="module")
def matrix_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("matrix")
    (tmp / "data").mkdir()
    store = SqliteStore(tmp / "data" / "bridge.sqlite3")
    store.migrate()
    store.upsert_steps(dataset())
    store.close()
    d = start_daemon(write_config(tmp, f"worklist:\n  max_answers: {CAP}\n"), tmp / "data")
    yield d
    assert stop_daemon(d) == 0


def findscu(d, tmp: Path, keys: list[str], extra: tuple[str, ...] = (),
            query: Path | None = None, status: str = SUCCESS) -> tuple[list[Dataset], str]:
    """Answers and log of one findscu; fails unless the final status is ``status``
    (findscu exits 0 even when the query failed)."""
    out = tmp / f"rsp-{time.monotonic_ns()}"
    out.mkdir()
    args = [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aec", d.ae_title,
            *extra]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(d.dicom_port)]
    if query is not None:
        args.append(str(query))
    done = subprocess.run(args, capture_output=True, timeout=60, env=dcmtk_env())
    log = (done.stdout + done.stderr).decode("utf-8", "replace")
    assert done.returncode == 0, log
    check_status(log, status)
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))], log


RETURN = ["PatientName", "AccessionNumber"]
MATRIX = [
    # single value matching
    ("single PatientID", ["PatientID=P04"], ["A04"]),
    ("single AccessionNumber", ["AccessionNumber=A05"], ["A05"]),
    ("single Modality in the SPS", [SPS + "Modality=MR"], ["A04", "A05"]),
    ("single station", [SPS + "ScheduledStationAETitle=CT02"], ["A03", "A07"]),
    ("single value matches nothing", ["PatientID=P99"], []),
    ("hidden status only when asked", [SPS + "ScheduledProcedureStepStatus=COMPLETED"],
     ["A08"]),
    # universal matching
    ("universal empty and * name", ["PatientName=*", SPS + "Modality=MR",
                                    SPS + "ScheduledStationAETitle="], ["A04", "A05"]),
    # wildcards; names ignore case and accents
    ("name prefix, accents folded", ["PatientName=mül*"], ["A01", "A02"]),
    ("name ? wildcard", ["PatientName=M?LLER^*"], ["A01", "A02"]),
    ("name inner wildcards, accents", ["PatientName=*Z^jos?"], ["A05"]),
    ("name exact, case folded", ["PatientName=MUELLER^EVA"], ["A03"]),
    ("station wildcard", [SPS + "ScheduledStationAETitle=CT0?"],
     ["A06", "A01", "A02", "A03", "A07"]),
    ("wildcard on a non-indexed key", ["RequestedProcedureDescription=*Knie*"],
     ["A04", "A03"]),
    # list of UID matching
    ("list of UIDs", [f"StudyInstanceUID={UID}1\\{UID}4\\{UID}99"], ["A01", "A04"]),
    # date, time, date+time
    ("single date", [SPS + "ScheduledProcedureStepStartDate=20261128"],
     ["A01", "A02", "A04", "A03"]),
    ("closed date range", [SPS + "ScheduledProcedureStepStartDate=20261128-20261129"],
     ["A01", "A02", "A04", "A03", "A05"]),
    ("date range open below", [SPS + "ScheduledProcedureStepStartDate=-20261128",
                               SPS + "Modality=CT"], ["A06", "A01", "A02", "A03"]),
    ("date range open above", [SPS + "ScheduledProcedureStepStartDate=20261129-",
                               SPS + "ScheduledStationAETitle=CT0*"], ["A07"]),
    ("closed time range", [SPS + "ScheduledProcedureStepStartTime=0900-1200",
                           SPS + "Modality=CT"], ["A02", "A07"]),
    ("time range open above", [SPS + "ScheduledProcedureStepStartTime=1400-",
                               SPS + "Modality=CT"], ["A06", "A03"]),
    ("date and time form one range (overnight)",
     [SPS + "ScheduledProcedureStepStartDate=20261127-20261128",
      SPS + "ScheduledProcedureStepStartTime=2200-0900"], ["A06", "A01"]),
    ("non-indexed date range", ["PatientBirthDate=19700101-19791231"],
     ["A02", "A04", "A07"]),
    # sequence matching: both keys in the same SPS item, one not indexed
    ("sequence: modality and performer in one item",
     [SPS + "Modality=CT", SPS + "ScheduledPerformingPhysicianName=house*"], ["A01", "A03"]),
    ("sequence: description wildcard", [SPS + "ScheduledProcedureStepDescription=*KM*"],
     ["A02"]),
]


@pytest.mark.parametrize(("keys", "expected"), [pytest.param(k, e, id=i) for i, k, e in MATRIX])
def test_matrix(matrix_daemon, tmp_path, keys, expected):
    answers, log = findscu(matrix_daemon, tmp_path, [*RETURN, *keys])
    assert [str(a.AccessionNumber) for a in answers] == expected
    # Every row, the empty ones too: an empty answer is not a failed query.
    assert final_status(log) == SUCCESS


def test_a_refused_query_is_not_an_empty_answer(matrix_daemon, tmp_path):
    answers, log = findscu(matrix_daemon, tmp_path,
                           [*RETURN, SPS + "ScheduledProcedureStepStartDate=2026"],
                           status="Failed: UnableToProcess")
    assert answers == []
    with pytest.raises(AssertionError, match=r"ended with 'Failed: UnableToProcess'"):
        check_status(log)


def test_query_in_iso_2022_ir_87(matrix_daemon, tmp_path):
    query = Dataset()
    query.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    query.PatientName = "山田*"
    query.AccessionNumber = ""
    path = tmp_path / "jp.dcm"
    dcmwrite(path, query, implicit_vr=False, little_endian=True)
    assert b"\x1b$B" in path.read_bytes()
    answers, _ = findscu(matrix_daemon, tmp_path, [], query=path)
    assert [str(a.AccessionNumber) for a in answers] == ["A07"]
    assert str(answers[0].PatientName) == "山田^太郎"


def test_answer_cap_is_exact_and_ends_in_success(matrix_daemon, tmp_path):
    answers, log = findscu(matrix_daemon, tmp_path,
                           [*RETURN, SPS + "ScheduledStationAETitle=BULK"])
    assert [str(a.AccessionNumber) for a in answers] == [f"B{i:03}" for i in range(CAP)]
    assert "Final Find Response (Success)" in log


MANY = 3000  # station MANY, no cap: more answers than the sockets' buffers hold


@pytest.fixture(scope="module")
def cancel_daemon(tmp_path_factory):
    """Enough answers that the SCP is still sending when findscu's C-CANCEL arrives,
    however fast it assembles them (pre-encoded answers take microseconds)."""
    tmp = tmp_path_factory.mktemp("cancel")
    (tmp / "data").mkdir()
    store = SqliteStore(tmp / "data" / "bridge.sqlite3")
    store.migrate()
    store.upsert_steps([item(f"M{i:04}", f"Many^{i:04}", f"PM{i:04}", "MANY", "CR",
                             "20261205", f"{7 + i // 600:02}{(i // 10) % 60:02}{i % 10:02}",
                             "SCHEDULED", "Foreman^Eric", "CR Thorax", "CR Thorax",
                             "19800101") for i in range(MANY)])
    store.close()
    d = start_daemon(write_config(tmp, "worklist:\n  max_answers: 0\n"), tmp / "data")
    yield d
    assert stop_daemon(d) == 0


def test_cancel_stops_the_answers(cancel_daemon, tmp_path):
    answers, log = findscu(cancel_daemon, tmp_path,
                           [*RETURN, SPS + "ScheduledStationAETitle=MANY"],
                           extra=("--cancel", "3"),
                           status="Cancel: MatchingTerminatedDueToCancelRequest")
    assert "Sending Cancel Request" in log
    assert "Final Find Response (Cancel: MatchingTerminatedDueToCancelRequest)" in log
    assert 3 <= len(answers) < MANY
    # The answers that did come are the first ones, in order.
    assert [str(a.AccessionNumber) for a in answers] == [f"M{i:04}"
                                                          for i in range(len(answers))]
