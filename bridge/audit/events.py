"""Audit events as data, and one builder per kind of event the daemon records.

An ``AuditEvent`` is what DICOM PS3.15 A.5 calls an audit message, minus the
AuditSourceIdentification (the trail adds it: it is the same for every event of
this daemon). The builders here are pure: the hooks in the domain packages call
them (or the AuditTrail's methods that wrap them) with plain values.

This is the one place where patient identifiers are meant to go: into the audit
trail, never into the application log.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from bridge.audit import codes
from bridge.audit.codes import Code

Action = Literal["C", "R", "U", "D", "E"]
# EventOutcomeIndicator: success, minor failure, serious failure, major failure.
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12
# What a participant is, for the local copy's filters (``audit list --user/--ae``).
Kind = Literal["user", "ae", "app", "process"]


@dataclass(frozen=True, slots=True)
class Participant:
    """An ActiveParticipant: who (or what) took part."""

    user_id: str
    requestor: bool
    kind: Kind
    roles: tuple[Code, ...] = ()
    alt_user_id: str = ""
    user_name: str = ""
    network: str = ""  # NetworkAccessPointID: a host name or an IP address

    @property
    def network_type(self) -> str:
        """NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
        try:
            ipaddress.ip_address(self.network)
        except ValueError:
            return "1"
        return "2"


