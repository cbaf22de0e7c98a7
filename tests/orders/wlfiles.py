"""Worklist files as DCMTK wlmscpfs and Orthanc keep them, made with pydicom for the
import tests (tests/orders/test_bulk.py, tests/app/test_import_cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

MWL_FIND = "1.2.840.10008.5.1.4.31"


def wl_item(n: int, **top: Any) -> Dataset:
    """Item ``n``: its own accession, RP ID, SPS ID and Study UID; ``top`` overrides
    top-level keywords (``None`` removes one), ``sps_<Keyword>`` those of the SPS item."""
    ds = Dataset()
    ds.AccessionNumber = f"ACC{n:06d}"
    ds.ReferringPhysicianName = "HOUSE^GREGORY^^DR"
    ds.PatientName = f"DOE^JOHN{n}"
    ds.PatientID = f"PID{n:06d}"
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.PatientWeight = "72.5"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.8.498.77.{n}"
    ds.RequestedProcedureDescription = "CT HEAD"
    ds.RequestedProcedureID = f"RP{n:06d}"
    code = Dataset()
    code.CodeValue = "CTHEAD"
    code.CodingSchemeDesignator = "99ORD"
    code.CodeMeaning = "CT HEAD"
    ds.RequestedProcedureCodeSequence = Sequence([code])
    sps = Dataset()
    sps.Modality = "CT"
    sps.ScheduledStationAETitle = "CT01"
    sps.ScheduledProcedureStepStartDate = "20261128"
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.ScheduledPerformingPhysicianName = "GREY^MEREDITH"
    sps.ScheduledProcedureStepDescription = "CT HEAD"
    sps.ScheduledProcedureStepID = f"SPS{n:06d}"
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    for key, value in top.items():
        target, keyword = (sps, key[4:]) if key.startswith("sps_") else (ds, key)
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def write_wl(path: Path, ds: Dataset, *, implicit: bool = False) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MWL_FIND)
    meta.MediaStorageSOPInstanceUID = UID(f"1.2.826.0.1.3680043.8.498.78.{abs(hash(path)) % 10**9}")
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
