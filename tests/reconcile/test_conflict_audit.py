"""A reconciliation conflict flagged (the PACS holds a study under the item's accession
with another Study Instance UID or patient) is an Order Record update with outcome 4
(docs/audit.md), naming the PACS, the item's patient, accession and expected study,
and the study the PACS holds; once per flag (the loop asks no more), from the loop,
an IAN or Orthanc's push. Real DICOM peer as the PACS; both stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from bridge.reconcile.push import StudyPush
from bridge.store import thread_submit
from tests.audit.rsyslog import summary

from .conftest import NOW, FakePacs, Study, make_step, reconciler, reporter, settings
from .test_audit_and_metrics import messages, objects, run, trail, who

OTHER_UID = "1.2.826.0.1.3680043.8.498.123"


def test_a_conflict_found_by_the_query_is_a_failed_order_record(store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    pacs.studies = [Study(OTHER_UID, "ACC0000001", "PAT10001")]
    t = trail()
    rec = reconciler(store, settings(pacs), audit=t)
    assert len(run(rec).applied.conflicts) == 1
    (conflict,) = [m for m in messages(t) if not summary(m).startswith("110112")]
    assert summary(conflict) == "110109//4"
    ident = conflict.find("EventIdentification")
    assert ident.get("EventActionCode") == "U"
    assert "another Study Instance UID or patient" in ident.find(
        "EventOutcomeDescription").text
    assert who(conflict) == [("PACS", "false", "127.0.0.1", "110153"),
                             ("MWLBRIDGE", "true", "bridge.test", "110152")]
    (patient,) = objects(conflict, "1")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC0000001"
    expected = patient.find("ParticipantObjectContainsStudy/StudyIDs").get("UID")
    assert expected and expected != OTHER_UID
    assert [o.get("ParticipantObjectID") for o in objects(conflict, "2")] == [OTHER_UID]
    # Flagged once: the next cycle does not ask, and records no second conflict.
    run(rec, NOW + timedelta(hours=1))
    assert [summary(m) for m in messages(t)] == []


def test_a_conflict_pushed_by_orthanc_is_a_failed_order_record(store):
    store.upsert_steps([make_step(1)])
    t = trail()
    push = StudyPush(thread_submit(store), messages=reporter(), audit=t)
    result = asyncio.run(push(study_uid=OTHER_UID, accession="ACC0000001",
                              patient_id="PAT10001", series=1, instances=1, pacs="orthanc",
                              user="token:orthanc", host="127.0.0.1"))
    assert len(result["conflicts"]) == 1
    got = messages(t)
    assert [summary(m) for m in got] == ["110111//0", "110109//4"]
    assert who(got[1])[0] == ("token:orthanc", "false", "127.0.0.1", "110153")
    assert objects(got[1], "1")[0].get("ParticipantObjectID") == "PAT10001"
