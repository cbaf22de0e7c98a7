"""The ADT events RIS send besides A08/A40 (issue 14): A34/A36 merge as A40, and
A11/A13/A23/A35/A37 update the patient's demographics from their PID, each over a
real MLLP connection (``mwl-bridge send``) and read back with DCMTK's findscu."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import FIXTURES

ORDER = FIXTURES / "lifecycle-nw.hl7"  # order A: patient LC10001, GARCIA^MARIA^ELENA
ACCESSION = "AccessionNumber=ACC20261130501"


def _accepted(daemon, *names: str) -> None:
    res = daemon.send(ORDER, *(FIXTURES / n for n in names))
    assert res.returncode == 0 and res.stdout.count(": AA") == 1 + len(names), (
        res.stdout + res.stderr)


@pytest.mark.parametrize("fixture", ["adt-a34-merge-id.hl7", "adt-a36-merge-id-account.hl7"])
def test_a34_and_a36_merge_as_a40(daemon, tmp_path, fixture):
    _accepted(daemon, fixture)
    (answer,) = daemon.findscu(tmp_path, ACCESSION, "PatientID", "PatientName")
    assert answer.PatientID == "LC10002"  # MRG-1's items now belong to PID-3
    # and the merged-away identifier is no longer a patient of its own
    assert daemon.findscu(tmp_path, "PatientID=LC10001", "AccessionNumber") == []


@pytest.mark.parametrize("fixture", ["adt-a11-cancel-admit.hl7", "adt-a13-cancel-discharge.hl7",
                                     "adt-a23-delete-visit.hl7", "adt-a35-merge-account.hl7",
                                     "adt-a37-unlink.hl7"])
def test_visit_account_and_link_events_update_the_demographics_only(daemon, tmp_path, fixture):
    _accepted(daemon, fixture)
    (answer,) = daemon.findscu(tmp_path, ACCESSION, "PatientID", "PatientName",
                               "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus")
    assert answer.PatientID == "LC10001"  # no merge, no unlink: the same patient
    assert str(answer.PatientName).startswith("GARCIA LOPEZ^MARIA")
    # the item itself is untouched (A23 deletes visit data, not orders)
    assert answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "SCHEDULED"
