"""Housekeeping: idle items per station/modality change status (optionally reported),
old rows are purged; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.settings import HousekeepingSettings, IdleRule
from bridge.store import mpps_tx, outbox_tx, thread_submit

from .conftest import MPPS, _profiles, build_env, create_ds, final_ds, mapped_steps


def statuses(store) -> dict[str, str]:
    return {str(r.item.AccessionNumber): r.sps_status for r in store.list_steps(limit=100)}


def run(hk: Housekeeping, now: datetime):
    return asyncio.run(hk.run_once(now))


def test_idle_items_of_a_station_expire_and_others_stay(store):
    from bridge.outbound.events import Destination, StatusMessages

    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7") + mapped_steps("orm-o01-two-groups.hl7"))
    dest = Destination("ris", _profiles().for_message_type("ORM^O01"), "UNICODE UTF-8",
                       "utf-8")
    messages = StatusMessages([dest], sending_application="B", sending_facility="R")
    settings = HousekeepingSettings(idle_rules=[
        IdleRule(stations=["CT01"], modalities=["CT"], idle_hours=24, set_status="COMPLETED",
                 notify=True)])
    hk = Housekeeping(settings, thread_submit(store), messages=messages)
    # Scheduled 2026-11-28/29; a day later nothing is idle long enough yet...
    changed, _ = run(hk, datetime(2026, 11, 28, 12, 0).astimezone())
    assert changed == 0
    # ...and three days later the two CT01 items are, the MR01 one is not (other station).
    changed, _ = run(hk, datetime.now(UTC) + timedelta(days=3))
    assert changed == 2
    assert statuses(store) == {"ACC20261128001": "COMPLETED", "ACC20261129301": "COMPLETED",
                               "ACC20261129302": "SCHEDULED"}
    row = next(r for r in store.list_steps() if r.item.AccessionNumber == "ACC20261128001")
    assert mpps_tx.step_status(store, row.id)[1].ScheduledProcedureStepSequence[0] \
        .ScheduledProcedureStepStatus == "COMPLETED"
    sent = outbox_tx.list_messages(store)
    assert [(m.event, m.order_key) for m in sent] == [
        ("CM", "order:PLC100001/FIL100001"), ("CM", "order:PLC200301/FIL200301")]
    assert b"ORC|SC|PLC100001|FIL100001||CM" in sent[0].payload


def test_purge_removes_old_rows_by_kind_and_keeps_pending(store):
    from bridge.mpps.settings import MppsSettings

    env = build_env(store, MppsSettings(), mapped_steps("orm-o01-ihe-ct.hl7"))
    try:
        assoc = env.associate()
        uid = "1.2.826.0.1.3680043.8.498.66001"
        assoc.send_n_create(create_ds(env.steps[0]), MPPS, uid)
        assoc.send_n_set(final_ds(), MPPS, uid)
        assoc.release()
    finally:
        env.scp.stop()
    ip, cm = outbox_tx.list_messages(store)
    store.write([lambda tx: outbox_tx.mark_sent(tx, ip.id, b"")])
    later = datetime.now(UTC) + timedelta(days=40)
    keep_steps = HousekeepingSettings(purge_sent_days=30, purge_mpps_days=90,
                                      purge_steps_days=0)
    _, counts = run(Housekeeping(keep_steps, thread_submit(store)), later)
    assert (counts.sent, counts.dead, counts.mpps, counts.steps) == (1, 0, 0, 0)
    assert [m.id for m in outbox_tx.list_messages(store)] == [cm.id]  # pending stays
    much_later = datetime.now(UTC) + timedelta(days=400)
    everything = HousekeepingSettings(purge_mpps_days=90, purge_steps_days=180)
    _, counts = run(Housekeeping(everything, thread_submit(store)), much_later)
    assert (counts.mpps, counts.steps) == (1, 1)
    assert mpps_tx.get_mpps(store, uid) is None and store.count_steps() == 0
    (left,) = outbox_tx.list_messages(store)
    assert left.id == cm.id and left.step_id is None and left.state == "pending"


def test_an_idle_rule_that_notifies_needs_an_hl7_status():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="notify: true needs set_status COMPLETED or "
                                              "DISCONTINUED"):
        IdleRule(idle_hours=1, set_status="EXPIRED", notify=True)


def test_an_idle_rule_obeys_the_conflict_rule(store):
    """A terminal step is never reopened by an idle rule either (bridge/steps/rules.py),
    even when the rule lists its status; the other steps of the rule still change."""
    from bridge.steps import Source, StepState, change_status

    store.upsert_steps(mapped_steps("orm-o01-two-groups.hl7"))
    first = next(r for r in store.list_steps() if r.item.AccessionNumber == "ACC20261129301")

    def cancel(tx) -> None:
        change_status(tx, StepState(first.id, first.sps_status, first.item), "CANCELED",
                      source=Source.HL7)

    assert store.write([cancel]) == [None]
    settings = HousekeepingSettings(idle_rules=[
        IdleRule(statuses=["SCHEDULED", "CANCELED"], idle_hours=24,
                 set_status="DISCONTINUED")])
    changed, _ = run(Housekeeping(settings, thread_submit(store)),
                     datetime.now(UTC) + timedelta(days=3))
    assert changed == 1
    assert statuses(store) == {"ACC20261129301": "CANCELED", "ACC20261129302": "DISCONTINUED"}
