"""The lifecycle's store operations (bridge/store/orders_tx.py) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydicom import Dataset

from bridge.maintenance.retention import Retention, purge_now
from bridge.orders.settings import MessageLogSettings
from bridge.store import CommitQueue, InboundMessage, Store, StoreError
from bridge.store.orders_tx import OrdersTx, PatientRecord


def run(store: Store, fn):
    (result,) = store.write([lambda tx: fn(OrdersTx(tx))])
    if isinstance(result, BaseException):
        raise result
    return result


def message(control_id: str, ack_code: str = "AA", *, days_ago: float = 0,
            app: str = "RIS") -> InboundMessage:
    return InboundMessage(
        received_at=datetime.now(UTC) - timedelta(days=days_ago), peer="127.0.0.1:1",
        sending_application=app, sending_facility="HOSP", control_id=control_id,
        message_type="ORM^O01", raw=b"MSH|^~\\&|" + control_id.encode(), ack_code=ack_code,
        ack=b"ACK " + control_id.encode())


def step(sps_id: str, patient_id: str = "P1", accession: str = "A1") -> Dataset:
    ds = Dataset()
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientName = "DOE^JANE"
    ds.AccessionNumber = accession
    ds.RequestedProcedureID = "RP1"
    ds.StudyInstanceUID = f"1.2.3.{sps_id[-1]}"
    sps = Dataset()
    sps.ScheduledProcedureStepID = sps_id
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    sps.Modality = "CT"
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def test_applied_messages_are_found_by_sender_and_control_id(store: Store):
    mid = run(store, lambda o: o.record(message("C1"), content_hash="h1"))
    run(store, lambda o: o.record(message("C2", "AE"), content_hash="h2"))
    found = run(store, lambda o: o.find_applied("RIS", "HOSP", "C1"))
    assert (found.id, found.content_hash, found.ack) == (mid, "h1", b"ACK C1")
    assert run(store, lambda o: o.find_applied("RIS", "HOSP", "C2")) is None  # rejected
    assert run(store, lambda o: o.find_applied("OTHER", "HOSP", "C1")) is None
    assert run(store, lambda o: o.recent_applied(10)) == [("RIS", "HOSP", "C1", "h1",
                                                           b"ACK C1")]


def test_message_listing_filters(store: Store):
    run(store, lambda o: o.record(message("C1"), outcome="1 inserted"))
    run(store, lambda o: o.record(message("C2", "AE")))
    flagged = run(store, lambda o: o.record(message("C3")))
    run(store, lambda o: o.set_outcome(flagged, "1 inserted", "demographics_conflict"))
    replay = run(store, lambda o: o.record(message("C2"), replay_of=2))
    assert [m.control_id for m in run(store, lambda o: o.list_messages())] == [
        "C2", "C3", "C2", "C1"]
    assert [m.control_id for m in run(store, lambda o: o.list_messages(rejected=True))] == [
        "C2"]
    assert [m.id for m in run(store, lambda o: o.list_messages(flagged=True))] == [flagged]
    assert [m.id for m in run(store, lambda o: o.replays_of(2))] == [replay]
    full = run(store, lambda o: o.get_message(2))
    assert (full.raw, full.ack, full.ack_code) == (b"MSH|^~\\&|C2", b"ACK C2", "AE")
    assert run(store, lambda o: o.get_message(999)) is None


def test_purge_keeps_recent_messages_and_unlinks_steps(store: Store):
    old = run(store, lambda o: o.record(message("OLD", days_ago=40)))
    run(store, lambda o: o.insert_step(step("S1"), old))
    run(store, lambda o: o.record(message("DEAD", "AE", days_ago=40)))
    run(store, lambda o: o.record(message("NEW")))
    counts = purge_now(store, MessageLogSettings(accepted_days=30, rejected_days=0))
    assert counts == {"accepted": 1}
    left = [m.control_id for m in run(store, lambda o: o.list_messages())]
    assert left == ["NEW", "DEAD"]
    assert store.count_steps() == 1  # the worklist item stays
    counts = purge_now(store, MessageLogSettings(accepted_days=30, rejected_days=30))
    assert counts == {"accepted": 0, "rejected": 1}


async def test_the_daemon_purges_in_batches_through_the_writer(store: Store):
    for n in range(3):
        run(store, lambda o, n=n: o.record(message(f"OLD{n}", days_ago=10)))
    commits = CommitQueue(store)
    commits.start()
    try:
        retention = Retention(commits, MessageLogSettings(accepted_days=5))
        assert await retention.purge_once() == {"accepted": 3, "rejected": 0}
        assert await retention.purge_once(datetime.now(UTC) + timedelta(days=1)) == {
            "accepted": 0, "rejected": 0}
    finally:
        commits.stop()


def test_steps_by_order_key_patient_and_accession(store: Store):
    run(store, lambda o: o.insert_step(step("S1"), None))
    run(store, lambda o: o.insert_step(step("S2", patient_id="P2", accession="A1"), None))
    s1 = run(store, lambda o: o.step_by_order("A1", "RP1", "S1"))
    assert s1 is not None and s1.patient_id == "P1" and s1.status == "SCHEDULED"
    assert run(store, lambda o: o.step_by_order("", "RP1", "S1")) is None
    assert run(store, lambda o: o.step_by_key("1.2.3.1", "RP1", "S1")).id == s1.id
    assert run(store, lambda o: o.accession_owners("A1")) == {("P1", "HOSP"), ("P2", "HOSP")}
    assert [s.item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID
            for s in run(store, lambda o: o.steps_by_patient("P2", "HOSP"))] == ["S2"]
    changed = step("S1", patient_id="P9")
    assert run(store, lambda o: o.replace_step(s1.id, changed, None)).value == "updated"
    assert run(store, lambda o: o.replace_step(s1.id, changed, None)).value == "unchanged"
    assert run(store, lambda o: o.steps_by_patient("P9", "HOSP"))[0].id == s1.id
    with pytest.raises(StoreError, match="no procedure step with id 12345"):
        run(store, lambda o: o.replace_step(12345, changed, None))


def test_patients_are_one_row_per_identity_and_merges_repoint(store: Store):
    run(store, lambda o: o.save_patient(PatientRecord("P1", "HOSP", name="DOE^JANE",
                                                      attributes='{"x": 1}'), None))
    run(store, lambda o: o.save_patient(PatientRecord("P1", "HOSP", name="ROE^JANE"), None))
    assert run(store, lambda o: o.count_patients()) == 1
    p1 = run(store, lambda o: o.patient("P1", "HOSP"))
    assert (p1.name, p1.merged, p1.attributes) == ("ROE^JANE", False, "")
    assert run(store, lambda o: o.patient("P1", "")) is None
    run(store, lambda o: o.save_patient(PatientRecord(
        "P0", "HOSP", merged_into_id="P1", merged_into_issuer="HOSP", merge_event="A40"), None))
    run(store, lambda o: o.repoint_merged(("P1", "HOSP"), ("P2", "HOSP")))
    assert run(store, lambda o: o.patient("P0", "HOSP")).merged_into_id == "P2"


def test_a_rolled_back_savepoint_leaves_nothing(store: Store):
    def job(o: OrdersTx) -> None:
        o.savepoint("message")
        o.record(message("GONE"))
        o.rollback_to("message")
        o.record(message("KEPT"))

    run(store, job)
    assert [m.control_id for m in run(store, lambda o: o.list_messages())] == ["KEPT"]


async def test_the_daemon_purges_at_start(store: Store, make_bridge):
    import asyncio

    run(store, lambda o: o.record(message("ANCIENT", days_ago=400)))
    bridge = await make_bridge(messages={"accepted_days": 30})
    for _ in range(500):  # the purge runs in the background right after start
        if not bridge.messages():
            break
        await asyncio.sleep(0.01)
    assert bridge.messages() == []
