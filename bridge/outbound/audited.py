"""An HL7 status message delivered to a RIS as its audit event (Export).

Built on the audit trail's spool thread (``AuditTrail.record_later``), from the
message as it was sent: the patient (PID-3) and the accession (OBR-18, IPC-1).
"""

from __future__ import annotations

from bridge.audit.events import AuditEvent, Local, export
from bridge.hl7 import parse_message
from bridge.store.outbox_tx import OutboxMessage


def export_event(message: OutboxMessage, destination: str, host: str, local: Local
                 ) -> AuditEvent:
    patient_id = ""
    accessions: tuple[str, ...] = ()
    try:
        parsed = parse_message(message.payload.decode("latin-1"))
    except ValueError:
        parsed = None  # the event still names the destination and the control ID
    if parsed is not None:
        pid = parsed.first("PID")
        patient_id = "" if pid is None else pid.value(3)
        found = [s.value(18) for s in parsed.all("OBR")] + [s.value(1)
                                                             for s in parsed.all("IPC")]
        accessions = tuple(dict.fromkeys(a for a in found if a))
    return export(local, destination=destination, host=host,
                  message_type=message.message_type, control_id=message.control_id,
                  patient_id=patient_id, accessions=accessions)
