"""What the reconciliation leaves in the ATNA audit trail and the metrics: each C-FIND
to the PACS a Query event (the daemon the requestor, the identifier base64), each
completion a Procedure Record update naming the PACS, the IAN and Orthanc's push
likewise; cycles, C-FINDs, outcomes, PACS errors and open conflicts as metrics.
Against a real DICOM peer as the PACS (tests/reconcile/conftest.py), on both stores;
every event rendered and checked against the DICOM audit message schema."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from datetime import timedelta
from io import BytesIO
from typing import Any

import pytest
from lxml import etree
from pydicom import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import InstanceAvailabilityNotification as IAN

from bridge.audit import AuditTrail, Local
from bridge.audit.message import AuditSource, render
from bridge.reconcile.ian import IanService
from bridge.reconcile.loop import reconcile_reader
from bridge.reconcile.push import StudyPush
from bridge.store import thread_submit
from bridge.telemetry import Metrics
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.audit.rsyslog import summary, validate

from .conftest import NOW, FakePacs, Study, make_step, reconciler, reporter, settings
from .test_ian import UID1, ian

SOURCE = AuditSource("MWLBRIDGE-T", "SITE")
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def trail() -> AuditTrail:
    return AuditTrail(Local("MWLBRIDGE", "4242", "bridge.test"))


def messages(t: AuditTrail) -> list[etree._Element]:
    """Every event recorded so far, rendered and checked against the schema."""
    out = []
    for entry in t.take(10000, 0.01):
        assert not callable(entry)
        m = etree.fromstring(render(entry, SOURCE))
        validate(m)
        out.append(m)
    return out


def who(m: etree._Element) -> list[tuple[str | None, str | None, str | None, str | None]]:
    return [(p.get("UserID"), p.get("UserIsRequestor"), p.get("NetworkAccessPointID"),
             (p.find("RoleIDCode").get("csd-code") if p.find("RoleIDCode") is not None
              else None)) for p in m.findall("ActiveParticipant")]


def objects(m: etree._Element, type_code: str) -> list[etree._Element]:
    return [o for o in m.findall("ParticipantObjectIdentification")
            if o.get("ParticipantObjectTypeCode") == type_code]


def identifier(sop: etree._Element) -> Dataset:
    """The C-FIND identifier in ParticipantObjectQuery, read in the transfer syntax the
    TransferSyntax detail names (the one negotiated with the PACS)."""
    detail = sop.find("ParticipantObjectDetail")
    assert detail.get("type") == "TransferSyntax"
    syntax = base64.b64decode(detail.get("value")).decode()
    assert syntax in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
    return read_dataset(BytesIO(base64.b64decode(sop.find("ParticipantObjectQuery").text)),
                        is_implicit_VR=syntax == "1.2.840.10008.1.2", is_little_endian=True)


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def run(rec: Any, now=NOW) -> Any:
    return asyncio.run(rec.run_once(now))


def test_each_cfind_is_a_query_event_and_a_completion_a_procedure_record(store,
                                                                          pacs: FakePacs):
    store.upsert_steps([make_step(1), make_step(2)])
    study = Study("1.2.826.0.1.3680043.8.498.900001", "ACC0000001", "PAT10001", instances=2)
    pacs.studies = [study]
    t, metrics = trail(), Metrics()
    rec = reconciler(store, settings(pacs, settle_poll_s=60), audit=t, metrics=metrics)
    first = run(rec)  # item 1 found (waiting), item 2 asked by UID, then by accession
    assert first.queries == 3
    queries = messages(t)
    assert [summary(m) for m in queries] == ["110112//0"] * 3
    q = queries[0]
    assert who(q) == [("MWLBRIDGE", "true", "bridge.test", "110153"),
                      ("PACS", "false", "127.0.0.1", "110152")]
    (sop,) = objects(q, "2")
    assert sop.get("ParticipantObjectID") == STUDY_ROOT_FIND
    assert sop.get("ParticipantObjectTypeCodeRole") == "3"
    sent = identifier(sop)
    assert sent.QueryRetrieveLevel == "STUDY"
    assert sent.StudyInstanceUID == study.uid and sent == pacs.requests[0]
    (patient,) = objects(q, "1")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC0000001"
    by_accession = identifier(objects(queries[2], "2")[0])
    assert by_accession.AccessionNumber == "ACC0000002"

    done = run(rec, NOW + timedelta(seconds=61))  # the count held: item 1 COMPLETED
    assert len(done.applied.completed) == 1
    got = messages(t)
    (completion,) = [m for m in got if summary(m) != "110112//0"]
    assert summary(completion) == "110111//0"
    assert completion.find("EventIdentification").get("EventActionCode") == "U"
    # The PACS told (Source), the daemon decided (requestor), as for its C-FIND.
    assert who(completion) == [("PACS", "false", "127.0.0.1", "110153"),
                               ("MWLBRIDGE", "true", "bridge.test", "110152")]
    (study_obj,) = objects(completion, "2")
    assert study_obj.get("ParticipantObjectID") == study.uid
    (patient,) = objects(completion, "1")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC0000001"

    assert value(metrics, "mwl_bridge_reconcile_cycles_total") == 2
    assert value(metrics, "mwl_bridge_reconcile_cfind_requests_total", pacs="pacs1") == \
        first.queries + done.queries
    studies = "mwl_bridge_reconcile_studies_total"
    assert value(metrics, studies, source="query", outcome="completed") == 1
    assert value(metrics, studies, source="query", outcome="waiting") == 1
    assert value(metrics, studies, source="query", outcome="not_found") == 1  # recheck_s later
    assert value(metrics, "mwl_bridge_reconcile_pacs_errors_total", pacs="pacs1") is None


class FailingPacs(FakePacs):
    """A PACS that answers every C-FIND with a failure status (0xC000)."""

    def _find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        self.requests.append(event.identifier)
        yield 0xC000, None


def test_a_failed_cfind_is_a_failed_query_event_and_a_pacs_error(store):
    store.upsert_steps([make_step(1)])
    pacs = FailingPacs()
    try:
        t, metrics = trail(), Metrics()
        report = run(reconciler(store, settings(pacs), audit=t, metrics=metrics))
    finally:
        pacs.stop()
    assert report.queries == 1 and report.failures
    (m,) = messages(t)
    assert summary(m) == "110112//4"
    assert "0xC000" in m.find("EventIdentification/EventOutcomeDescription").text
    assert value(metrics, "mwl_bridge_reconcile_pacs_errors_total", pacs="pacs1") == 1
    assert value(metrics, "mwl_bridge_reconcile_cfind_requests_total", pacs="pacs1") == 1


def test_a_pacs_that_cannot_be_reached_is_a_pacs_error_and_no_query(store):
    store.upsert_steps([make_step(1)])
    pacs = FakePacs()
    pacs.stop()
    t, metrics = trail(), Metrics()
    run(reconciler(store, settings(pacs), audit=t, metrics=metrics))
    assert messages(t) == []
    assert value(metrics, "mwl_bridge_reconcile_pacs_errors_total", pacs="pacs1") == 1
    assert value(metrics, "mwl_bridge_reconcile_cycles_total") == 1


def test_conflicts_open_are_a_gauge_read_from_the_store(store, pacs: FakePacs):
    store.upsert_steps([make_step(1)])
    pacs.studies = [Study("1.2.999.1", "ACC0000001", "PAT10001")]  # the accession, another UID
    metrics = Metrics()
    metrics.watch_reconcile(reconcile_reader(store))
    assert value(metrics, "mwl_bridge_reconcile_conflicts_open") == 0
    report = run(reconciler(store, settings(pacs), metrics=metrics))
    assert len(report.applied.conflicts) == 1
    assert value(metrics, "mwl_bridge_reconcile_conflicts_open") == 1
    assert value(metrics, "mwl_bridge_reconcile_watched_items") == 1
    assert value(metrics, "mwl_bridge_reconcile_studies_total", source="query",
                 outcome="conflict") == 1


@pytest.fixture
def ian_scp(store) -> Iterator[tuple[WorklistSCP, AuditTrail, Metrics]]:
    store.upsert_steps([make_step(1), make_step(2)])
    t, metrics = trail(), Metrics()
    service = IanService(store, messages=reporter(), audit=t, metrics=metrics)
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings(), services=(service,))
    scp.start()
    yield scp, t, metrics
    scp.stop()


def send_ian(port: int, ds: Dataset) -> int:
    ae = AE(ae_title="DCM4CHEE")
    ae.add_requested_context(IAN)
    assoc = ae.associate("127.0.0.1", port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    try:
        rsp, _ = assoc.send_n_create(ds, IAN, generate_uid())
    finally:
        assoc.release()
    return int(rsp.Status)


def test_an_ian_n_create_is_a_procedure_record_update_naming_what_it_completed(ian_scp):
    scp, t, metrics = ian_scp
    assert send_ian(scp.port, ian(UID1)) == 0x0000
    assert send_ian(scp.port, ian(None)) == 0x0120  # refused: no Study Instance UID
    applied, refused = [m for m in messages(t) if summary(m).startswith("110111")]
    assert summary(applied) == "110111/RAD-49/0"
    assert who(applied) == [("DCM4CHEE", "true", "127.0.0.1", "110153"),
                            ("MWLBRIDGE", "false", "bridge.test", "110152")]
    assert [o.get("ParticipantObjectID") for o in objects(applied, "2")] == [UID1]
    (patient,) = objects(applied, "1")
    assert patient.get("ParticipantObjectID") == "PAT10001"
    assert patient.find("Accession").get("Number") == "ACC0000001"
    assert summary(refused) == "110111/RAD-49/4"
    assert "StudyInstanceUID" in refused.find(
        "EventIdentification/EventOutcomeDescription").text
    assert objects(refused, "1") == []
    assert value(metrics, "mwl_bridge_reconcile_studies_total", source="ian",
                 outcome="completed") == 1


def test_orthancs_push_is_a_procedure_record_update_by_the_api_user(store):
    store.upsert_steps([make_step(1)])
    t, metrics = trail(), Metrics()
    push = StudyPush(thread_submit(store), messages=reporter(), audit=t, metrics=metrics)
    result = asyncio.run(push(study_uid=UID1, accession="ACC0000001", patient_id="PAT10001",
                              series=1, instances=4, pacs="orthanc",
                              user="token:orthanc", host="127.0.0.1"))
    assert len(result["completed"]) == 1
    (m,) = messages(t)
    assert summary(m) == "110111//0"
    assert who(m) == [("token:orthanc", "true", "127.0.0.1", "110153"),
                      ("MWLBRIDGE", "false", "bridge.test", "110152")]
    assert objects(m, "1")[0].get("ParticipantObjectID") == "PAT10001"
    assert value(metrics, "mwl_bridge_reconcile_studies_total", source="push",
                 outcome="completed") == 1
