"""Each status message the sender delivers is one DICOM Export audit event (docs/audit.md):
the bridge the Source and requestor, the destination (its name and host) the Destination,
and the patient with the message's control ID and accessions. A dead letter is not an
export. Real MLLP receiver; every event checked against the DICOM audit message schema."""

from __future__ import annotations

import base64

from lxml import etree

from bridge.audit import AuditTrail, Local
from bridge.audit.message import AuditSource
from bridge.outbound.sender import OutboxSender
from bridge.store import Store, outbox_tx
from bridge.store.outbox_tx import NewMessage
from tests.audit.rsyslog import built_events, summary
from tests.waiting import until

from .conftest import destination, pending, running, states
from .mllp_receiver import MllpReceiver, Reply

SOURCE = AuditSource("MWLBRIDGE-T", "SITE")


def status_message(control_id: str, patient_id: str, accessions: list[str]) -> NewMessage:
    obrs = "".join(f"OBR|{n}|||||||||||||||||{acc}\r" for n, acc in enumerate(accessions, 1))
    payload = (f"MSH|^~\\&|MWLBRIDGE|RAD|RIS|HOSP|20261128093000||ORM^O01|{control_id}|P|"
               f"2.3.1\rPID|1||{patient_id}||DOE^JANE\rORC|SC|{control_id}|||CM\r{obrs}")
    return NewMessage(destination="ris", order_key=f"order:{control_id}", event="CM",
                      message_type="ORM^O01", control_id=control_id,
                      payload=payload.encode())


def built(trail: AuditTrail) -> list[etree._Element]:
    return built_events(trail, SOURCE)


async def test_a_delivered_status_message_is_one_export_naming_destination_and_patient(
        sqlite_store: Store) -> None:
    rows = [status_message("C-1", "PAT7", ["ACC1", "ACC2"]),
            status_message("C-2", "PAT8", ["ACC3"])]
    sqlite_store.write_one(lambda tx: outbox_tx.enqueue(tx, rows))
    receiver = MllpReceiver(respond=lambda m, _: Reply(code="AR" if m.control_id == "C-2"
                                                       else "AA"))
    receiver.start()
    trail = AuditTrail(Local("MWLBRIDGE", "4242", "bridge.test"))
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05,
                          audit=trail)
    async with running(sender, receiver):
        await until(lambda: pending(sqlite_store) == 0)
    assert states(sqlite_store) == {"C-1": "sent", "C-2": "dead"}
    (export,) = built(trail)  # the dead letter C-2 was not exported
    assert summary(export).startswith("110106/")  # DCM 110106 Export
    assert export.find("EventIdentification").get("EventActionCode") == "R"
    who = [(p.get("UserID"), p.get("UserIsRequestor"), p.get("NetworkAccessPointID"),
            p.find("RoleIDCode").get("csd-code")) for p in export.findall("ActiveParticipant")]
    assert who == [("MWLBRIDGE", "true", "bridge.test", "110153"),
                   ("ris", "false", "127.0.0.1", "110152")]
    (patient,) = export.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PAT7"
    assert [a.get("Number") for a in patient.findall("Accession")] == ["ACC1", "ACC2"]
    (detail,) = patient.findall("ParticipantObjectDetail")  # the message's control ID
    assert (detail.get("type"), base64.b64decode(detail.get("value"))) == ("MSH-10", b"C-1")
