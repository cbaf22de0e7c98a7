"""An unscheduled MPPS (one that matched no worklist item) reported as if it were an order."""

from __future__ import annotations

from pydicom import Dataset


def order_from_mpps(mpps: Dataset) -> Dataset:
    """The order an unscheduled MPPS stands for, made from its own attributes, so that
    the same profiles build its status message."""
    order = Dataset()
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex"):
        if keyword in mpps:
            order[keyword] = mpps[keyword]
    items = mpps.get("ScheduledStepAttributesSequence")
    first = items[0] if items else Dataset()
    for keyword in ("AccessionNumber", "RequestedProcedureID", "StudyInstanceUID",
                    "RequestedProcedureDescription", "PlacerOrderNumberImagingServiceRequest",
                    "FillerOrderNumberImagingServiceRequest"):
        if keyword in first:
            order[keyword] = first[keyword]
    if mpps.get("ProcedureCodeSequence"):
        order.RequestedProcedureCodeSequence = mpps.ProcedureCodeSequence
    sps = Dataset()
    sps.Modality = _text(mpps, "Modality")
    sps.ScheduledStationAETitle = _text(mpps, "PerformedStationAETitle")
    sps.ScheduledProcedureStepID = _text(first, "ScheduledProcedureStepID")
    sps.ScheduledProcedureStepStartDate = _text(mpps, "PerformedProcedureStepStartDate")
    sps.ScheduledProcedureStepStartTime = _text(mpps, "PerformedProcedureStepStartTime")
    order.ScheduledProcedureStepSequence = [sps]
    return order


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()
