"""The reconciliation loop against a real DICOM peer as the PACS, on SQLite and
PostgreSQL: which items are asked for (selection), how (batches, bounds), when a
found study completes its item (settle), and what is never completed (conflicts,
terminal statuses, another instance's role)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bridge.reconcile.loop import CycleReport
from bridge.steps import Source, StepState, change_status
from bridge.store import history_tx, mpps_tx, outbox_tx, reconcile_tx

from .conftest import NOW, FakePacs, Study, make_step, reconciler, settings


def run(rec, now=NOW) -> CycleReport:
    return asyncio.run(rec.run_once(now))


def ids_by_accession(store) -> dict[str, int]:
    return {str(r.item.AccessionNumber): r.id for r in store.list_steps(limit=1000)}


def status_of(store, step_id: int) -> str:
    got = mpps_tx.step_status(store, step_id)
    assert got is not None
    return got[0]


def test_only_the_items_due_are_asked_for(store, pacs: FakePacs):
    due = [make_step(n) for n in range(5)]
    others = [
        make_step(10, start="20261128115900"),  # younger than min_age_min
        make_step(11, start="20261126093000"),  # older than max_age_h
        make_step(12, start="20261129093000"),  # tomorrow
        make_step(13, modality="MR"),  # another modality
        make_step(14, station="CT02"),  # another station
    ]
    store.upsert_steps(due + others)
    rec = reconciler(store, settings(pacs, modalities=["CT"], stations=["CT01"]))
    report = run(rec)
    asked = {str(r.StudyInstanceUID) for r in pacs.requests if r.StudyInstanceUID}
    assert asked == {str(s.StudyInstanceUID) for s in due}
    # Not found by UID: then by accession; two requests per item, one association.
    assert report.due == 5 and report.queries == 10 == len(pacs.requests)
    assert pacs.associations == 1
    assert len(report.applied.not_found) == 5
    # Asked again only after recheck_s, not at the next cycle.
    assert run(rec, NOW + timedelta(seconds=60)).queries == 0
    assert run(rec, NOW + timedelta(seconds=301)).queries == 10


def test_terminal_and_held_items_are_not_watched(store, pacs: FakePacs):
    items = [make_step(n) for n in range(3)]
    store.upsert_steps(items)
    ids = ids_by_accession(store)

    def close(tx, step_id: int, status: str):
        (rec,) = mpps_tx.steps_by_id(tx, [step_id])
        change_status(tx, StepState(rec.id, rec.sps_status, rec.item), status,
                      source=Source.OPERATOR)

    store.write([lambda tx: close(tx, ids["ACC0000000"], "DISCONTINUED"),
                 lambda tx: close(tx, ids["ACC0000001"], "HELD")])
    report = run(reconciler(store, settings(pacs)))
    assert report.due == 1
    assert {str(r.AccessionNumber) for r in pacs.requests if r.AccessionNumber} == {
        "ACC0000002"}


def test_batches_and_the_per_cycle_bound(store, pacs: FakePacs):
    store.upsert_steps([make_step(n) for n in range(7)])
    pacs.studies = [Study(f"1.2.826.0.1.3680043.8.498.9{n:05d}", patient_id="PAT10001")
                    for n in range(7)]
    report = run(reconciler(store, settings(pacs, batch_size=3, max_items_per_cycle=5)))
    # Found by UID: one request per item; 5 items in associations of 3 + 2.
    assert report.due == 5 and report.queries == 5 and pacs.associations == 2
    assert len(report.applied.waiting) == 5


def test_a_found_study_completes_its_item_once_its_count_holds_over_two_polls(
        store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    (step_id,) = ids_by_accession(store).values()
    study = Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001", instances=2)
    pacs.studies = [study]
    rec = reconciler(store, settings(pacs, settle_poll_s=60))
    assert run(rec).applied.waiting == [step_id]
    state = reconcile_tx.state_of(store, step_id)
    assert state is not None and (state.instances, state.series) == (2, 1)
    assert run(rec, NOW + timedelta(seconds=30)).queries == 0  # not before settle_poll_s
    study.instances = 5  # still arriving
    assert run(rec, NOW + timedelta(seconds=61)).applied.waiting == [step_id]
    assert status_of(store, step_id) == "SCHEDULED"
    assert outbox_tx.list_messages(store) == []
    done = run(rec, NOW + timedelta(seconds=122))
    assert done.applied.completed == [step_id] and done.applied.queued == 1
    assert status_of(store, step_id) == "COMPLETED"
    (msg,) = outbox_tx.list_messages(store)
    assert msg.event == "CM" and msg.step_id == step_id
    assert b"ORC|SC|PLC1|FIL1||CM" in msg.payload
    last = history_tx.for_step(store, step_id)[-1]
    assert (last.to_status, last.source) == ("COMPLETED", "pacs query")
    assert "1 series, 5 instances" in last.note
    assert reconcile_tx.state_of(store, step_id) is None
    assert run(rec, NOW + timedelta(seconds=400)).due == 0


def test_the_time_policy_waits_for_the_settle_time(store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    (step_id,) = ids_by_accession(store).values()
    pacs.studies = [Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001")]
    rec = reconciler(store, settings(pacs, settle="time", settle_time_s=600, settle_poll_s=60))
    run(rec)
    assert run(rec, NOW + timedelta(seconds=61)).applied.waiting == [step_id]
    assert run(rec, NOW + timedelta(seconds=601)).applied.completed == [step_id]


def test_conflicts_are_flagged_not_completed_and_not_asked_again(store, pacs: FakePacs):
    store.upsert_steps([make_step(1), make_step(2)])
    ids = ids_by_accession(store)
    pacs.studies = [
        # Under item 1's accession, another Study Instance UID.
        Study("1.2.826.0.1.3680043.8.498.123", "ACC0000001", "PAT10001"),
        # Item 2's own UID, another patient.
        Study("1.2.826.0.1.3680043.8.498.900002", "ACC0000002", "PAT99999"),
    ]
    rec = reconciler(store, settings(pacs, settle_poll_s=1))
    report = run(rec)
    assert sorted(report.applied.conflicts) == sorted(ids.values())
    flagged = {c.step_id: c for c in reconcile_tx.conflicts(store)}
    assert flagged[ids["ACC0000001"]].kind == "study_uid"
    assert flagged[ids["ACC0000001"]].found_uid == "1.2.826.0.1.3680043.8.498.123"
    assert flagged[ids["ACC0000002"]].kind == "patient_id"
    assert "PAT99999" not in flagged[ids["ACC0000002"]].detail
    assert reconcile_tx.summary(store).conflicts == 2
    assert run(rec, NOW + timedelta(hours=1)).queries == 0
    assert {status_of(store, i) for i in ids.values()} == {"SCHEDULED"}
    assert outbox_tx.list_messages(store) == []
    # The operator fixed the PACS: retry asks again, and the study now completes.
    pacs.studies[1].patient_id = "PAT10001"
    (cleared,) = store.write([lambda tx: reconcile_tx.clear_conflict(tx, ids["ACC0000002"])])
    assert cleared is True
    run(rec, NOW + timedelta(hours=1))
    assert run(rec, NOW + timedelta(hours=2)).applied.completed == [ids["ACC0000002"]]


def test_an_mpps_that_closed_the_step_meanwhile_wins(store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    (step_id,) = ids_by_accession(store).values()
    pacs.studies = [Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001")]
    rec = reconciler(store, settings(pacs, statuses=["SCHEDULED", "STARTED"]))
    run(rec)  # found, settling

    def mpps(tx, status: str):
        (r,) = mpps_tx.steps_by_id(tx, [step_id])
        change_status(tx, StepState(r.id, r.sps_status, r.item), status, source=Source.MPPS)

    store.write([lambda tx: mpps(tx, "STARTED")])
    store.write([lambda tx: mpps(tx, "DISCONTINUED")])
    assert run(rec, NOW + timedelta(hours=1)).due == 0
    assert status_of(store, step_id) == "DISCONTINUED"
    assert outbox_tx.list_messages(store) == []


class NotLeader:
    def is_leader(self) -> bool:
        return True  # as of its last renewal ...

    def holds(self, tx) -> bool:
        return False  # ... but another instance has taken the role since


def test_a_cycle_writes_nothing_once_the_role_is_lost(store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    (step_id,) = ids_by_accession(store).values()
    run(reconciler(store, settings(pacs), leader=NotLeader()))
    assert reconcile_tx.state_of(store, step_id) is None


def test_a_pacs_that_refuses_the_association_is_reported_and_nothing_changes(store):
    store.upsert_steps([make_step(1)])
    pacs = FakePacs()
    pacs.stop()  # nobody listens there now
    report = run(reconciler(store, settings(pacs)))
    assert report.queries == 0 and report.applied.not_found == []
    assert "PACS pacs1" in report.failures[0] and "association" in report.failures[0]
    (step_id,) = ids_by_accession(store).values()
    assert reconcile_tx.state_of(store, step_id) is None  # asked again next cycle


def test_several_pacs_are_asked_in_order_and_a_failing_one_is_skipped(store, pacs: FakePacs):
    store.upsert_steps([make_step(1), make_step(2)])
    ids = ids_by_accession(store)
    second = FakePacs()
    try:
        second.studies = [Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001")]
        peers = [{"name": "first", "ae_title": "PACS", "host": "127.0.0.1",
                  "port": pacs.port, "timeout_s": 10},
                 {"name": "second", "ae_title": "PACS", "host": "127.0.0.1",
                  "port": second.port, "timeout_s": 10}]
        report = run(reconciler(store, settings(pacs, peers=peers)))
        # The first has neither (2 requests each); the second is asked for both again
        # and has item 1 (1 request), not item 2 (2 requests).
        assert (len(pacs.requests), len(second.requests)) == (4, 3)
        assert report.queries == 7
        assert report.applied.waiting == [ids["ACC0000001"]]
        assert report.applied.not_found == [ids["ACC0000002"]]
        assert reconcile_tx.state_of(store, ids["ACC0000001"]).found_uid.endswith("900001")

        pacs.stop()  # the first PACS is gone: the second still answers
        later = run(reconciler(store, settings(pacs, peers=peers)), NOW + timedelta(hours=1))
        assert "PACS first" in later.failures[0]
        assert later.applied.completed == [ids["ACC0000001"]]
    finally:
        second.stop()


def test_a_pacs_over_mutual_tls(store, tmp_path):
    import ssl

    from tests.tlscerts import make_pki

    pki = make_pki(tmp_path / "pki")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server.load_cert_chain(str(pki.server.cert), str(pki.server.key))
    server.verify_mode = ssl.CERT_REQUIRED
    pacs = FakePacs(ssl_context=server)
    try:
        pacs.studies = [Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001")]
        store.upsert_steps([make_step(1)])

        def peer(ca: object) -> list[dict[str, object]]:
            return [{"name": "tls", "ae_title": "PACS", "host": "127.0.0.1",
                     "port": pacs.port, "timeout_s": 10,
                     "tls": {"enabled": True, "ca_file": str(ca),
                             "cert_file": str(pki.client.cert),
                             "key_file": str(pki.client.key)}}]

        # A PACS certificate from a CA we do not trust: no association, nothing asked.
        refused = run(reconciler(store, settings(pacs, peers=peer(pki.outsider_ca))))
        assert refused.queries == 0 and "association failed" in refused.failures[0]
        report = run(reconciler(store, settings(pacs, peers=peer(pki.ca))))
        assert report.failures == [] and report.queries == 1
        assert len(report.applied.waiting) == 1
    finally:
        pacs.stop()
