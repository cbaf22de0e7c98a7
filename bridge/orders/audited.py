"""An HL7 message in as its audit event (Order Record or Patient Record).

Built on the audit trail's spool thread (``AuditTrail.record_later``), never on the
path to the ACK: the frame is read again there for what the event names (the
patient, the accessions), so the intake keeps its speed whatever the audit needs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from bridge.audit.events import Action, AuditEvent, HL7Facts, Local, hl7_record
from bridge.hl7 import Message, parse_message
from bridge.orders.apply import Outcome

# ADT events that add a person (A01 admit, A04 register, A05 pre-admit, A28 add person).
_ADT_CREATE = frozenset({"A01", "A04", "A05", "A28"})
# Order controls that end an order (cancel, discontinue, and their confirmations).
_ORDER_DELETE = frozenset({"CA", "CR", "OC", "DC", "DR", "OD"})


# What of a frame waits in the audit queue: the segments an event names (MSH, PID, ORC,
# OBR, IPC) come first; a large message is large for its OBX/NTE text, which the event
# does not need. Bounds the queue's memory whatever the frames' size.
KEEP_BYTES = 64 * 1024


def hl7_builder(payload: bytes, peer: str, outcome: Outcome
                ) -> Callable[[Local], AuditEvent | None]:
    """What the intake hands the audit trail: the event, built later on its thread."""
    head = payload if len(payload) <= KEEP_BYTES else payload[:payload.rfind(
        b"\r", 0, KEEP_BYTES) + 1 or KEEP_BYTES]
    return partial(hl7_event, head, peer, outcome)


def hl7_event(payload: bytes, peer: str, outcome: Outcome, local: Local) -> AuditEvent | None:
    """The event of one message in; None for an exact resend (nothing happened) and
    for a frame that is not HL7 (no header to name a sender by)."""
    if outcome.replayed or not outcome.ack_code:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = payload.decode("latin-1")  # identifiers are ASCII in every HL7 charset
    try:
        message = parse_message(text.lstrip("\ufeff"))
    except ValueError:
        return None
    code, event = message.msh.value(9, 1), message.msh.value(9, 2)
    accepted = outcome.ack_code in ("AA", "CA")
    reason = "" if accepted or outcome.rejection is None else outcome.rejection.text
    facts = HL7Facts(
        message_type=message.message_type, control_id=message.control_id,
        sending_application=message.msh.value(3), sending_facility=message.msh.value(4),
        peer=peer, patient_id=_patient_id(message), accessions=_accessions(message),
        action=_action(message, code, event), patient_record=code == "ADT",
        accepted=accepted, reason=reason or ("" if accepted else "rejected"))
    return hl7_record(local, facts)


def _patient_id(message: Message) -> str:
    pid = message.first("PID")
    return "" if pid is None else pid.value(3)


def _accessions(message: Message) -> tuple[str, ...]:
    # OBR-18 (Placer Field 1, the accession in IHE's ORM) and IPC-1 (OMI).
    found = [seg.value(18) for seg in message.all("OBR")]
    found += [seg.value(1) for seg in message.all("IPC")]
    return tuple(dict.fromkeys(a for a in found if a))


def _action(message: Message, code: str, event: str) -> Action:
    if code == "ADT":
        return "C" if event in _ADT_CREATE else "U"
    if code == "ORU":
        return "U"
    controls = {seg.value(1) for seg in message.all("ORC")}
    if controls and controls <= _ORDER_DELETE:
        return "D"
    return "C" if "NW" in controls else "U"
