"""Every kind of audit event, rendered, is a valid DICOM audit message (the RELAX NG
schema transcribed from PS3.15 A.5.1) and says what happened."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from lxml import etree

from bridge.audit import codes, events
from bridge.audit.events import HL7Facts, Local
from bridge.audit.message import AuditSource, render
from bridge.audit.syslog import frame, octet_counted

from .rsyslog import validate

LOCAL = Local("MWLBRIDGE", "4242", "bridge.example.org")
SOURCE = AuditSource("MWLBRIDGE-1", "HOSPITAL-A")
FACTS = HL7Facts("ORM^O01", "MSG-1", "RIS", "HOSP", "10.0.0.5:40000", patient_id="PAT1",
                 accessions=("ACC1",), action="C")

ALL_KINDS = {
    "start": events.application_activity(LOCAL, start=True),
    "stop": events.application_activity(LOCAL, start=False, user="root"),
    "order": events.hl7_record(LOCAL, FACTS),
    "rejected": events.hl7_record(LOCAL, HL7Facts("ORM^O01", "MSG-2", "RIS", "HOSP",
                                                  "10.0.0.5:1", accepted=False,
                                                  reason="Patient ID missing (PID-3)")),
    "adt": events.hl7_record(LOCAL, HL7Facts("ADT^A08", "MSG-3", "RIS", "HOSP", "[::1]:5",
                                             patient_id="PAT1", patient_record=True)),
    "query": events.query(LOCAL, calling_ae="CT01", host="127.0.0.1", called_ae="MWL",
                          identifier=b"\x08\x00\x50\x00\x00\x00\x00\x00",
                          transfer_syntax="1.2.840.10008.1.2"),
    "mpps": events.procedure_record(LOCAL, calling_ae="CT01", host="127.0.0.1", create=True,
                                    mpps_uid="1.2.3", status="IN PROGRESS", patient_id="PAT1",
                                    accessions=("ACC1",), studies=("1.2.3.4",)),
    "export": events.export(LOCAL, destination="ris", host="10.0.0.9",
                            message_type="ORM^O01", control_id="OUT1", patient_id="PAT1"),
    "alert": events.security_alert(LOCAL, type_code=codes.NODE_AUTHENTICATION,
                                   what="EVIL->MWL", peer="192.0.2.7:3000",
                                   outcome_text="calling AE not known"),
    "login": events.user_authentication(LOCAL, user="alice", host="127.0.0.1", login=True),
    "action": events.operator_action(LOCAL, user="alice", role="operator",
                                     action="step.cancel", target_kind="step", target_id="7",
                                     patient_id="PAT1"),
    "plain action": events.operator_action(LOCAL, user="alice", role="admin",
                                           action="outbox.retry", target_kind="outbox",
                                           target_id="3"),
    "pacs query": events.pacs_query(LOCAL, calling_ae="MWLBRIDGE", pacs_ae="PACS",
                                    host="10.0.0.7", identifier=b"\x08\x00\x52\x00",
                                    transfer_syntax="1.2.840.10008.1.2", patient_id="PAT1",
                                    accessions=("ACC1",), studies=("1.2.3.4",)),
    "pacs query failed": events.pacs_query(LOCAL, calling_ae="MWLBRIDGE", pacs_ae="PACS",
                                           host="10.0.0.7", identifier=b"",
                                           transfer_syntax="1.2.840.10008.1.2",
                                           outcome=4, outcome_text="C-FIND failed"),
    "study completed": events.study_notice(
        LOCAL, informant="PACS", informant_requested=False, host="10.0.0.7",
        study_uid="1.2.3.4", patients=(events.patient("PAT1", accessions=("ACC1",)),)),
    "ian refused": events.study_notice(LOCAL, informant="DCM4CHEE", informant_requested=True,
                                       type_codes=(codes.RAD_49,), outcome=4,
                                       outcome_text="StudyInstanceUID is missing"),
}


@pytest.mark.parametrize("kind", sorted(ALL_KINDS))
def test_every_kind_of_event_is_a_valid_dicom_audit_message(kind):
    validate(etree.fromstring(render(ALL_KINDS[kind], SOURCE)))


def test_the_schema_refuses_what_the_standard_refuses():
    bad = etree.fromstring(render(ALL_KINDS["query"], SOURCE))
    bad.find("EventIdentification").set("EventOutcomeIndicator", "3")
    with pytest.raises(AssertionError, match="EventOutcomeIndicator"):
        validate(bad)
    no_participant = etree.fromstring(render(ALL_KINDS["query"], SOURCE))
    for p in no_participant.findall("ActiveParticipant"):
        no_participant.remove(p)
    # The schema wants ActiveParticipant before AuditSourceIdentification.
    with pytest.raises(AssertionError,
                       match="Did not expect element AuditSourceIdentification there"):
        validate(no_participant)


def test_an_order_names_sender_patient_accession_and_control_id():
    m = etree.fromstring(render(ALL_KINDS["order"], SOURCE))
    ident = m.find("EventIdentification")
    assert ident.get("EventActionCode") == "C" and ident.get("EventOutcomeIndicator") == "0"
    assert ident.find("EventID").get("csd-code") == "110109"
    assert ident.find("EventTypeCode").get("csd-code") == "RAD-4"
    sender, me = m.findall("ActiveParticipant")
    assert (sender.get("UserID"), sender.get("UserIsRequestor"),
            sender.get("NetworkAccessPointID"), sender.get("NetworkAccessPointTypeCode")) \
        == ("RIS|HOSP", "true", "10.0.0.5", "2")
    assert (me.get("UserID"), me.get("AlternativeUserID"), me.get("NetworkAccessPointTypeCode")) \
        == ("MWLBRIDGE", "4242", "1")
    src = m.find("AuditSourceIdentification")
    assert (src.get("AuditSourceID"), src.get("AuditEnterpriseSiteID")) == \
        ("MWLBRIDGE-1", "HOSPITAL-A")
    (patient,) = m.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == "PAT1"
    assert patient.find("ParticipantObjectIDTypeCode").get("csd-code") == "2"
    detail = patient.find("ParticipantObjectDetail")
    assert detail.get("type") == "MSH-10" and base64.b64decode(detail.get("value")) == b"MSG-1"
    assert patient.find("Accession").get("Number") == "ACC1"


def test_a_rejected_message_is_a_failure_with_the_reason():
    m = etree.fromstring(render(ALL_KINDS["rejected"], SOURCE))
    ident = m.find("EventIdentification")
    assert ident.get("EventOutcomeIndicator") == "4"
    assert ident.find("EventOutcomeDescription").text == "Patient ID missing (PID-3)"


def test_a_query_carries_the_identifier_base64():
    m = etree.fromstring(render(ALL_KINDS["query"], SOURCE))
    obj = m.find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == codes.MWL_FIND
    assert base64.b64decode(obj.find("ParticipantObjectQuery").text) == \
        b"\x08\x00\x50\x00\x00\x00\x00\x00"
    assert m.find("EventIdentification/EventTypeCode").get("csd-code") == "RAD-5"


def test_syslog_framing_is_rfc5424_with_octet_counting():
    at = datetime(2026, 11, 30, 12, 0, 1, 234000, tzinfo=UTC)
    msg = frame(b"<AuditMessage/>", hostname="host a", app_name="mwl-bridge", procid="7",
                at=at)
    assert msg == (b"<85>1 2026-11-30T12:00:01.234Z hosta mwl-bridge 7 IHE+RFC-3881 - "
                   b"\xef\xbb\xbf<AuditMessage/>")
    assert octet_counted(msg) == str(len(msg)).encode() + b" " + msg
