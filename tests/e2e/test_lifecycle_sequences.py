"""Order lifecycles and ADT events over MLLP into the daemon, as DCMTK's findscu sees them."""

from __future__ import annotations

import pytest

from tests.orders.conftest import renamed

from .conftest import FIXTURES, start_daemon, stop_daemon, write_config

SPS = "ScheduledProcedureStepSequence[0]"
KEYS = ("PatientID", "PatientName", "PatientBirthDate", "AccessionNumber",
        f"{SPS}.ScheduledStationAETitle", f"{SPS}.ScheduledProcedureStepStartDate",
        f"{SPS}.ScheduledProcedureStepStartTime", f"{SPS}.ScheduledProcedureStepStatus",
        f"{SPS}.ScheduledProcedureStepID")


def send(daemon, *names: str, expect: str = "AA") -> None:
    res = daemon.send(*(FIXTURES / n for n in names))
    codes = [line.rsplit(": ", 1)[1] for line in res.stdout.splitlines()
             if line.startswith(str(FIXTURES))]
    assert codes == [expect] * len(names), res.stdout + res.stderr


def find(daemon, tmp, *match: str):
    return daemon.findscu(tmp, *match, *KEYS)


def sps(ds):
    s = ds.ScheduledProcedureStepSequence[0]
    return (s.ScheduledStationAETitle, s.ScheduledProcedureStepStartDate,
            s.ScheduledProcedureStepStartTime, s.ScheduledProcedureStepStatus)


def test_new_then_reschedule_then_cancel(daemon, tmp_path):
    send(daemon, "lifecycle-nw.hl7")
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501")
    assert sps(ds) == ("CT01", "20261130", "100000", "SCHEDULED")
    send(daemon, "lifecycle-xo-reschedule.hl7")
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501")
    assert sps(ds) == ("CT02", "20261201", "143000", "SCHEDULED")
    # The console's day query for the old slot no longer finds it; the new one does.
    assert find(daemon, tmp_path, f"{SPS}.ScheduledStationAETitle=CT01",
                f"{SPS}.ScheduledProcedureStepStartDate=20261130") == []
    assert len(find(daemon, tmp_path, f"{SPS}.ScheduledStationAETitle=CT02",
                    f"{SPS}.ScheduledProcedureStepStartDate=20261201")) == 1
    send(daemon, "lifecycle-ca.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130501") == []  # hidden...
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501",
                 f"{SPS}.ScheduledProcedureStepStatus=CANCELED")  # ... but kept
    assert sps(ds) == ("CT02", "20261201", "143000", "CANCELED")


def test_new_then_merge_then_query_by_the_new_id(daemon, tmp_path):
    send(daemon, "lifecycle-nw.hl7")
    assert len(find(daemon, tmp_path, "PatientID=LC10001")) == 1
    send(daemon, "adt-a40-merge.hl7")
    (ds,) = find(daemon, tmp_path, "PatientID=LC10002")
    assert ds.AccessionNumber == "ACC20261130501"
    assert sps(ds) == ("CT01", "20261130", "100000", "SCHEDULED")
    assert find(daemon, tmp_path, "PatientID=LC10001") == []
    # A second merge of the merged ID follows the policy (reject by default).
    send(daemon, "adt-a40-merge-of-merged.hl7", expect="AE")
    assert len(find(daemon, tmp_path, "PatientID=LC10002")) == 1


def test_demographic_updates_show_at_once(daemon, tmp_path):
    send(daemon, "lifecycle-nw.hl7", "adt-a08-update.hl7")
    (ds,) = find(daemon, tmp_path, "PatientName=GARCIA LOPEZ*")
    assert str(ds.PatientName) == "GARCIA LOPEZ^MARIA^ELENA^MRS"
    send(daemon, "adt-a31-update.hl7")
    (ds,) = find(daemon, tmp_path, "PatientID=LC10001")
    assert (str(ds.PatientName), ds.PatientBirthDate) == ("GARCIA^MARIA^ELENA^MRS", "19680224")
    send(daemon, "adt-a47-change-id.hl7")
    assert find(daemon, tmp_path, "PatientID=LC10001") == []
    assert len(find(daemon, tmp_path, "PatientID=LC10009")) == 1


def test_hold_release_start_complete(daemon, tmp_path):
    send(daemon, "lifecycle-nw.hl7", "lifecycle-hd.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130501") == []  # HELD is hidden
    send(daemon, "lifecycle-rl.hl7")
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501")
    assert sps(ds) == ("CT01", "20261130", "100000", "SCHEDULED")
    send(daemon, "lifecycle-sc-ip.hl7")
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501")
    assert sps(ds)[3] == "STARTED"
    # A started exam is not held back (a new message, not a resend of the first HD).
    again = tmp_path / "hd-again.hl7"
    again.write_bytes(renamed("lifecycle-hd.hl7", "HD-AGAIN"))
    res = daemon.send(again)
    assert ": AA" in res.stdout, res.stdout
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501")
    assert sps(ds)[3] == "STARTED"
    send(daemon, "lifecycle-oru-r01-final.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130501") == []
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501",
                 f"{SPS}.ScheduledProcedureStepStatus=COMPLETED")
    assert sps(ds)[0] == "CT01"


def test_discontinue_and_the_v251_order_messages(daemon, tmp_path):
    send(daemon, "lifecycle-omi-o23-nw.hl7", "lifecycle-omg-o19-nw.hl7")
    assert len(find(daemon, tmp_path, "AccessionNumber=ACC20261130511")) == 2  # two IPC
    assert len(find(daemon, tmp_path, "AccessionNumber=ACC20261130521")) == 1
    send(daemon, "lifecycle-omi-o23-ca.hl7", "lifecycle-omg-o19-dc.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130511") == []
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130521") == []
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130521",
                 f"{SPS}.ScheduledProcedureStepStatus=DISCONTINUED")
    assert ds.PatientID == "LC10021"


@pytest.mark.parametrize(("control", "status"), [
    ("oc", "CANCELED"), ("od", "DISCONTINUED"), ("dc", "DISCONTINUED")])
def test_other_cancel_and_discontinue_codes(daemon, tmp_path, control, status):
    send(daemon, "lifecycle-nw.hl7", f"lifecycle-{control}.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130501") == []
    (ds,) = find(daemon, tmp_path, "AccessionNumber=ACC20261130501",
                 f"{SPS}.ScheduledProcedureStepStatus={status}")
    assert sps(ds)[0] == "CT01"
    # A finished order is never reopened: a release changes nothing.
    send(daemon, "lifecycle-rl.hl7")
    assert find(daemon, tmp_path, "AccessionNumber=ACC20261130501") == []


def test_hidden_statuses_are_configurable(tmp_path):
    cfg = write_config(tmp_path, "worklist:\n  hidden_statuses: [CANCELED]\n")
    d = start_daemon(cfg, tmp_path / "data")
    try:
        send(d, "lifecycle-nw.hl7", "lifecycle-hd.hl7")
        (ds,) = find(d, tmp_path, "AccessionNumber=ACC20261130501")
        assert sps(ds)[3] == "HELD"  # this site shows held items
        send(d, "lifecycle-ca.hl7")
        assert find(d, tmp_path, "AccessionNumber=ACC20261130501") == []
    finally:
        assert stop_daemon(d) == 0
