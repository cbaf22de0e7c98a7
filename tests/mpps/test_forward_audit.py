"""Each MPPS request the forwarder delivers, or gives up as a dead letter, is a
Procedure Record event (docs/audit.md: the daemon the requestor and Source, the
destination the Destination; outcome 4 for a dead letter), with the patient, the
MPPS UID and the accession read from the stored MPPS. Real associations both ways
(tests/mpps/test_forward.py's modality and PACS); every event checked against the
DICOM audit message schema."""

from __future__ import annotations

import asyncio

from lxml import etree
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE

from bridge.audit import AuditTrail, Local
from bridge.audit.message import AuditSource
from bridge.mpps.forward import MppsForwarder
from bridge.mpps.service import MppsService
from bridge.mpps.settings import MppsSettings
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.audit.rsyslog import built_events, summary

from .conftest import MPPS, create_ds, final_ds, mapped_steps
from .test_forward import UID_A, UID_B, forward_settings, ok, pacs, pending, until

__all__ = ["pacs"]  # the fixture

SOURCE = AuditSource("MWLBRIDGE-T", "SITE")


def built(trail: AuditTrail) -> list[etree._Element]:
    return built_events(trail, SOURCE)


async def test_delivered_and_dead_lettered_requests_are_procedure_records(sqlite_store,
                                                                          pacs):
    pacs.answer = lambda op, uid: ((0x0106, "Invalid attribute value") if uid == UID_A
                                   else (0x0000, ""))
    pacs.start()
    store = sqlite_store
    steps = mapped_steps("orm-o01-ihe-ct.hl7") + mapped_steps("orm-o01-two-groups.hl7")
    store.upsert_steps(steps)
    trail = AuditTrail(Local("MWLBRIDGE", "4242", "bridge.test"))
    trail.store = store
    settings = forward_settings(pacs)
    forwarder = MppsForwarder(store, settings, calling_ae="MWLBRIDGE", audit=trail)
    service = MppsService(store, MppsSettings(forward=settings),
                          forward_to=forwarder.destinations, notify_forward=forwarder.wake,
                          audit=trail)
    scp = WorklistSCP(store, DicomSettings(port=0), WorklistSettings(), services=(service,))
    scp.start()
    await forwarder.start()
    try:
        ae = AE(ae_title="CT01")
        ae.add_requested_context(MPPS, [ExplicitVRLittleEndian])
        assoc = await asyncio.to_thread(ae.associate, "127.0.0.1", scp.port,
                                        ae_title="MWLBRIDGE")
        assert assoc.is_established
        ok((await asyncio.to_thread(assoc.send_n_create, create_ds(steps[0]), MPPS,
                                    UID_A))[0])
        ok((await asyncio.to_thread(assoc.send_n_create, create_ds(steps[1]), MPPS,
                                    UID_B))[0])
        ok((await asyncio.to_thread(assoc.send_n_set, final_ds("COMPLETED"), MPPS,
                                    UID_B))[0])
        assoc.release()
        await until(lambda: pending(store) == 0)
    finally:
        await forwarder.stop()
        scp.stop()
    received, got = [], []
    for m in built(trail):  # the modality's own requests (CT01 the requestor), then ours
        first = m.find("ActiveParticipant").get("UserID")
        (received if first == "CT01" else got).append(m)
    assert [summary(m) for m in received] == ["110111/RAD-6/0", "110111/RAD-6/0",
                                              "110111/RAD-7/0"]
    mine = received[2].find("ParticipantObjectIdentification")
    assert mine.get("ParticipantObjectID") == str(steps[1].PatientID)  # read from the store
    assert mine.find("MPPS").get("UID") == UID_B
    assert len(got) == 3  # one per request forwarded, delivered or not
    by_uid: dict[str, list[etree._Element]] = {}
    for m in got:
        (patient,) = m.findall("ParticipantObjectIdentification")
        by_uid.setdefault(patient.find("MPPS").get("UID"), []).append(m)
    (dead,) = by_uid[UID_A]
    assert summary(dead) == "110111/RAD-6/4"
    assert dead.find("EventIdentification").get("EventActionCode") == "C"
    assert "0x0106" in dead.find("EventIdentification/EventOutcomeDescription").text
    create_b, set_b = by_uid[UID_B]
    assert summary(create_b).startswith("110111/") and summary(create_b).endswith("/0")
    assert set_b.find("EventIdentification").get("EventActionCode") == "U"
    assert summary(set_b) == "110111/RAD-7/0"  # the stored MPPS is COMPLETED
    who = [(p.get("UserID"), p.get("UserIsRequestor"), p.get("NetworkAccessPointID"),
            p.find("RoleIDCode").get("csd-code")) for p in set_b.findall("ActiveParticipant")]
    assert who == [("MWLBRIDGE", "true", "bridge.test", "110153"),
                   (pacs.ae_title, "false", "127.0.0.1", "110152")]
    patient = set_b.find("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == str(steps[1].PatientID)
    assert patient.find("Accession").get("Number") == str(steps[1].AccessionNumber)
