"""The MPPS state machine over real DICOM associations (pynetdicom as the modality),
against both store backends: every status of PS3.4 Annex F this SCP sends."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pynetdicom import evt

from bridge.mpps.validate import CREATE_TYPE1
from bridge.store import mpps_tx, outbox_tx
from bridge.store.base import StoreError

from .conftest import MPPS, create_ds, final_ds

UID = "1.2.826.0.1.3680043.8.498.77001"


def status(rsp: Dataset) -> tuple[int, str]:
    return int(rsp.Status), str(rsp.get("ErrorComment", ""))


def outbox(env) -> list[outbox_tx.OutboxMessage]:
    return outbox_tx.list_messages(env.store)


def step_state(env, accession: str) -> tuple[str, str]:
    """(sps_status column, the stored item's ScheduledProcedureStepStatus)."""
    row = next(r for r in env.store.list_steps(limit=100)
               if r.item.AccessionNumber == accession)
    status_col, item = mpps_tx.step_status(env.store, row.id)
    return status_col, str(item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)


def test_create_starts_the_step_and_queues_ip_in_the_same_transaction(env_both):
    env = env_both
    ct = env.steps[0]
    rsp, _attrs = env.associate().send_n_create(create_ds(ct), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    assert step_state(env, "ACC20261128001") == ("STARTED", "STARTED")
    record = mpps_tx.get_mpps(env.store, UID)
    assert record is not None and record.status == "IN PROGRESS" and record.scheduled
    assert record.calling_aet == "CT01" and record.station_aet == "CT01"
    (msg,) = outbox(env)
    assert (msg.state, msg.event, msg.message_type) == ("pending", "IP", "ORM^O01")
    assert msg.order_key == "order:PLC100001/FIL100001"
    assert msg.step_id is not None and msg.mpps_id == record.id
    assert b"ORC|SC|PLC100001|FIL100001||IP" in msg.payload
    assert env.notified == [1]


def test_set_completed_completes_the_step_and_queues_cm(env_both):
    env = env_both
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    assert step_state(env, "ACC20261128001") == ("COMPLETED", "COMPLETED")
    record = mpps_tx.get_mpps(env.store, UID)
    assert record.status == "COMPLETED"
    assert record.item.PerformedSeriesSequence[0].SeriesInstanceUID.endswith(".1")
    assert [m.event for m in outbox(env)] == ["IP", "CM"]
    assert b"ORC|SC|PLC100001|FIL100001||CM||||20261128094230" in outbox(env)[1].payload


def test_set_discontinued_discontinues_the_step_and_queues_dc(env):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    rsp, _ = assoc.send_n_set(final_ds("DISCONTINUED", series=0), MPPS, UID)
    assert status(rsp) == (0x0000, "")
    assert step_state(env, "ACC20261128001") == ("DISCONTINUED", "DISCONTINUED")
    assert [m.event for m in outbox(env)] == ["IP", "DC"]


def test_duplicate_sop_instance_is_0111_and_changes_nothing(env_both):
    env = env_both
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0111, "an MPPS with this SOP Instance UID exists already")
    assert len(outbox(env)) == 1


def test_set_on_an_unknown_instance_is_0112(env_both):
    env = env_both
    rsp, _ = env.associate().send_n_set(final_ds(), MPPS, UID)
    assert status(rsp) == (0x0112, "no MPPS with this SOP Instance UID")
    assert outbox(env) == []


@pytest.mark.parametrize("final", ["COMPLETED", "DISCONTINUED"])
@pytest.mark.parametrize("then", ["COMPLETED", "IN PROGRESS", "attribute"])
def test_no_set_is_accepted_after_the_final_one(env, final, then):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(assoc.send_n_set(final_ds(final), MPPS, UID)[0])[0] == 0
    later = Dataset()
    if then == "attribute":
        later.PerformedProcedureStepDescription = "CHANGED"
    else:
        later.PerformedProcedureStepStatus = then
    rsp, _ = assoc.send_n_set(later, MPPS, UID)
    assert status(rsp) == (0x0110, f"the MPPS is {final} and may no longer be updated")
    assert rsp.ErrorID == 0xA710
    assert mpps_tx.get_mpps(env.store, UID).status == final
    assert len(outbox(env)) == 2


@pytest.mark.parametrize("value", ["COMPLETED", "DISCONTINUED", "SCHEDULED", ""])
def test_create_must_be_in_progress(env, value):
    ds = create_ds(env.steps[0], PerformedProcedureStepStatus=value)
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    if value:
        assert status(rsp) == (0x0106, "invalid PerformedProcedureStepStatus: must be IN "
                                       "PROGRESS")
    else:
        assert status(rsp) == (0x0121, "no value in PerformedProcedureStepStatus")
    assert mpps_tx.get_mpps(env.store, UID) is None
    assert step_state(env, "ACC20261128001") == ("SCHEDULED", "SCHEDULED")


@pytest.mark.parametrize("keyword", [*CREATE_TYPE1, "ScheduledStepAttributesSequence"])
def test_create_without_a_type1_attribute_is_0120_naming_it(env, keyword):
    ds = create_ds(env.steps[0])
    delattr(ds, keyword)
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0120, f"missing {keyword}")
    assert mpps_tx.get_mpps(env.store, UID) is None


