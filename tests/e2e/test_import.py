"""Migrating from wlmscpfs or Orthanc with ``mwl-bridge import``, end to end, beside a
running daemon: a folder of .wl files made by DCMTK's dump2dcm (as sites write them)
and an HL7 batch file; DCMTK's findscu then finds the items with the right
attributes; rejects land in the dead-letter file with their reasons; a corrupt file
and a broken batch are named and do not stop the rest."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.e2e.conftest import DCMTK, FIXTURES, RunningDaemon
from tests.e2e.wldump import DUMP2DCM, dump2dcm, wl_dump

pytestmark = pytest.mark.skipif(not (DCMTK / "findscu").exists() or not DUMP2DCM.exists(),
                                reason="DCMTK not installed")

SPS = "ScheduledProcedureStepSequence[0]"


def _hl7(name: str) -> bytes:
    return (FIXTURES / name).read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _worklists(root: Path) -> Path:
    """wlmscpfs's layout: one folder per AE title, a lockfile, the .wl files."""
    folder = root / "wlistdb" / "MWLSCP"
    dump2dcm(wl_dump(1, name="Müller^Jürgen"), folder / "wl_0001.wl")
    dump2dcm(wl_dump(2, station="MR02"), folder / "wl_0002.wl", "+ti")  # implicit VR
    dump2dcm(wl_dump(3, status="", charset="ISO_IR 100"), folder / "wl_0003.wl", "-e")
    # The accession of item 1 under another patient: the normal check says no.
    dump2dcm(wl_dump(4, accession="WLACC0001"), folder / "wl_0004.wl")
    (folder / "wl_0005.wl").write_bytes(
        (folder / "wl_0001.wl").read_bytes()[:300])  # cut short
    (folder / "lockfile").touch()
    return root / "wlistdb"


def _batch(root: Path) -> Path:
    batch = root / "ris-export.hl7"
    batch.write_bytes(
        b"FHS|^~\\&|RIS|HOSP\rBHS|^~\\&|RIS|HOSP\r"
        + _hl7("orm-o01-ihe-ct.hl7")
        + _hl7("orm-missing-pid3.hl7")
        + _hl7("orm-o01-latin1-mr.hl7").replace(b"\rPV1|", b"\rPV1 is broken\rPV1|", 1)
        + _hl7("lifecycle-nw.hl7"))  # no BTS, no FTS: the export was cut short
    return batch


def test_import_beside_the_daemon_then_findscu_finds_the_items(
        daemon: RunningDaemon, tmp_path: Path) -> None:
    dead = tmp_path / "rejects.jsonl"
    res = daemon.cli("import", "--no-progress", "--dead-letters", str(dead),
                     str(_worklists(tmp_path)), str(_batch(tmp_path)), timeout=120)
    out = res.stdout
    assert res.returncode == 1, res.stdout + res.stderr  # rejects: not all was loaded
    assert "5 worklist file(s): 5 item(s)" in out
    assert "  loaded     3\n" in out
    assert "       1  accession of another patient\n" in out
    assert "       1  corrupt DICOM file\n" in out
    assert "1 HL7 file(s): 4 message(s)" in out
    assert "  loaded     2\n" in out
    assert "       1  bad segment\n" in out
    assert "the batch opened by BHS on line 2 has no BTS" in out

    # The .wl items, as a modality sees them (text decoded per file, re-encoded).
    wl = daemon.findscu(tmp_path, f"{SPS}.Modality=MR", f"{SPS}.ScheduledStationAETitle",
                        f"{SPS}.ScheduledProcedureStepStartDate=20261201",
                        f"{SPS}.ScheduledProcedureStepID", f"{SPS}.ScheduledProcedureStepStatus",
                        "AccessionNumber", "PatientName", "PatientID", "StudyInstanceUID",
                        "RequestedProcedureID")
    by_acc = {str(ds.AccessionNumber): ds for ds in wl}
    assert set(by_acc) == {"WLACC0001", "WLACC0002", "WLACC0003"}
    one = by_acc["WLACC0001"]
    assert str(one.PatientName) == "Müller^Jürgen" and one.PatientID == "WLP0001"
    assert one.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.91.1"
    assert one.RequestedProcedureID == "RP1"
    assert by_acc["WLACC0002"].ScheduledProcedureStepSequence[0].ScheduledStationAETitle == \
        "MR02"
    three = by_acc["WLACC0003"].ScheduledProcedureStepSequence[0]
    assert three.ScheduledProcedureStepStatus == "SCHEDULED"  # empty in the file
    assert three.ScheduledProcedureStepID == "SPS3"

    # The HL7 orders, mapped as the daemon maps them.
    (ct,) = daemon.findscu(tmp_path, "AccessionNumber=ACC20261128001", "PatientID",
                           "PatientName", f"{SPS}.ScheduledStationAETitle")
    assert ct.PatientID == "PAT10001"
    assert ct.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT01"
    assert daemon.findscu(tmp_path, "AccessionNumber=ACC20261128901") == []

    # Every reject in the dead-letter file, with its reason, private.
    assert stat.S_IMODE(dead.stat().st_mode) == 0o600
    rejects = [json.loads(line) for line in dead.read_text(encoding="utf-8").splitlines()]
    reasons = {r["kind"]: r for r in rejects}
    assert len(rejects) == 4
    assert reasons["corrupt DICOM file"]["source"].endswith("MWLSCP/wl_0005.wl")
    assert "WLACC0001" in reasons["accession of another patient"]["reason"]
    assert reasons["bad segment"]["message"] == 3
    assert "'PV1 is broken'" in reasons["bad segment"]["reason"]
    missing = next(r for r in rejects if r.get("message") == 2)
    assert "AE 101" in missing["reason"] and "Patient ID missing (PID-3)" in missing["reason"]
    assert daemon.alive()
