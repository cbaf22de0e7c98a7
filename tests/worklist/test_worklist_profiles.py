"""Per-AE behaviour, seen from DCMTK's findscu: character sets, station default, restrictions."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.filewriter import dcmwrite

from bridge.worklist.settings import DicomPeer, DicomSettings, WorklistSettings
from tests.findstatus import SUCCESS, check_status

from .conftest import DCMTK_ENV, FINDSCU, FindResult

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

SPS = "ScheduledProcedureStepSequence[0]."
KEYS = ["PatientName", "PatientID", "AccessionNumber", SPS + "ScheduledStationAETitle",
        SPS + "Modality"]


def findscu(port: int, out: Path, calling: str, keys: list[str],
            query: Path | None = None, status: str = SUCCESS) -> FindResult:
    """One ``findscu -W`` as ``calling``; fails unless the final status is ``status``."""
    out.mkdir(parents=True)
    args = [FINDSCU, "-v", "-W", "-X", "-od", str(out), "-aet", calling, "-aec", "MWLBRIDGE"]
    for key in keys:
        args += ["-k", key]
    args += ["127.0.0.1", str(port)]
    if query is not None:
        args.append(str(query))
    done = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=60, check=False)
    answers = [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]
    log = (done.stdout + done.stderr).decode("utf-8", "replace")
    check_status(log, status)
    return FindResult(done.returncode, answers, log)


@pytest.fixture
def items(item: Callable[..., Dataset]) -> list[Dataset]:
    rows = [
        ("Müller^Hans", "P1", "A1", "CT01", "CT", "080000"),
        ("Łukasz^Øster", "P2", "A2", "CT01", "CT", "090000"),
        ("山田^太郎", "P3", "A3", "CT02", "CT", "100000"),
        ("Smith^Anna", "P4", "A4", "MR01", "MR", "110000"),
    ]
    made = [item(n, pid, acc, f"1.2.3.{i}", st, mod, "20261128", t)
            for i, (n, pid, acc, st, mod, t) in enumerate(rows)]
    made[3].WorklistLabel = "EAST"
    return made


@pytest.fixture
def scp_for(new_store, start_scp, items):
    def start(*, worklist: WorklistSettings | None = None, **dicom: object):
        return start_scp(new_store(items), dicom=DicomSettings(port=0, **dicom),
                         worklist=worklist)
    return start


def test_each_ae_gets_its_own_character_set(scp_for, tmp_path):
    scp = scp_for(known_aes={"OLDCT": DicomPeer(character_set="ISO_IR 100")})
    latin = findscu(scp.port, tmp_path / "a", "OLDCT", [*KEYS, "PatientID=P1"])
    (answer,) = latin.answers
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert answer.PatientName == "Müller^Hans"
    default = findscu(scp.port, tmp_path / "b", "NEWCT", [*KEYS, "PatientID=P1"])
    assert default.answers[0].SpecificCharacterSet == "ISO_IR 192"


def test_unencodable_name_is_answered_in_utf8_and_logged(scp_for, tmp_path, caplog):
    scp = scp_for(known_aes={"OLDCT": DicomPeer(character_set="ISO_IR 100")})
    with caplog.at_level(logging.WARNING):
        result = findscu(scp.port, tmp_path / "a", "OLDCT", [*KEYS, "PatientID=P2"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 192"
    assert answer.PatientName == "Łukasz^Øster"
    assert "(0010,0010) cannot be encoded in ISO_IR 100" in caplog.text
    assert "Łukasz" not in caplog.text  # never the value


def test_unencodable_name_is_transliterated_when_configured(scp_for, tmp_path, caplog):
    scp = scp_for(known_aes={"OLDCT": DicomPeer(character_set="ISO_IR 100",
                                                unencodable="transliterate")})
    with caplog.at_level(logging.WARNING):
        result = findscu(scp.port, tmp_path / "a", "OLDCT", [*KEYS, "PatientID=P2"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 100"
    assert answer.PatientName == "Lukasz^Øster"  # Ø exists in Latin-1 and stays
    assert "?" not in str(answer.PatientName)
    assert "transliterated" in caplog.text


def test_ascii_only_console_gets_ascii_transliteration(scp_for, tmp_path):
    scp = scp_for(known_aes={"ASCII": DicomPeer(character_set="ISO_IR 6",
                                                unencodable="transliterate")})
    result = findscu(scp.port, tmp_path / "a", "ASCII", [*KEYS, "PatientID=P1"])
    (answer,) = result.answers
    assert answer.SpecificCharacterSet == "ISO_IR 6"
    assert answer.PatientName == "Muller^Hans"


def test_japanese_console_gets_iso_2022_ir_87(scp_for, tmp_path):
    scp = scp_for(known_aes={"JPCT": DicomPeer(character_set="\\ISO 2022 IR 87")})
    result = findscu(scp.port, tmp_path / "a", "JPCT", [*KEYS, "PatientID=P3"])
    (answer,) = result.answers
    assert list(answer.SpecificCharacterSet) == ["", "ISO 2022 IR 87"]
    assert str(answer.PatientName) == "山田^太郎"
    # On the wire: JIS X 0208 behind its ISO 2022 escape sequence, not UTF-8.
    (written,) = (tmp_path / "a").glob("rsp*.dcm")
    assert "山田^太郎".encode("iso2022_jp") in written.read_bytes()
    assert "山田".encode() not in written.read_bytes()


def test_query_in_iso_2022_ir_87_matches(scp_for, tmp_path):
    scp = scp_for()
    query = Dataset()
    query.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    query.PatientName = "山田*"
    query.PatientID = ""
    path = tmp_path / "q.dcm"
    dcmwrite(path, query, implicit_vr=False, little_endian=True)
    assert b"\x1b$B" in path.read_bytes()  # really sent as ISO 2022 JIS X 0208
    result = findscu(scp.port, tmp_path / "a", "JPCT", [], query=path)
    assert [a.PatientID for a in result.answers] == ["P3"]


def test_undeclared_utf8_query_is_read_as_utf8(scp_for, tmp_path, caplog):
    scp = scp_for()
    dump = tmp_path / "q.dump"
    dump.write_bytes("(0010,0010) PN [Mül*]\n(0010,0020) LO []\n".encode())
    path = tmp_path / "q.dcm"
    subprocess.run(["/usr/bin/dump2dcm", "--write-dataset", str(dump), str(path)],
                   check=True, capture_output=True, timeout=30)
    with caplog.at_level(logging.INFO):
        result = findscu(scp.port, tmp_path / "a", "CT01", [], query=path)
    assert [a.PatientID for a in result.answers] == ["P1"]
    assert "no Specific Character Set; read as ISO_IR 192" in caplog.text


def test_undeclared_latin1_query_falls_back_to_the_aes_set(scp_for, tmp_path):
    scp = scp_for(known_aes={"OLDCT": DicomPeer(character_set="ISO_IR 100")})
    dump = tmp_path / "q.dump"
    dump.write_bytes(b"(0010,0010) PN [M\xfcl*]\n(0010,0020) LO []\n")
    path = tmp_path / "q.dcm"
    subprocess.run(["/usr/bin/dump2dcm", "--write-dataset", str(dump), str(path)],
                   check=True, capture_output=True, timeout=30)
    result = findscu(scp.port, tmp_path / "a", "OLDCT", [], query=path)
    assert [a.PatientID for a in result.answers] == ["P1"]


@pytest.mark.parametrize(("station", "expected"), [
    ("", ["A1", "A2"]), ("*", ["A1", "A2"]), ("CT02", ["A3"]), ("CT0?", ["A1", "A2", "A3"])])
def test_calling_ae_stands_in_for_an_empty_station(scp_for, tmp_path, station, expected):
    scp = scp_for(known_aes={"CT01": DicomPeer(station_from_calling_ae=True)})
    result = findscu(scp.port, tmp_path / "a", "CT01",
                     [*KEYS, f"{SPS}ScheduledStationAETitle={station}"])
    assert result.accessions == expected


def test_without_the_option_an_empty_station_matches_all(scp_for, tmp_path):
    scp = scp_for(known_aes={"CT01": DicomPeer()})
    result = findscu(scp.port, tmp_path / "a", "CT01", [*KEYS, f"{SPS}ScheduledStationAETitle="])
    assert result.accessions == ["A1", "A2", "A3", "A4"]


def test_restrictions_limit_what_an_ae_sees(scp_for, tmp_path):
    scp = scp_for(known_aes={
        "CTONLY": DicomPeer(modalities=["CT"], stations=["CT01", "CT02"]),
        "ROOM1": DicomPeer(stations=["CT01"]),
        "EAST": DicomPeer(worklist_labels=["EAST"]),
    })
    assert findscu(scp.port, tmp_path / "a", "CTONLY", KEYS).accessions == ["A1", "A2", "A3"]
    assert findscu(scp.port, tmp_path / "b", "ROOM1", KEYS).accessions == ["A1", "A2"]
    # A restriction narrows, never widens, what the query asks for.
    assert findscu(scp.port, tmp_path / "c", "ROOM1",
                   [*KEYS, f"{SPS}ScheduledStationAETitle=CT02"]).accessions == []
    assert findscu(scp.port, tmp_path / "d", "EAST", KEYS).accessions == ["A4"]
    assert findscu(scp.port, tmp_path / "e", "OTHER", KEYS).accessions == ["A1", "A2", "A3",
                                                                            "A4"]


def test_exact_name_matching_is_configurable(scp_for, tmp_path):
    scp = scp_for(worklist=WorklistSettings(patient_name_matching="exact"))
    assert findscu(scp.port, tmp_path / "a", "C", [*KEYS, "PatientName=mül*"]).accessions == []
    assert findscu(scp.port, tmp_path / "b", "C",
                   [*KEYS, "PatientName=Mül*"]).accessions == ["A1"]