@pytest.mark.parametrize("keyword", ["PerformedProcedureStepID", "PerformedStationAETitle",
                                     "PerformedProcedureStepStartDate", "Modality"])
def test_create_with_an_empty_type1_attribute_is_0121_naming_it(env, keyword):
    ds = create_ds(env.steps[0])
    setattr(ds, keyword, "")
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0121, f"no value in {keyword}")


def test_a_scheduled_step_item_needs_its_study_instance_uid(env):
    ds = create_ds(env.steps[0])
    del ds.ScheduledStepAttributesSequence[0].StudyInstanceUID
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0120, "missing ScheduledStepAttributesSequence>StudyInstanceUID")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
@pytest.mark.parametrize(("keyword", "value", "comment"), [
    ("PerformedProcedureStepStartDate", "2026-11-28",
     "invalid PerformedProcedureStepStartDate: not a DA (YYYYMMDD)"),
    ("PerformedProcedureStepStartTime", "9h35", "invalid PerformedProcedureStepStartTime: "
                                                "not a TM (HHMMSS)"),
    # The right digits, but no such day or time (issue 10).
    ("PerformedProcedureStepStartDate", "20261301",
     "invalid PerformedProcedureStepStartDate: not a DA (YYYYMMDD)"),
    ("PerformedProcedureStepStartDate", "20260230",
     "invalid PerformedProcedureStepStartDate: not a DA (YYYYMMDD)"),
    ("PerformedProcedureStepStartTime", "256199", "invalid PerformedProcedureStepStartTime: "
                                                  "not a TM (HHMMSS)"),
    ("PerformedProcedureStepStartTime", "1261", "invalid PerformedProcedureStepStartTime: "
                                                "not a TM (HHMMSS)"),
    ("PerformedStationAETitle", "CT\n01", "invalid PerformedStationAETitle: not an AE title"),
])
def test_create_with_a_malformed_value_is_0106(env, keyword, value, comment):
    ds = create_ds(env.steps[0])
    ds[keyword].value = value
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0106, comment)


@pytest.mark.parametrize("value", ["20261128", "20240229"])
def test_create_with_a_real_day_and_a_leap_second_is_accepted(env, value):
    ds = create_ds(env.steps[0])
    ds.PerformedProcedureStepStartDate = value
    ds.PerformedProcedureStepStartTime = "235960.5"
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert status(rsp) == (0x0000, "")


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_set_with_an_impossible_end_date_is_0106_and_changes_nothing(env):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    final = final_ds()
    final.PerformedProcedureStepEndDate = "20261132"
    rsp, _ = assoc.send_n_set(final, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid PerformedProcedureStepEndDate: not a DA (YYYYMMDD)")
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"


def test_create_without_instance_uid_gets_one_from_the_scp(env):
    seen: list[str] = []

    def on_recv(event: evt.Event) -> None:
        cs = event.message.command_set
        if "AffectedSOPInstanceUID" in cs:
            seen.append(str(cs.AffectedSOPInstanceUID))

    assoc = env.associate()
    assoc.bind(evt.EVT_DIMSE_RECV, on_recv)
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS)
    assert status(rsp) == (0x0000, "")
    (uid,) = seen
    assert mpps_tx.get_mpps(env.store, uid).status == "IN PROGRESS"
    rsp, _ = assoc.send_n_set(final_ds(), MPPS, uid)
    assert status(rsp) == (0x0000, "")


