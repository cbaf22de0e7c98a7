"""SIU scheduling messages (issue 14): S12 creates the step, S13/S14 change it, S15/S17
cancel it, S26 (no-show) discontinues it. Each goes over a real MLLP connection
(``mwl-bridge send``), the worklist is read back with DCMTK's findscu."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import FIXTURES

SPS = "ScheduledProcedureStepSequence[0]"
KEYS = ("AccessionNumber=FORD90001", "PatientID", "PatientName", "RequestedProcedureID",
        "ReasonForTheRequestedProcedure", f"{SPS}.ScheduledStationAETitle",
        f"{SPS}.ScheduledProcedureStepStartDate", f"{SPS}.ScheduledProcedureStepStartTime",
        f"{SPS}.Modality", f"{SPS}.ScheduledProcedureStepID",
        f"{SPS}.ScheduledPerformingPhysicianName")


def _send(daemon, *names: str) -> None:
    res = daemon.send(*(FIXTURES / n for n in names))
    assert res.returncode == 0 and res.stdout.count(": AA") == len(names), (
        res.stdout + res.stderr)


def _step(daemon, tmp_path, status: str = ""):
    keys = (*KEYS, f"{SPS}.ScheduledProcedureStepStatus" + (f"={status}" if status else ""))
    answers = daemon.findscu(tmp_path, *keys)
    assert len(answers) == 1, answers
    return answers[0], answers[0].ScheduledProcedureStepSequence[0]


def test_s12_creates_the_step_s13_reschedules_and_s14_modifies_it(daemon, tmp_path):
    _send(daemon, "siu-s12-new.hl7")
    item, step = _step(daemon, tmp_path)
    assert (item.PatientID, str(item.PatientName)) == ("SIU10001", "NAKAMURA^KEN")
    assert item.RequestedProcedureID == "FORD90001" and step.ScheduledProcedureStepID == "FAPT90001"
    assert (step.ScheduledStationAETitle, step.Modality) == ("MR01", "MR")
    assert (step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStartTime) == (
        "20261201", "090000")
    assert str(step.ScheduledPerformingPhysicianName) == "TECH^TOM"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"

    _send(daemon, "siu-s13-reschedule.hl7")  # another day and scanner
    _, step = _step(daemon, tmp_path)
    assert (step.ScheduledStationAETitle, step.ScheduledProcedureStepStartDate,
            step.ScheduledProcedureStepStartTime) == ("MR02", "20261202", "140000")

    _send(daemon, "siu-s14-modify.hl7")
    item, step = _step(daemon, tmp_path)
    assert item.ReasonForTheRequestedProcedure == "Tumour follow-up, contrast"
    assert step.ScheduledProcedureStepStatus == "SCHEDULED"


@pytest.mark.parametrize(("fixture", "status"), [("siu-s15-cancel.hl7", "CANCELED"),
                                                  ("siu-s17-delete.hl7", "CANCELED"),
                                                  ("siu-s26-noshow.hl7", "DISCONTINUED")])
def test_cancel_delete_and_no_show_end_the_step(daemon, tmp_path, fixture, status):
    _send(daemon, "siu-s12-new.hl7", fixture)
    # hidden from the consoles' worklist, found when asked for by status
    assert daemon.findscu(tmp_path, *KEYS) == []
    _, step = _step(daemon, tmp_path, status)
    assert step.ScheduledProcedureStepStatus == status
