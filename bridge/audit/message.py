"""An AuditEvent as the XML audit message of DICOM PS3.15 A.5.1 (the RFC 3881
successor schema; tests/audit/dicom-audit-message.rng is its RELAX NG transcription,
and every message the tests make is checked against it).

Element order matters in that schema: EventIdentification, the ActiveParticipants,
AuditSourceIdentification, then the ParticipantObjectIdentifications; inside each,
children in the schema's order.
"""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from bridge.audit.codes import Code
from bridge.audit.events import AuditEvent, Participant, ParticipantObject

# CID 20000 Audit Source Type: 4 "Application Server Process Tier in Multi-tier System".
SOURCE_TYPE = Code("4", "DCM", "Application Server Process Tier in Multi-tier System")


@dataclass(frozen=True, slots=True)
class AuditSource:
    """AuditSourceIdentification, from the ``audit`` settings."""

    source_id: str
    enterprise_site_id: str = ""


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    return ET.SubElement(parent, tag, {"csd-code": code.code, "codeSystemName": code.system,
                                       "originalText": code.meaning})


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render(event: AuditEvent, source: AuditSource) -> bytes:
    """The message as UTF-8 XML on one line (no declaration: syslog MSG starts with it)."""
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": event.action,
        "EventDateTime": event.at.isoformat(timespec="milliseconds"),
        "EventOutcomeIndicator": str(event.outcome)})
    _coded(ident, "EventID", event.event_id)
    for code in event.type_codes:
        _coded(ident, "EventTypeCode", code)
    if event.outcome_text:
        ET.SubElement(ident, "EventOutcomeDescription").text = event.outcome_text
    for p in event.participants:
        _participant(root, p)
    attrs = {"AuditSourceID": source.source_id}
    if source.enterprise_site_id:
        attrs["AuditEnterpriseSiteID"] = source.enterprise_site_id
    _coded(ET.SubElement(root, "AuditSourceIdentification", attrs), "AuditSourceTypeCode",
           SOURCE_TYPE)
    for o in event.objects:
        _object(root, o)
    return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=False))


def _participant(root: ET.Element, p: Participant) -> None:
    attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
    if p.alt_user_id:
        attrs["AlternativeUserID"] = p.alt_user_id
    if p.user_name:
        attrs["UserName"] = p.user_name
    if p.network:
        attrs["NetworkAccessPointID"] = p.network
        attrs["NetworkAccessPointTypeCode"] = p.network_type
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    for role in p.roles:
        _coded(el, "RoleIDCode", role)


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": o.id, "ParticipantObjectTypeCode": o.type_code,
             "ParticipantObjectTypeCodeRole": o.role}
    if o.lifecycle:
        attrs["ParticipantObjectDataLifeCycle"] = o.lifecycle
    el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _coded(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = _b64(o.query)
    elif o.name:
        ET.SubElement(el, "ParticipantObjectName").text = o.name
    for kind, value in o.details:
        ET.SubElement(el, "ParticipantObjectDetail", {"type": kind, "value": _b64(value)})
    for uid in o.mpps:
        ET.SubElement(el, "MPPS", {"UID": uid})
    for number in o.accessions:
        ET.SubElement(el, "Accession", {"Number": number})
    if o.studies:
        study = ET.SubElement(el, "ParticipantObjectContainsStudy")
        for uid in o.studies:
            ET.SubElement(study, "StudyIDs", {"UID": uid})