def test_a_malformed_instance_uid_is_0117(env):
    with pytest.raises(Exception) as caught:
        env.service.create("1.2.abc", create_ds(env.steps[0]))
    assert (caught.value.status, caught.value.comment) == (
        0x0117, "Affected SOP Instance UID is not a valid UID")


@pytest.mark.parametrize("value", ["DONE", "SCHEDULED"])
def test_set_to_a_status_that_is_not_an_mpps_status_is_0106(env, value):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    change = Dataset()
    change.PerformedProcedureStepStatus = value
    rsp, _ = assoc.send_n_set(change, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid PerformedProcedureStepStatus: not an MPPS status")
    assert rsp.AttributeIdentifierList == 0x00400252


def test_set_may_not_change_the_patient_but_may_repeat_it(env):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    change = Dataset()
    change.PatientID = "SOMEONE-ELSE"
    rsp, _ = assoc.send_n_set(change, MPPS, UID)
    assert status(rsp) == (0x0106, "invalid PatientID: N-SET may not change it")
    same = final_ds()
    same.PatientID = env.steps[0].PatientID  # some modalities resend the whole dataset
    same.PerformedStationAETitle = "CT01"
    rsp, _ = assoc.send_n_set(same, MPPS, UID)
    assert status(rsp) == (0x0000, "")


def test_attributes_may_change_while_in_progress(env):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    interim = final_ds("IN PROGRESS")
    del interim.PerformedProcedureStepEndDate
    del interim.PerformedProcedureStepEndTime
    interim.PerformedProcedureStepDescription = "CT CHEST"
    rsp, _ = assoc.send_n_set(interim, MPPS, UID)
    assert status(rsp) == (0x0000, "")
    record = mpps_tx.get_mpps(env.store, UID)
    assert record.status == "IN PROGRESS"
    assert record.item.PerformedProcedureStepDescription == "CT CHEST"
    assert len(record.item.PerformedSeriesSequence) == 1
    assert [m.event for m in outbox(env)] == ["IP"]  # no status change, no message
    assert status(assoc.send_n_set(final_ds(), MPPS, UID)[0])[0] == 0


@pytest.mark.parametrize(("drop", "set_empty", "expected"), [
    ("PerformedProcedureStepEndDate", False, (0x0121, "no value in "
                                                      "PerformedProcedureStepEndDate")),
    ("PerformedProcedureStepEndTime", False, (0x0121, "no value in "
                                                      "PerformedProcedureStepEndTime")),
    ("PerformedSeriesSequence", False, (0x0121, "no value in PerformedSeriesSequence")),
])
def test_completed_needs_the_final_state_attributes(env, drop, set_empty, expected):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)  # Type 2 sent empty
    change = final_ds()
    delattr(change, drop)
    rsp, _ = assoc.send_n_set(change, MPPS, UID)
    assert status(rsp) == expected
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"
    assert step_state(env, "ACC20261128001") == ("STARTED", "STARTED")


def test_final_state_attributes_absent_altogether_is_0120(env):
    assoc = env.associate()
    ds = create_ds(env.steps[0])
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
                    "PerformedSeriesSequence"):
        delattr(ds, keyword)  # Type 2 left out, as some modalities do: accepted
    assert status(assoc.send_n_create(ds, MPPS, UID)[0]) == (0, "")
    change = Dataset()
    change.PerformedProcedureStepStatus = "DISCONTINUED"
    rsp, _ = assoc.send_n_set(change, MPPS, UID)
    assert status(rsp) == (0x0120, "missing PerformedProcedureStepEndDate")
    assert rsp.AttributeIdentifierList == 0x00400250


