"""The status history: every change ``change_status`` writes is kept in
``step_history`` with its source, in the same transaction (a failed job leaves
neither); ``report_step`` reports a step without a change (ORC-1 SC or SN)."""

from __future__ import annotations

from bridge.steps import Source, StepState, change_status, report_step
from bridge.store import Store, history_tx, mpps_tx
from tests.mpps.conftest import mapped_steps
from tests.store.conftest import store  # noqa: F401 - both backends

from .test_change import RecordingReporter


def _first(store: Store) -> StepState:  # noqa: F811
    row = store.list_steps()[0]
    return StepState(row.id, row.sps_status, row.item)


def test_every_change_is_kept_with_its_source(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)
    store.write([lambda tx: change_status(tx, step, "HELD", source=Source.OPERATOR,
                                          actor="alice", note="allergy check")])
    store.write([lambda tx: change_status(tx, _first(store), "SCHEDULED",
                                          source=Source.OPERATOR, actor="alice")])
    store.write([lambda tx: change_status(tx, _first(store), "STARTED", source=Source.MPPS,
                                          mpps_id=7)])
    # No change (the rule keeps STARTED): no history row.
    store.write([lambda tx: change_status(tx, _first(store), "SCHEDULED", source=Source.HL7)])
    store.write([lambda tx: change_status(tx, _first(store), "COMPLETED",
                                          source=Source.RESULT)])
    rows = history_tx.for_step(store, step.id)
    assert [(h.from_status, h.to_status, h.source, h.message_id, h.mpps_id, h.actor)
            for h in rows] == [
        ("SCHEDULED", "HELD", "operator", None, None, "alice"),
        ("HELD", "SCHEDULED", "operator", None, None, "alice"),
        ("SCHEDULED", "STARTED", "mpps", None, 7, ""),
        ("STARTED", "COMPLETED", "result", None, None, ""),
    ]
    assert rows[0].note == "allergy check" and rows[0].at


def test_a_failed_job_leaves_no_history(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)

    def job(tx):
        change_status(tx, step, "CANCELED", source=Source.HL7)
        raise RuntimeError("later in the same job")

    (result,) = store.write([job])  # the job's savepoint is rolled back
    assert isinstance(result, RuntimeError)
    assert history_tx.for_step(store, step.id) == []
    assert mpps_tx.step_status(store, step.id)[0] == "SCHEDULED"


def test_history_goes_with_a_purged_item(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)
    store.write([lambda tx: change_status(tx, step, "CANCELED", source=Source.HL7)])
    assert len(history_tx.for_step(store, step.id)) == 1
    store.write([lambda tx: mpps_tx.purge_steps(tx, statuses=["CANCELED"],
                                                changed_before="9999")])
    assert history_tx.for_step(store, step.id) == []


def test_report_step_reports_the_status_it_keeps(store: Store) -> None:  # noqa: F811
    store.upsert_steps(mapped_steps("orm-o01-ihe-ct.hl7"))
    step = _first(store)
    reporter = RecordingReporter()
    (n,) = store.write([lambda tx: report_step(tx, step.id, step.item, reporter,
                                               order_control="SN")])
    assert n == 1
    (change,) = reporter.changes
    assert (change.status, change.sps_status, change.order_control, change.step_id) == (
        "SC", "SCHEDULED", "SN", step.id)
    assert history_tx.for_step(store, step.id) == []  # not a status change
