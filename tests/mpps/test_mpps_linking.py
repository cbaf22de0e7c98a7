"""Which worklist items an MPPS changes: the match keys, several steps, unscheduled
MPPS, and the conflict rule with the HL7 order lifecycle."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from bridge.hl7 import parse_message
from bridge.mpps.settings import MppsSettings
from bridge.steps import Source, StepState, change_status
from bridge.store import mpps_tx, outbox_tx

from .conftest import MPPS, build_env, create_ds, final_ds, mapped_steps

UID = "1.2.826.0.1.3680043.8.498.88001"


def states(env) -> dict[str, str]:
    return {str(r.item.AccessionNumber): r.sps_status for r in env.store.list_steps(limit=100)}


def messages(env) -> list[outbox_tx.OutboxMessage]:
    return outbox_tx.list_messages(env.store)


def field(msg: outbox_tx.OutboxMessage, segment: str, n: int, comp: int = 1) -> str:
    seg = parse_message(msg.payload.decode()).first(segment)
    return seg.value(n, comp) if seg is not None else ""


def test_study_and_sps_id_link_the_step(env):
    env.associate().send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert states(env)["ACC20261128001"] == "STARTED"
    assert mpps_tx.get_mpps(env.store, UID).step_ids == (1,)


def test_accession_is_the_fallback_when_the_modality_made_its_own_study_uid(env):
    ds = create_ds(env.steps[0])
    ds.ScheduledStepAttributesSequence[0].StudyInstanceUID = "1.2.826.0.1.3680043.8.498.999"
    env.associate().send_n_create(ds, MPPS, UID)
    assert states(env)["ACC20261128001"] == "STARTED"
    # The message carries the stored order's Study Instance UID, not the modality's.
    (msg,) = messages(env)
    assert field(msg, "ZDS", 1) == str(env.steps[0].StudyInstanceUID)


def test_the_key_order_is_configurable(sqlite_store):
    env = build_env(sqlite_store, MppsSettings(match_keys=["accession"]),
                    mapped_steps("orm-o01-ihe-ct.hl7"))
    try:
        ds = create_ds(env.steps[0])
        ds.ScheduledStepAttributesSequence[0].AccessionNumber = "NOT-THIS-ONE"
        env.associate().send_n_create(ds, MPPS, UID)
        # Study UID + SPS ID would have matched, but only accession is configured.
        assert states(env)["ACC20261128001"] == "SCHEDULED"
        assert not mpps_tx.get_mpps(env.store, UID).scheduled
    finally:
        env.scp.stop()


def test_one_mpps_for_several_steps_changes_each_and_reports_each_order(env):
    ct, mr = env.steps[1], env.steps[2]  # the two ORC/OBR groups of one message
    assoc = env.associate()
    assoc.send_n_create(create_ds(ct, mr), MPPS, UID)
    assert states(env)["ACC20261129301"] == "STARTED"
    assert states(env)["ACC20261129302"] == "STARTED"
    # Text arrives in the request's character set and is kept as Unicode.
    assert str(mpps_tx.get_mpps(env.store, UID).item.PatientName) == str(ct.PatientName)
    assert "Wiśniewska" in str(ct.PatientName)
    assoc.send_n_set(final_ds(), MPPS, UID)
    assert states(env)["ACC20261129301"] == "COMPLETED"
    assert states(env)["ACC20261129302"] == "COMPLETED"
    got = [(m.order_key, m.event, field(m, "ORC", 2), field(m, "OBR", 18))
           for m in messages(env)]
    assert got == [
        ("order:PLC200301/FIL200301", "IP", "PLC200301", "ACC20261129301"),
        ("order:PLC200302/FIL200302", "IP", "PLC200302", "ACC20261129302"),
        ("order:PLC200301/FIL200301", "CM", "PLC200301", "ACC20261129301"),
        ("order:PLC200302/FIL200302", "CM", "PLC200302", "ACC20261129302"),
    ]


def unscheduled_ds() -> Dataset:
    ds = create_ds()
    ds.PatientName = "WALK^IN"
    ds.PatientID = "PAT-WALKIN"
    item = Dataset()
    item.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    item.AccessionNumber = ""
    ds.ScheduledStepAttributesSequence = [item]
    return ds


def test_an_unscheduled_mpps_is_stored_and_reported_as_unscheduled(env):
    assoc = env.associate()
    rsp, _ = assoc.send_n_create(unscheduled_ds(), MPPS, UID)
    assert rsp.Status == 0
    record = mpps_tx.get_mpps(env.store, UID)
    assert not record.scheduled and record.step_ids == ()
    assert set(states(env).values()) == {"SCHEDULED"}
    assoc.send_n_set(final_ds(), MPPS, UID)
    ip, cm = messages(env)
    assert (ip.order_key, ip.event, cm.order_key, cm.event) == (
        f"mpps:{UID}", "IP", f"mpps:{UID}", "CM")
    assert field(ip, "ORC", 2) == "" and field(ip, "ORC", 3) == ""
    assert field(ip, "ORC", 16) == "UNSCHEDULED"
    assert field(ip, "PID", 3) == "PAT-WALKIN"
    assert field(ip, "ZDS", 1) == "1.2.826.0.1.3680043.8.498.4242"


def test_an_empty_scheduled_step_sequence_is_unscheduled(env):
    ds = unscheduled_ds()
    ds.ScheduledStepAttributesSequence = []
    rsp, _ = env.associate().send_n_create(ds, MPPS, UID)
    assert rsp.Status == 0
    assert not mpps_tx.get_mpps(env.store, UID).scheduled
    (msg,) = messages(env)
    assert field(msg, "ORC", 16) == "UNSCHEDULED"


def test_store_only_policy_sends_nothing_for_unscheduled(sqlite_store):
    env = build_env(sqlite_store, MppsSettings(unscheduled="store"),
                    mapped_steps("orm-o01-ihe-ct.hl7"))
    try:
        assoc = env.associate()
        assoc.send_n_create(unscheduled_ds(), MPPS, UID)
        assoc.send_n_set(final_ds(), MPPS, UID)
        assert mpps_tx.get_mpps(env.store, UID).status == "COMPLETED"
        assert messages(env) == []
        assert env.notified == []
    finally:
        env.scp.stop()


def test_an_order_that_arrives_after_the_n_create_is_linked_at_the_n_set(sqlite_store):
    env = build_env(sqlite_store, MppsSettings(), [])
    try:
        late = mapped_steps("orm-o01-ihe-ct.hl7")
        assoc = env.associate()
        assoc.send_n_create(create_ds(late[0]), MPPS, UID)
        assert not mpps_tx.get_mpps(env.store, UID).scheduled
        env.store.upsert_steps(late)
        assoc.send_n_set(final_ds(), MPPS, UID)
        assert states(env)["ACC20261128001"] == "COMPLETED"
        record = mpps_tx.get_mpps(env.store, UID)
        assert record.scheduled and record.step_ids == (1,)
        ip, cm = messages(env)
        assert ip.order_key == f"mpps:{UID}"  # reported unscheduled at the time
        assert cm.order_key == "order:PLC100001/FIL100001"
    finally:
        env.scp.stop()


def set_status(env, accession: str, status: str) -> None:
    row = next(r for r in env.store.list_steps() if r.item.AccessionNumber == accession)

    def job(tx) -> None:
        (step,) = mpps_tx.steps_by_id(tx, [row.id])
        change_status(tx, StepState(step.id, step.sps_status, step.item), status,
                      source=Source.HL7)

    (result,) = env.store.write([job])
    assert result is None


@pytest.mark.parametrize("hl7_status", ["CANCELED", "DISCONTINUED", "COMPLETED"])
def test_a_terminal_status_from_hl7_is_never_reopened_by_mpps(env, hl7_status):
    set_status(env, "ACC20261128001", hl7_status)  # e.g. the RIS cancelled (CA) first
    assoc = env.associate()
    rsp, _ = assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assert rsp.Status == 0  # the MPPS is still accepted and stored
    assert states(env)["ACC20261128001"] == hl7_status
    assoc.send_n_set(final_ds(), MPPS, UID)
    assert states(env)["ACC20261128001"] == hl7_status
    assert mpps_tx.get_mpps(env.store, UID).status == "COMPLETED"
    assert messages(env) == []


def test_a_second_mpps_for_a_completed_step_changes_nothing(env):
    assoc = env.associate()
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, UID)
    assoc.send_n_set(final_ds(), MPPS, UID)
    other = "1.2.826.0.1.3680043.8.498.88002"
    assoc.send_n_create(create_ds(env.steps[0]), MPPS, other)
    assert states(env)["ACC20261128001"] == "COMPLETED"
    assert [m.event for m in messages(env)] == ["IP", "CM"]
    assert mpps_tx.get_mpps(env.store, other).step_ids == (1,)