def test_final_state_checks_can_be_turned_off(sqlite_store):
    store = sqlite_store
    from bridge.mpps.settings import MppsSettings

    from .conftest import build_env, mapped_steps

    env = build_env(store, MppsSettings(final_state_checks=False),
                    mapped_steps("orm-o01-ihe-ct.hl7"))
    try:
        assoc = env.associate()
        assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
        change = Dataset()
        change.PerformedProcedureStepStatus = "COMPLETED"
        rsp, _ = assoc.send_n_set(change, MPPS, UID)
        assert status(rsp) == (0x0000, "")
        assoc.release()
    finally:
        env.scp.stop()


def test_a_store_failure_is_0110_and_applies_nothing(env, monkeypatch):
    def broken(jobs):
        raise StoreError("commit failed: disk I/O error")

    assoc = env.associate()
    monkeypatch.setattr(env.store, "write", broken)
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0110, "the store failed; nothing was applied, please retry")
    monkeypatch.undo()
    assert mpps_tx.get_mpps(env.store, UID) is None
    assert outbox(env) == []
    # The association and the SCP are still there: the retry works.
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0000, "")


def test_c_echo_and_worklist_still_work_on_the_shared_ae(env):
    assoc = env.associate()
    query = Dataset()
    query.AccessionNumber = "ACC20261128001"
    query.PatientName = ""
    sps = Dataset()
    sps.Modality = ""
    query.ScheduledProcedureStepSequence = [sps]
    from pynetdicom.sop_class import ModalityWorklistInformationFind
    answers = [ds for st, ds in assoc.send_c_find(query, ModalityWorklistInformationFind)
               if ds is not None]
    assert [str(a.AccessionNumber) for a in answers] == ["ACC20261128001"]


@pytest.fixture
def undecodable(monkeypatch):
    """Failure injection: the request's data set fails to decode in the SCP (as a
    malformed value from a peer does; pydicom's own encoder refuses to send one)."""
    from bridge.mpps import service

    def fail(ds):
        raise ValueError("malformed value")

    monkeypatch.setattr(service, "_decoded", fail)


def test_an_undecodable_n_create_is_refused_and_changes_nothing(env, undecodable):
    rsp, _ = env.associate().send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert status(rsp) == (0x0110, "the attribute list cannot be decoded")
    assert mpps_tx.get_mpps(env.store, UID) is None
    assert step_state(env, "ACC20261128001") == ("SCHEDULED", "SCHEDULED")


@pytest.mark.parametrize("cut", [1, 7, 100])
def test_a_truncated_attribute_list_is_refused_over_a_raw_socket(env, cut):
    # pydicom reads a truncated data set as a shorter one without a word; before
    # issue 10 the MPPS was created from what was left (or refused as incomplete).
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from tests.worklist import pdus

    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = True, True
    write_dataset(fp, create_ds(env.steps[0]))
    with pdus.established(env.scp.port, contexts=(pdus.MPPS,), calling=b"CT01") as peer:
        peer.sendall(pdus.n_create_rq(fp.getvalue()[:-cut], UID))
        assert pdus.responses(peer) == [(0x0110, "the attribute list cannot be decoded")]
    assert mpps_tx.get_mpps(env.store, UID) is None
    assert step_state(env, "ACC20261128001") == ("SCHEDULED", "SCHEDULED")


def test_an_undecodable_n_set_is_refused_and_changes_nothing(env, monkeypatch):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    from bridge.mpps import service

    monkeypatch.setattr(service, "_decoded",
                        lambda ds: (_ for _ in ()).throw(ValueError("malformed value")))
    rsp, _ = assoc.send_n_set(final_ds("COMPLETED"), MPPS, UID)
    assert status(rsp) == (0x0110, "the modification list cannot be decoded")
    assert mpps_tx.get_mpps(env.store, UID).status == "IN PROGRESS"
    assert step_state(env, "ACC20261128001") == ("STARTED", "STARTED")
