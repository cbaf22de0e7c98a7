"""Fuzz the MPPS checks (bridge/mpps/validate.py check_create, check_set,
check_final, merge) on arbitrary data sets.

Input: byte 0 picks the transfer syntax (implicit VR LE, explicit VR LE,
explicit VR BE); the rest is an N-CREATE attribute list or N-SET modification
list. It is decoded as the SCP does (pynetdicom's decode, then
``bridge.mpps.service._decoded``); a data set that does not decode is answered
0x0110 "cannot be decoded", a defined answer.

Contract checked: the checks raise MppsFailure or nothing, for the data set as
an N-CREATE, and as an N-SET on a stored IN PROGRESS MPPS (a fixed one, and
the data set itself when it passed as an N-CREATE); and what they let through
is what the service can carry on with: an N-CREATE that passes is IN PROGRESS,
can be stored (``dumps_item``) and linked (bridge/mpps/linking.py); a merged
N-SET that passes has an MPPS status (``SPS_FOR_MPPS``) and can be stored.

    python fuzz/mpps_validate.py [-max_total_time=60] [corpus dir ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from fuzz._common import PYDICOM_DECODING, Finding, decode_dataset, instrumented, main

with instrumented(__name__, extra=PYDICOM_DECODING):
    from pydicom import Dataset

    from bridge.mpps import linking
    from bridge.mpps.service import _decoded
    from bridge.mpps.validate import MppsFailure, check_create, check_final, check_set, merge
    from bridge.steps.rules import IN_PROGRESS, SPS_FOR_MPPS
    from bridge.store.items import dumps_item, loads_item


def in_progress() -> Dataset:
    """An N-CREATE as a modality sends it (also a seed: fuzz/make_seeds.py)."""
    ssa = Dataset()
    ssa.StudyInstanceUID = "1.2.840.113619.2.55.3.604688119.969.1764318615.101"
    ssa.AccessionNumber = "ACC20261128001"
    ssa.RequestedProcedureID = "RP20261128001"
    ssa.ScheduledProcedureStepID = "SPS20261128001"
    ssa.ReferencedStudySequence = []
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [ssa]
    ds.PatientName = "DOE^JOHN"
    ds.PatientID = "PAT10001"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT01"
    ds.PerformedProcedureStepStartDate = "20261128"
    ds.PerformedProcedureStepStartTime = "093512"
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.PerformedProcedureStepStatus = IN_PROGRESS
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    return ds


STORED = loads_item(dumps_item(in_progress()))


def _status(ds: Dataset) -> str:
    value = ds.get("PerformedProcedureStepStatus")
    return "" if value is None else str(value).strip()


def _as_set(stored: Dataset, changes: Dataset) -> None:
    try:
        check_set(stored, changes)
        merged = merge(stored, changes)
        check_final(merged, final_state_checks=False)
        check_final(merged, final_state_checks=True)
    except MppsFailure:
        return
    if _status(merged) not in SPS_FOR_MPPS:
        raise Finding("set-status", f"an N-SET passed with MPPS status {_status(merged)!r}")
    dumps_item(merged)


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        ds = _decoded(decode_dataset(data[0], data[1:]))
    except Exception:  # noqa: BLE001 - the SCP answers 0x0110 "cannot be decoded"
        return
    created = True
    try:
        check_create(ds)
    except MppsFailure:
        created = False
    stored = [STORED]
    if created:
        if _status(ds) != IN_PROGRESS:
            raise Finding("create-status", f"an N-CREATE passed with status {_status(ds)!r}")
        stored.append(loads_item(dumps_item(ds)))
        for item in linking.scheduled_items(ds):
            linking.link_item(item, linking.MATCH_KEYS, lambda where: [], lambda s: s)
    for record in stored:
        _as_set(record, ds)


if __name__ == "__main__":
    main(one_input)
