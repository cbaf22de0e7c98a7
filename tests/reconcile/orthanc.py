"""The real PACS of these tests: Orthanc (Debian package ``orthanc``, /usr/sbin/Orthanc)
on free loopback ports, with its own JSON configuration and storage folder, accepting
C-STORE from any AE (the test modality's storescu) and C-FIND from the bridge; and
small CT studies made with pydicom, sent with DCMTK storescu."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.outbound.mllp_receiver import reserve_port

ORTHANC = Path("/usr/sbin/Orthanc")
STORESCU = Path("/usr/bin/storescu")


@dataclass
class RunningOrthanc:
    proc: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    ae_title: str
    folder: Path

    def get(self, path: str) -> object:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}",
                                    timeout=10) as rsp:
            return json.loads(rsp.read())

    def log(self) -> str:
        return (self.folder / "orthanc.log").read_text(errors="replace")


@contextmanager
def orthanc(tmp: Path, *, lua: Path | None = None, stable_age_s: int = 1,
            ae_title: str = "ORTHANC", env: dict[str, str] | None = None,
            extra: dict[str, object] | None = None) -> Iterator[RunningOrthanc]:
    """Orthanc on free loopback ports; ``extra`` adds to (or overrides) its JSON config."""
    if not ORTHANC.exists():
        pytest.fail("Orthanc is not installed: apt-get install orthanc")
    folder = tmp / "orthanc"
    (folder / "storage").mkdir(parents=True)
    dicom_port, http_port = reserve_port(), reserve_port()
    config = {
        "Name": "mwl-bridge-test", "DicomAet": ae_title, "DicomPort": dicom_port,
        "HttpPort": http_port, "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
        "StorageDirectory": str(folder / "storage"), "IndexDirectory": str(folder / "storage"),
        # The modality stores and the bridge queries without being declared.
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True, "StableAge": stable_age_s, "Plugins": [],
        "LuaScripts": [str(lua)] if lua else [], "HttpTimeout": 10,
        "SaveJobs": False, "ConcurrentJobs": 1,
        **(extra or {}),
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config), encoding="utf-8")
    with (folder / "orthanc.log").open("wb") as log:
        proc = subprocess.Popen([str(ORTHANC), str(cfg)], stdout=log, stderr=log,
                                cwd=folder, env={**os.environ, **(env or {})})
    running = RunningOrthanc(proc, dicom_port, http_port, ae_title, folder)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Orthanc did not start:\n" + running.log()[-3000:])
            try:
                running.get("/system")
                break
            except OSError:
                time.sleep(0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ct_study(folder: Path, *, study_uid: str, accession: str, patient_id: str,
             patient_name: str = "DOE^JOHN", images: int = 3) -> list[Path]:
    """A small CT study (one series of ``images`` 16x16 slices) as Part 10 files."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    files = []
    for n in range(images):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.AccessionNumber = accession
        ds.PatientID = patient_id
        ds.PatientName = patient_name
        ds.StudyDate = ds.SeriesDate = "20261128"
        ds.StudyTime = "093500"
        ds.Modality = "CT"
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = n + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Rows = ds.Columns = 16
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = 0
        ds.RescaleSlope = 1
        ds.PixelData = bytes(16 * 16 * 2)
        path = folder / f"ct{n + 1}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def store_study(pacs: RunningOrthanc, files: list[Path], calling: str = "CT01") -> None:
    """The modality sends the study (DCMTK storescu); fails unless every file is stored."""
    res = subprocess.run(
        [str(STORESCU), "-aet", calling, "-aec", pacs.ae_title, "127.0.0.1",
         str(pacs.dicom_port), *map(str, files)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "TCP_NODELAY": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    stored = pacs.get("/instances")
    assert isinstance(stored, list) and len(stored) >= len(files), res.stderr
