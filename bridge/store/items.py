"""How a worklist item is serialised and which index values it yields.

Shared by every backend so that SQLite and PostgreSQL index exactly the same
values, and the store never needs the mapping to answer a query.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from pydicom import Dataset

from bridge.store.names import normalise_name


@dataclass(frozen=True, slots=True)
class IndexValues:
    station_aet: str
    modality: str
    sps_start_date: str
    sps_start_time: str
    sps_start: str
    patient_id: str
    issuer_of_patient_id: str
    patient_name_norm: str
    accession_number: str
    requested_procedure_id: str
    study_instance_uid: str
    sps_id: str
    sps_status: str
    placer_order_number: str
    filler_order_number: str


def dumps_item(item: Dataset) -> str:
    """DICOM JSON (PS3.18 F.2), keys sorted so equal items give equal text."""
    return json.dumps(item.to_json_dict(), sort_keys=True, ensure_ascii=False,
                      separators=(",", ":"))


def loads_item(text: str) -> Dataset:
    return Dataset.from_json(text)


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None or value == "":
        return ""
    if keyword == "ScheduledStationAETitle" and not isinstance(value, str):
        # VM 1-n: the first title is the indexed one (several AEs: later issue).
        value = value[0] if len(value) else ""
    return str(value).strip()


def pad_time(value: str) -> str:
    """HHMM[SS[.ffffff]] -> HHMMSS, so times compare as fixed-width strings."""
    digits = value.split(".", 1)[0].replace(":", "")
    return (digits + "000000")[:6] if digits else ""


def index_values(item: Dataset) -> IndexValues:
    sps_seq = item.get("ScheduledProcedureStepSequence")
    sps = sps_seq[0] if sps_seq else Dataset()
    date = _text(sps, "ScheduledProcedureStepStartDate")
    time = pad_time(_text(sps, "ScheduledProcedureStepStartTime"))
    return IndexValues(
        station_aet=_text(sps, "ScheduledStationAETitle"),
        modality=_text(sps, "Modality"),
        sps_start_date=date,
        sps_start_time=time,
        sps_start=(date + (time or "000000")) if date else "",
        patient_id=_text(item, "PatientID"),
        issuer_of_patient_id=_text(item, "IssuerOfPatientID"),
        patient_name_norm=normalise_name(_text(item, "PatientName")),
        accession_number=_text(item, "AccessionNumber"),
        requested_procedure_id=_text(item, "RequestedProcedureID"),
        study_instance_uid=_text(item, "StudyInstanceUID"),
        sps_id=_text(sps, "ScheduledProcedureStepID"),
        sps_status=_text(sps, "ScheduledProcedureStepStatus"),
        placer_order_number=_text(item, "PlacerOrderNumberImagingServiceRequest"),
        filler_order_number=_text(item, "FillerOrderNumberImagingServiceRequest"),
    )
