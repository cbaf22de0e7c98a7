"""``change_status``: the rule, the step and its queued messages, in one transaction;
on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime

from bridge.steps import Source, StatusChange, StepState, change_status
from bridge.store import Store, mpps_tx, outbox_tx
from bridge.store.outbox_tx import NewMessage
from tests.mpps.conftest import mapped_steps
from tests.store.conftest import store  # noqa: F401 - both backends


class RecordingReporter:
    """The Reporter side (bridge.outbound.StatusMessages in the daemon), reduced to
    one row per change so the test sees exactly what change_status handed over."""

    def __init__(self) -> None:
        self.changes: list[StatusChange] = []

    def for_change(self, change: StatusChange, *, now: datetime | None = None
                   ) -> list[NewMessage]:
        self.changes.append(change)
        return [NewMessage(destination="ris", order_key=change.order_key, event=change.status,
                           message_type="ORM^O01", control_id=f"C{len(self.changes)}",
                           payload=b"MSH|^~\\&|\r", step_id=change.step_id)]


def _first(store: Store) -> StepState:  # noqa: F811
    row = store.list_steps()[0]
    return StepState(row.id, row.sps_status, row.item)


def test_a_change_is_written_and_reported_together(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)
    reporter = RecordingReporter()
    (update,) = store.write([lambda tx: change_status(tx, step, "COMPLETED",
                                                      source=Source.MPPS, reporter=reporter)])
    assert update.decision.changed and update.queued == 1
    status, item = mpps_tx.step_status(store, step.id)
    assert status == "COMPLETED"
    assert item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "COMPLETED"
    (change,) = reporter.changes
    assert (change.status, change.sps_status, change.step_id) == ("CM", "COMPLETED", step.id)
    assert [(m.event, m.step_id) for m in outbox_tx.list_messages(store)] == [("CM", step.id)]


def test_a_terminal_step_keeps_its_status_and_nothing_is_queued(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)
    store.write([lambda tx: change_status(tx, step, "CANCELED", source=Source.HL7)])
    canceled = _first(store)
    reporter = RecordingReporter()
    (update,) = store.write([lambda tx: change_status(tx, canceled, "STARTED",
                                                      source=Source.MPPS, reporter=reporter)])
    assert not update.decision.changed and update.queued == 0
    assert mpps_tx.step_status(store, step.id)[0] == "CANCELED"
    assert reporter.changes == [] and outbox_tx.list_messages(store) == []