@dataclass(frozen=True, slots=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: what the event was about."""

    id: str
    id_type: Code
    type_code: str  # 1 person, 2 system object, 3 organization, 4 other
    role: str  # ParticipantObjectTypeCodeRole: 1 patient, 3 report, 24 query, ...
    name: str = ""
    query: bytes | None = None  # ParticipantObjectQuery (base64 in the message)
    details: tuple[tuple[str, bytes], ...] = ()  # ParticipantObjectDetail type/value
    mpps: tuple[str, ...] = ()
    accessions: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    lifecycle: str = ""  # ParticipantObjectDataLifeCycle


@dataclass(frozen=True, slots=True)
class AuditEvent:
    event_id: Code
    action: Action
    outcome: int
    participants: tuple[Participant, ...]
    objects: tuple[ParticipantObject, ...] = ()
    type_codes: tuple[Code, ...] = ()
    outcome_text: str = ""  # EventOutcomeDescription (why it failed)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    # For the local copy's indexed columns.
    @property
    def patients(self) -> tuple[str, ...]:
        return tuple(o.id for o in self.objects if o.type_code == "1" and o.role == "1")

    def users(self, *kinds: Kind) -> tuple[str, ...]:
        return tuple(p.user_id for p in self.participants if p.kind in kinds)


@dataclass(frozen=True, slots=True)
class Local:
    """This daemon as a participant: its AE title or application name, the process
    ID (AlternativeUserID) and the host it runs on."""

    user_id: str
    process: str
    host: str

    def me(self, *, requestor: bool = False, roles: tuple[Code, ...] = (),
           user_id: str = "") -> Participant:
        return Participant(user_id or self.user_id, requestor, "process", roles,
                           alt_user_id=self.process, network=self.host)


def patient(patient_id: str, *, accessions: tuple[str, ...] = (), control_id: str = "",
            studies: tuple[str, ...] = (), mpps: tuple[str, ...] = (),
            lifecycle: str = "") -> ParticipantObject:
    """The patient as a participant object; the HL7 message control ID as the
    ``MSH-10`` detail (as IHE ITI's audit messages carry it)."""
    details = (("MSH-10", control_id.encode()),) if control_id else ()
    return ParticipantObject(patient_id, codes.PATIENT_NUMBER, "1", "1", details=details,
                             accessions=accessions, studies=studies, mpps=mpps,
                             lifecycle=lifecycle)


def application_activity(local: Local, *, start: bool, user: str = "") -> AuditEvent:
    who = [local.me(roles=(codes.APPLICATION,))]
    if user:
        who.append(Participant(user, True, "user", (codes.APPLICATION_LAUNCHER,)))
    return AuditEvent(codes.APPLICATION_ACTIVITY, "E", SUCCESS, tuple(who),
                      type_codes=(codes.APPLICATION_START if start
                                  else codes.APPLICATION_STOP,))


@dataclass(frozen=True, slots=True)
class HL7Facts:
    """What an HL7 message in says, for its Order or Patient Record event."""

    message_type: str  # MSH-9, e.g. ORM^O01
    control_id: str  # MSH-10
    sending_application: str  # MSH-3
    sending_facility: str  # MSH-4
    peer: str  # the sender's address (host:port or host)
    patient_id: str = ""  # PID-3, first identifier
    accessions: tuple[str, ...] = ()
    action: Action = "U"
    patient_record: bool = False  # an ADT message: Patient Record, else Order Record
    accepted: bool = True
    reason: str = ""  # why it was rejected (the ERR text: no patient data)


def _host(peer: str) -> str:
    """``host:port`` -> host (IPv6 addresses keep their colons)."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    host, sep, port = peer.rpartition(":")
    return host if sep and port.isdigit() and ":" not in host else peer


def hl7_record(local: Local, facts: HL7Facts) -> AuditEvent:
    """Order Record (ORM, OMI, OMG, ORU) or Patient Record (ADT) for one message in:
    the sender (MSH-3|MSH-4, from its address) and this daemon, the patient with the
    accessions and the message control ID."""
    sender = Participant(f"{facts.sending_application}|{facts.sending_facility}", True,
                         "app", (codes.SOURCE,), network=_host(facts.peer))
    objects = (patient(facts.patient_id, accessions=facts.accessions,
                       control_id=facts.control_id),) if facts.patient_id else ()
    kind = codes.PATIENT_RECORD if facts.patient_record else codes.ORDER_RECORD
    transaction = (codes.RAD_12 if facts.patient_record
                   else codes.RAD_4 if facts.action == "C" else codes.RAD_13)
    return AuditEvent(kind, facts.action, SUCCESS if facts.accepted else MINOR_FAILURE,
                      (sender, local.me(roles=(codes.DESTINATION,))), objects,
                      type_codes=(transaction,),
                      outcome_text="" if facts.accepted else (facts.reason or "rejected"))


def query(local: Local, *, calling_ae: str, host: str, called_ae: str, identifier: bytes,
          transfer_syntax: str, outcome: int = SUCCESS, outcome_text: str = "",
          patient_id: str = "") -> AuditEvent:
    """A Modality Worklist C-FIND: the identifier as sent, base64 in the message."""
    obj = ParticipantObject(codes.MWL_FIND, codes.SOP_CLASS_UID, "2", "3", query=identifier,
                            details=(("TransferSyntax", transfer_syntax.encode()),))
    objects: tuple[ParticipantObject, ...] = (obj,)
    if patient_id:
        objects += (patient(patient_id),)
    return AuditEvent(codes.QUERY, "E", outcome,
                      (Participant(calling_ae, True, "ae", (codes.SOURCE,), network=host),
                       local.me(user_id=called_ae, roles=(codes.DESTINATION,))),
                      objects, type_codes=(codes.RAD_5,), outcome_text=outcome_text)


def _mpps_facts(mpps_uid: str, status: str, patient_id: str, accessions: tuple[str, ...],
                studies: tuple[str, ...]) -> tuple[tuple[ParticipantObject, ...], Code]:
    """An MPPS's patient object (if known) and its transaction: RAD-7 once final."""
    objects: tuple[ParticipantObject, ...] = ()
    if patient_id:
        objects = (patient(patient_id, accessions=accessions, studies=studies,
                           mpps=(mpps_uid,) if mpps_uid else ()),)
    return objects, (codes.RAD_7 if status in ("COMPLETED", "DISCONTINUED") else codes.RAD_6)


def procedure_record(local: Local, *, calling_ae: str, host: str, create: bool,
                     mpps_uid: str, status: str, patient_id: str = "",
                     accessions: tuple[str, ...] = (), studies: tuple[str, ...] = (),
                     outcome: int = SUCCESS, outcome_text: str = "") -> AuditEvent:
    """An MPPS N-CREATE (Create) or N-SET (Update)."""
    objects, transaction = _mpps_facts(mpps_uid, status, patient_id, accessions, studies)
    return AuditEvent(codes.PROCEDURE_RECORD, "C" if create else "U", outcome,
                      (Participant(calling_ae, True, "ae", (codes.SOURCE,), network=host),
                       local.me(roles=(codes.DESTINATION,))),
                      objects, type_codes=(transaction,), outcome_text=outcome_text)


def pacs_query(local: Local, *, calling_ae: str, pacs_ae: str, host: str, identifier: bytes,
               transfer_syntax: str, outcome: int = SUCCESS, outcome_text: str = "",
               patient_id: str = "", accessions: tuple[str, ...] = (),
               studies: tuple[str, ...] = ()) -> AuditEvent:
    """A Study Root C-FIND this daemon sends to a PACS (reconciliation, PS3.15
    A.5.3.2): the daemon is the requestor and Source, the PACS the Destination; the
    identifier as sent, base64 in ParticipantObjectQuery; the item's patient."""
    obj = ParticipantObject(codes.STUDY_ROOT_FIND, codes.SOP_CLASS_UID, "2", "3",
                            query=identifier,
                            details=(("TransferSyntax", transfer_syntax.encode()),))
    objects: tuple[ParticipantObject, ...] = (obj,)
    if patient_id:
        objects += (patient(patient_id, accessions=accessions, studies=studies),)
    return AuditEvent(codes.QUERY, "E", outcome,
                      (local.me(requestor=True, user_id=calling_ae, roles=(codes.SOURCE,)),
                       Participant(pacs_ae, False, "ae", (codes.DESTINATION,),
                                   network=host)),
                      objects, outcome_text=outcome_text)


def study_notice(local: Local, *, informant: str, informant_requested: bool,
                 host: str = "", kind: Kind = "ae", study_uid: str = "",
                 patients: tuple[ParticipantObject, ...] = (),
                 type_codes: tuple[Code, ...] = (), outcome: int = SUCCESS,
                 outcome_text: str = "") -> AuditEvent:
    """Word that a study reached the PACS, and the worklist items it COMPLETED (the
    ``patients``): a Procedure Record update, as an MPPS N-SET COMPLETED is.
    ``informant`` told the daemon (the PACS's AE, an IAN's calling AE, the API user of
    Orthanc's push), Source, and the requestor when it asked for the change (IAN,
    push); for the daemon's own C-FIND the daemon is the requestor."""
    who = Participant(informant or "?", informant_requested, kind, (codes.SOURCE,),
                      network=_host(host) if host else "")
    me = local.me(requestor=not informant_requested, roles=(codes.DESTINATION,))
    study = (ParticipantObject(study_uid, codes.STUDY_INSTANCE_UID, "2", "3"),) \
        if study_uid else ()
    return AuditEvent(codes.PROCEDURE_RECORD, "U", outcome, (who, me), study + patients,
                      type_codes=type_codes, outcome_text=outcome_text)


def export(local: Local, *, destination: str, host: str, message_type: str,
           control_id: str, patient_id: str = "", accessions: tuple[str, ...] = ()
           ) -> AuditEvent:
    """An HL7 status message delivered to a RIS (acknowledged AA/CA)."""
    objects: tuple[ParticipantObject, ...] = ()
    if patient_id:
        objects = (patient(patient_id, accessions=accessions, control_id=control_id),)
    return AuditEvent(codes.EXPORT, "R", SUCCESS,
                      (local.me(requestor=True, roles=(codes.SOURCE,)),
                       Participant(destination, False, "app", (codes.DESTINATION,),
                                   network=host)),
                      objects, outcome_text="", type_codes=())


def security_alert(local: Local, *, type_code: Code, what: str, peer: str = "",
                   user: str = "", outcome: int = MINOR_FAILURE,
                   outcome_text: str = "") -> AuditEvent:
    """A Security Alert: ``what`` names the node, setting or file concerned (never
    patient data); ``peer`` the remote address, ``user`` who caused it."""
    who = [local.me(requestor=not (peer or user))]
    if peer or user:
        who.insert(0, Participant(user or _host(peer), True, "user" if user else "ae",
                                  network=_host(peer) if peer else ""))
    obj = ParticipantObject(what, codes.NODE_ID if peer else codes.URI, "2", "13")
    return AuditEvent(codes.SECURITY_ALERT, "E", outcome, tuple(who), (obj,),
                      type_codes=(type_code,), outcome_text=outcome_text)


def user_authentication(local: Local, *, user: str, host: str, login: bool,
                        success: bool = True) -> AuditEvent:
    return AuditEvent(codes.USER_AUTHENTICATION, "E",
                      SUCCESS if success else MINOR_FAILURE,
                      (Participant(user, True, "user", network=host), local.me()),
                      type_codes=(codes.LOGIN if login else codes.LOGOUT,),
                      outcome_text="" if success else "wrong name or password")


def operator_action(local: Local, *, user: str, role: str, action: str, target_kind: str,
                    target_id: str, host: str = "", patient_id: str = "",
                    accessions: tuple[str, ...] = ()) -> AuditEvent:
    """An operator's action in the console or the CLI (replay, retry, cancel, a
    manual item ...): Order Record with the user as the requesting participant, or
    Security Alert (Use of Restricted Function) for actions on no order."""
    operator = Participant(user, True, "user", alt_user_id=role, network=host)
    action_code: Action = ("C" if action.endswith(".create")
                           else "D" if action.endswith(".cancel") else "U")
    details = (("action", action.encode()), (target_kind, target_id.encode()))
    if patient_id:
        obj = ParticipantObject(patient_id, codes.PATIENT_NUMBER, "1", "1", details=details,
                                accessions=accessions)
        return AuditEvent(codes.ORDER_RECORD, action_code, SUCCESS,
                          (operator, local.me()), (obj,))
    obj = ParticipantObject(f"{target_kind}:{target_id}", codes.URI, "2", "3",
                            details=details)
    return AuditEvent(codes.SECURITY_ALERT, "E", SUCCESS, (operator, local.me()), (obj,),
                      type_codes=(codes.USE_OF_RESTRICTED_FUNCTION,))


def forwarded(local: Local, *, calling_ae: str, destination_ae: str, host: str,
              create: bool, mpps_uid: str, status: str = "", patient_id: str = "",
              accessions: tuple[str, ...] = (), studies: tuple[str, ...] = (),
              outcome: int = SUCCESS, outcome_text: str = "") -> AuditEvent:
    """An MPPS N-CREATE or N-SET this daemon forwarded to another MPPS SCP: a
    Procedure Record (RAD-6/RAD-7 as a Performed Procedure Step Manager sends them on,
    IHE RAD TF), the daemon the requestor and Source, the destination's AE and host the
    Destination; outcome 4 when it became a dead letter. Not Export (the MPPS does
    not leave DICOM's security domain for media or a non-DICOM system) nor DICOM
    Instances Transferred (an MPPS is a normalized object, not composite instances)."""
    objects, transaction = _mpps_facts(mpps_uid, status, patient_id, accessions, studies)
    return AuditEvent(codes.PROCEDURE_RECORD, "C" if create else "U", outcome,
                      (local.me(requestor=True, user_id=calling_ae, roles=(codes.SOURCE,)),
                       Participant(destination_ae, False, "ae", (codes.DESTINATION,),
                                   network=_host(host) if host else "")),
                      objects, type_codes=(transaction,), outcome_text=outcome_text)


def conflict(local: Local, *, informant: str, host: str = "", patient_id: str = "",
             accession: str = "", expected_study: str = "", found_study: str = "",
             reason: str = "") -> AuditEvent:
    """A reconciliation conflict flagged: the PACS holds a study under the item's
    accession with another Study Instance UID or patient. An Order Record update with
    outcome 4 (the order was not completed; it waits for a person), not a Security
    Alert: nothing security-relevant happened (PS3.15 A.5.3.13 is for breaches of
    node, user or configuration security), the order's record changed."""
    who = Participant(informant or "?", False, "ae", (codes.SOURCE,), network=host)
    objects: list[ParticipantObject] = []
    if patient_id:
        objects.append(patient(patient_id, accessions=(accession,) if accession else (),
                               studies=(expected_study,) if expected_study else ()))
    if found_study:
        objects.append(ParticipantObject(found_study, codes.STUDY_INSTANCE_UID, "2", "3"))
    return AuditEvent(codes.ORDER_RECORD, "U", MINOR_FAILURE,
                      (who, local.me(requestor=True, roles=(codes.DESTINATION,))),
                      tuple(objects), outcome_text=reason or "reconciliation conflict")


def bulk_import(local: Local, *, user: str, host: str, paths: tuple[str, ...], fmt: str,
                loaded: int, unchanged: int, rejected: int, dead_letters: str = "",
                role: str = "") -> AuditEvent:
    """One ``mwl-bridge import`` run: an Order Record (Create) with the OS user as the
    requestor and the import as a Job object carrying the counts; outcome 4 when
    something was rejected (the dead-letter file holds the rejects). One event per run,
    not per item: a million-item migration must not flood the repository; the items'
    own history is in the store (docs/audit.md)."""
    operator = Participant(user, True, "user", (codes.APPLICATION_LAUNCHER,),
                           alt_user_id=role, network=host)
    details = (("format", fmt.encode()), ("loaded", str(loaded).encode()),
               ("unchanged", str(unchanged).encode()), ("rejected", str(rejected).encode()),
               *((("dead-letters", dead_letters.encode()),) if dead_letters else ()))
    job = ParticipantObject(f"import:{fmt}", codes.URI, "2", "20", details=details)
    sources = tuple(ParticipantObject(p, codes.URI, "2", "17") for p in paths)
    return AuditEvent(codes.ORDER_RECORD, "C", MINOR_FAILURE if rejected else SUCCESS,
                      (operator, local.me(roles=(codes.DESTINATION,))), (job, *sources),
                      outcome_text=f"{rejected} item(s) rejected" if rejected else "")
