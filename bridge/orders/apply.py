"""The write job of one message: replay check, decisions, and every write, atomically.

Each message becomes one job on the store's single writer (CommitQueue). The
job runs inside the batch transaction, in its own savepoint, so a message is
applied entirely or not at all, and its ACK is built from what the job did
and sent only after the commit. In order:

1. Replay check against the message log: an accepted message with the same
   MSH-3/MSH-4/MSH-10 and the same content hash means this is a resend; its
   original ACK is the answer and nothing changes. The same key with other
   content is rejected (AR 205 at MSH-10) and kept as a dead letter. With
   several instances on one database the key is locked first (the same message
   sent to two instances at once is decided one after the other), and a batch
   that loses a race for a new row (a new patient or order another instance
   just committed) is run again by the store (SqlStore.write), not rejected.
2. A rejection decided before the job (mapping, patient format checks) is
   recorded as a dead letter with its ACK.
3. Otherwise the message is recorded as accepted and its work applied: reads
   of what the store knows, the lifecycle's decisions, the writes. A
   rejection on the way rolls the work back to a savepoint and records the
   message as rejected instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from pydicom import Dataset

from bridge.hl7 import ErrorDetail
from bridge.mapping import OrderControl
from bridge.orders import errors
from bridge.orders.checks import (
    conflict_rejection,
    demographics_conflict,
    final_record,
    resolve_identity,
)
from bridge.orders.errors import Rejection
from bridge.orders.lifecycle import StepChange, decide_step
from bridge.orders.patients import patient_key, patient_part, text, with_patient
from bridge.orders.settings import OrderControlRule, OrdersSettings
from bridge.steps import Source, StepState, change_status, replaced, step_status
from bridge.store.base import InboundMessage, StoreTx, UpsertOutcome
from bridge.store.items import dumps_item
from bridge.store.orders_tx import OrdersTx, PatientRecord, StoredStep

log = logging.getLogger(__name__)

AckBuilder = Callable[[str, Sequence[ErrorDetail]], bytes]


@dataclass(frozen=True, slots=True)
class Envelope:
    """What the job records about the message, whatever it does."""

    record: InboundMessage  # ack_code/ack/error are filled in by the job
    digest: str  # content hash (bridge.orders.replay)
    make_ack: AckBuilder
    replay_of: int | None = None  # a dead letter replayed by an operator

    @property
    def key(self) -> tuple[str, str, str] | None:
        r = self.record
        if not r.control_id:
            return None
        return r.sending_application, r.sending_facility, r.control_id


@dataclass(frozen=True, slots=True)
class Outcome:
    ack: bytes
    ack_code: str
    message_id: int | None
    summary: str  # counts and kinds only: safe to log at INFO
    replayed: bool = False
    rejection: Rejection | None = None
    flags: tuple[str, ...] = ()


@dataclass(slots=True)
class Applied:
    """What a work item did: counts for the log, flags for operators."""

    inserted: int = 0
    replaced: int = 0
    unchanged: int = 0
    notes: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)

    def count(self, outcome: UpsertOutcome | StepChange) -> None:
        if outcome in (UpsertOutcome.INSERTED, StepChange.INSERT):
            self.inserted += 1
        elif outcome in (UpsertOutcome.UPDATED, StepChange.REPLACE):
            self.replaced += 1
        else:
            self.unchanged += 1

    def flag(self, name: str) -> None:
        if name not in self.flags:
            self.flags.append(name)

    @property
    def summary(self) -> str:
        parts = [f"{n} {what}" for n, what in ((self.inserted, "inserted"),
                                                (self.replaced, "updated"),
                                                (self.unchanged, "unchanged")) if n]
        return ", ".join([*(parts or ["no steps"]), *self.notes])


class Work(Protocol):
    """One message's effect; ``apply`` reads and writes, or raises a Rejection."""

    def apply(self, otx: OrdersTx, message_id: int) -> Applied: ...


def message_job(envelope: Envelope, work: Work | Rejection) -> Callable[[StoreTx], Outcome]:
    def job(tx: StoreTx) -> Outcome:
        otx = OrdersTx(tx)
        key = envelope.key
        if key is not None and envelope.digest:  # no digest: a truncated (oversize) frame
            # Another instance deciding the same message waits here (or we do): the
            # later one finds the first's row, and answers with its ACK.
            otx.lock_message_key(*key)
            prior = otx.find_applied(*key)
            if prior is not None and prior.content_hash:  # rows before replay detection: ""
                if prior.content_hash == envelope.digest:
                    return Outcome(prior.ack, "AA", prior.id,
                                   f"resend of message #{prior.id}, answered with its ACK",
                                   replayed=True)
                return _rejected(otx, envelope, Rejection(
                    "AR", errors.DUPLICATE_KEY, "MSH^1^10",
                    f"message control ID {key[2]!r} from {key[0]}/{key[1]} was already "
                    f"accepted (message #{prior.id}) with different content; a new message "
                    "needs a new control ID",
                    log_text=f"control ID already accepted as message #{prior.id} with "
                             "different content"))
        if isinstance(work, Rejection):
            return _rejected(otx, envelope, work)
        ack = envelope.make_ack("AA", ())
        otx.savepoint("message")
        message_id = otx.record(replace(envelope.record, ack_code="AA", ack=ack),
                                content_hash=envelope.digest, replay_of=envelope.replay_of)
        try:
            applied = work.apply(otx, message_id)
        except Rejection as rejection:
            otx.rollback_to("message")
            return _rejected(otx, envelope, rejection)
        otx.release("message")
        otx.set_outcome(message_id, applied.summary, ",".join(applied.flags))
        return Outcome(ack, "AA", message_id, applied.summary, flags=tuple(applied.flags))

    return job


def _rejected(otx: OrdersTx, envelope: Envelope, rejection: Rejection) -> Outcome:
    ack = envelope.make_ack(rejection.ack_code, [rejection.error])
    reason = f"{rejection.code} {rejection.location} {rejection.text}".replace("  ", " ")
    message_id = otx.record(
        replace(envelope.record, ack_code=rejection.ack_code, ack=ack, error=reason.strip()),
        content_hash=envelope.digest, replay_of=envelope.replay_of)
    return Outcome(ack, rejection.ack_code, message_id, rejection.log_text, rejection=rejection)


# --- orders (ORM^O01, OMI^O23, OMG^O19) ---------------------------------------------

class StepFacts(Protocol):
    """What the write job asks of a mapped step: a MappedStep, or a DetachedStep (its
    answers computed ahead, in the worker process that mapped it)."""

    @property
    def item(self) -> Dataset: ...

    def locate(self, keyword: str) -> str: ...

    def from_message(self, keyword: str) -> bool: ...


# The questions the write job asks (lifecycle.decide_step, OrderWork): a DetachedStep
# answers these and no other.
LOCATED = ("AccessionNumber",)
FROM_MESSAGE = ("StudyInstanceUID",)


class DetachedStep:
    """A mapped step without its message: the item and the few answers the write job
    needs, so a worker process sends back a Dataset and a few strings, not the
    parsed message and the mapping."""

    __slots__ = ("_from_message", "_locations", "item")

    def __init__(self, step: StepFacts) -> None:
        self.item = step.item
        self._locations = {k: step.locate(k) for k in LOCATED}
        self._from_message = {k: step.from_message(k) for k in FROM_MESSAGE}

    def locate(self, keyword: str) -> str:
        return self._locations[keyword]  # KeyError: add the keyword to LOCATED

    def from_message(self, keyword: str) -> bool:
        return self._from_message[keyword]  # KeyError: add the keyword to FROM_MESSAGE

    def __getstate__(self) -> tuple[Dataset, dict[str, str], dict[str, bool]]:
        return self.item, self._locations, self._from_message

    def __setstate__(self, state: tuple[Dataset, dict[str, str], dict[str, bool]]) -> None:
        self.item, self._locations, self._from_message = state


@dataclass(frozen=True, slots=True)
class OrderStep:
    mapped: StepFacts  # the item, and where in the message its values came from
    rule: OrderControlRule
    control: OrderControl  # mapped.order_control, read once

    @property
    def item(self) -> Dataset:
        return self.mapped.item


def _with_identity(item: Dataset, key: tuple[str, str]) -> Dataset:
    out = replaced(item, "PatientID", key[0])
    if key[1] or "IssuerOfPatientID" in out:
        out = replaced(out, "IssuerOfPatientID", key[1])
    return out


def _record_from(key: tuple[str, str], patient: Dataset, keywords: Sequence[str],
                 known: PatientRecord | None) -> PatientRecord:
    return PatientRecord(
        patient_id=key[0], issuer=key[1], name=text(patient, "PatientName"),
        birth_date=text(patient, "PatientBirthDate"), sex=text(patient, "PatientSex"),
        attributes=dumps_item(patient_part(patient, keywords)),
        flags=known.flags if known else "")


def _same_record(a: PatientRecord | None, b: PatientRecord) -> bool:
    if a is None:
        return False
    return (a.name, a.birth_date, a.sex, a.flags, a.merged_into_id, a.attributes) == (
        b.name, b.birth_date, b.sex, b.flags, b.merged_into_id, b.attributes)


class OrderWork:
    """An order message: each of its steps through the lifecycle, for one patient."""

    def __init__(self, steps: Sequence[OrderStep], settings: OrdersSettings,
                 patient_keywords: Sequence[str]) -> None:
        self.steps = list(steps)
        self.settings = settings
        self.patient_keywords = patient_keywords

    def apply(self, otx: OrdersTx, message_id: int) -> Applied:
        done = Applied()
        s = self.settings
        first = self.steps[0].item
        identity = resolve_identity(patient_key(first), otx.patient, s.patients)
        known = identity.record
        if identity.redirected_from is not None:
            done.flag("patient_redirected")
        conflict = known is not None and demographics_conflict(known, first)
        if conflict:
            if s.patients.demographics_conflict == "reject":
                raise conflict_rejection()
            if s.patients.demographics_conflict == "accept_flag":
                done.flag("demographics_conflict")
        seen: set[tuple[str, str, str]] = set()
        writes_content = False
        for step in self.steps:
            item = step.item
            if identity.redirected_from is not None:
                item = _with_identity(item, identity.key)
            accession = text(item, "AccessionNumber")
            rpid = text(item, "RequestedProcedureID")
            sps = item.ScheduledProcedureStepSequence[0] if item.get(
                "ScheduledProcedureStepSequence") else Dataset()
            sps_id = text(sps, "ScheduledProcedureStepID")
            order_key = (accession, rpid, sps_id)
            if order_key in seen:
                raise Rejection("AE", errors.DUPLICATE_KEY, step.control.location,
                                "two groups of this message name the same procedure step "
                                "(Accession Number, Requested Procedure ID, SPS ID)")
            seen.add(order_key)
            self._check_accession(otx, accession, identity.key, step, done)
            existing = (otx.step_by_order(*order_key)
                        or otx.step_by_key(text(item, "StudyInstanceUID"), rpid, sps_id))
            decision = decide_step(
                item, step.rule, existing, s, control=step.control, locate=step.mapped.locate,
                uid_from_message=partial(step.mapped.from_message, "StudyInstanceUID"))
            if decision.note:
                done.flag(decision.note)
            if decision.change is StepChange.INSERT:
                done.count(otx.insert_step(decision.item, message_id))
            elif decision.change is StepChange.REPLACE:
                assert existing is not None and decision.step_id == existing.id
                # The lifecycle decided the status under the conflict rule; the write
                # (content and status together) goes through the one status function.
                done.count(change_status(
                    otx.tx, StepState(existing.id, existing.status, existing.item),
                    step_status(decision.item), source=Source.HL7, content=decision.item,
                    message_id=message_id).written)
            else:
                done.count(decision.change)
            writes_content = writes_content or step.rule.action != "status"
        if writes_content and identity.redirected_from is None:
            self._save_patient(otx, identity.key, first, known, conflict, message_id)
        return done

    def _check_accession(self, otx: OrdersTx, accession: str, key: tuple[str, str],
                         step: OrderStep, done: Applied) -> None:
        if not accession:
            return
        others = otx.accession_owners(accession) - {key}
        if not others:
            return
        if self.settings.accession_other_patient == "allow_with_warning":
            log.warning("an Accession Number is reused for another patient (allowed by "
                        "orders.accession_other_patient)")
            done.flag("accession_other_patient")
            return
        raise Rejection("AR", errors.DUPLICATE_KEY,
                        step.mapped.locate("AccessionNumber") or step.control.location,
                        f"Accession Number {accession!r} belongs to an order of another "
                        "patient",
                        log_text="the Accession Number belongs to an order of another patient")

    def _save_patient(self, otx: OrdersTx, key: tuple[str, str], patient: Dataset,
                      known: PatientRecord | None, conflict: bool, message_id: int) -> None:
        if conflict and known is not None:
            if self.settings.patients.demographics_conflict == "accept_flag":
                flags = ",".join(sorted({*filter(None, known.flags.split(",")),
                                         "demographics_conflict"}))
                if flags != known.flags:
                    otx.save_patient(replace(known, flags=flags), message_id)
                return
        record = _record_from(key, patient, self.patient_keywords, known)
        if not _same_record(known, record):
            otx.save_patient(record, message_id, exists=known is not None)


# --- ADT: updates, merges, identifier changes --------------------------------------

class PatientUpdateWork:
    """A08/A31 (and the other update events): new demographics on every stored item."""

    def __init__(self, patient: Dataset, keywords: Sequence[str],
                 settings: OrdersSettings) -> None:
        self.patient = patient
        self.keywords = keywords
        self.settings = settings

    def apply(self, otx: OrdersTx, message_id: int) -> Applied:
        done = Applied()
        identity = resolve_identity(patient_key(self.patient), otx.patient,
                                    self.settings.patients)
        patient = self.patient
        if identity.redirected_from is not None:
            done.flag("patient_redirected")
            patient = _with_identity(patient, identity.key)
        _restyle(otx, otx.steps_by_patient(*identity.key), patient, self.keywords,
                 message_id, done)
        record = _record_from(identity.key, patient, self.keywords, identity.record)
        if not _same_record(identity.record, record):
            otx.save_patient(replace(record, merged_into_id="", merged_into_issuer=""),
                             message_id)
        return done


def _restyle(otx: OrdersTx, steps: Sequence[StoredStep], patient: Dataset,
             keywords: Sequence[str], message_id: int, done: Applied) -> None:
    for step in steps:
        done.count(otx.replace_step(step.id, with_patient(step.item, patient, keywords),
                                    message_id))


@dataclass(frozen=True, slots=True)
class MergePair:
    """One PID/MRG pair of an A40 or A47: the surviving (or new) patient and the prior ID."""

    patient: Dataset
    prior: tuple[str, str]
    pid_seq: int
    mrg_seq: int


class MergeWork:
    """A40 (merge: the prior patient's items move to the survivor) and A47 (the
    prior identifier is replaced by the new one)."""

    def __init__(self, pairs: Sequence[MergePair], keywords: Sequence[str],
                 settings: OrdersSettings, *, change_id: bool, event: str) -> None:
        self.pairs = list(pairs)
        self.keywords = keywords
        self.settings = settings
        self.change_id = change_id
        self.event = event

    def apply(self, otx: OrdersTx, message_id: int) -> Applied:
        done = Applied()
        for pair in self.pairs:
            self._one(otx, pair, message_id, done)
        return done

    def _one(self, otx: OrdersTx, pair: MergePair, message_id: int, done: Applied) -> None:
        policy = self.settings.patients.merge_of_merged
        mrg_loc, pid_loc = f"MRG^{pair.mrg_seq}^1^1^1", f"PID^{pair.pid_seq}^3^1^1"
        survivor = patient_key(pair.patient)
        prior = pair.prior
        if prior == survivor:
            raise Rejection("AE", errors.DUPLICATE_KEY, mrg_loc,
                            "MRG-1 (prior patient) names the same patient as PID-3")
        survivor_rec = otx.patient(*survivor)
        prior_rec = otx.patient(*prior)
        if prior_rec is not None and prior_rec.merged:
            final = final_record(prior_rec, otx.patient)
            if final is not None and (final.patient_id, final.issuer) == survivor:
                done.notes.append("already merged")  # a repeat of this very merge
                return
        if survivor_rec is not None and survivor_rec.merged:
            final = final_record(survivor_rec, otx.patient)
            if policy == "reject" or final is None:
                raise Rejection("AE", errors.UNKNOWN_KEY, pid_loc,
                                f"the surviving patient {survivor[0]!r} was itself merged into "
                                f"{survivor_rec.merged_into_id!r} "
                                "(orders.patients.merge_of_merged: reject)",
                                log_text="the surviving patient was itself merged")
            survivor, survivor_rec = (final.patient_id, final.issuer), final
            done.flag("merge_followed")
        if self.change_id and (survivor_rec is not None or otx.steps_by_patient(*survivor)):
            raise Rejection("AE", errors.DUPLICATE_KEY, pid_loc,
                            f"the new Patient ID {survivor[0]!r} is already in use; merge the "
                            "two patients with A40 instead",
                            log_text="the new Patient ID of an A47 is already in use")
        if prior_rec is not None and prior_rec.merged:
            final = final_record(prior_rec, otx.patient)
            if policy == "reject" or final is None:
                raise Rejection("AE", errors.UNKNOWN_KEY, mrg_loc,
                                f"the prior patient {prior[0]!r} was already merged into "
                                f"{prior_rec.merged_into_id!r} "
                                "(orders.patients.merge_of_merged: reject)",
                                log_text="the prior patient was already merged")
            prior, prior_rec = (final.patient_id, final.issuer), final
            done.flag("merge_followed")
            if prior == survivor:
                done.notes.append("already merged")
                return
        patient = pair.patient if survivor == patient_key(pair.patient) else \
            _with_identity(pair.patient, survivor)
        own = otx.steps_by_patient(*survivor)
        moved = otx.steps_by_patient(*prior)
        _restyle(otx, [*own, *moved], patient, self.keywords, message_id, done)
        done.notes.append(f"{len(moved)} moved")
        otx.save_patient(_record_from(survivor, patient, self.keywords, survivor_rec),
                         message_id)
        otx.save_patient(PatientRecord(
            patient_id=prior[0], issuer=prior[1],
            name=prior_rec.name if prior_rec else "",
            birth_date=prior_rec.birth_date if prior_rec else "",
            sex=prior_rec.sex if prior_rec else "",
            attributes=prior_rec.attributes if prior_rec else "",
            merged_into_id=survivor[0], merged_into_issuer=survivor[1],
            merge_event=self.event, flags=prior_rec.flags if prior_rec else ""), message_id)
        # Earlier merges into the prior patient now lead straight to the survivor.
        otx.repoint_merged(prior, survivor)


# --- ORU^R01: final results complete the procedure ---------------------------------

@dataclass(frozen=True, slots=True)
class ResultGroup:
    status: str  # OBR-25
    accession: str
    requested_procedure_id: str
    accession_location: str


class ResultWork:
    """ORU^R01: each final OBR sets the status of the steps of its accession."""

    def __init__(self, groups: Sequence[ResultGroup], settings: OrdersSettings) -> None:
        self.groups = list(groups)
        self.settings = settings

    def apply(self, otx: OrdersTx, message_id: int) -> Applied:
        done = Applied()
        r = self.settings.results
        for group in self.groups:
            if group.status not in r.final_statuses:
                done.notes.append(f"result status {group.status or '(empty)'} is not final")
                continue
            steps = otx.steps_by_accession(group.accession) if group.accession else []
            if group.requested_procedure_id:
                steps = [s for s in steps
                         if text(s.item, "RequestedProcedureID") == group.requested_procedure_id]
            if not steps:
                if r.unknown_order == "reject":
                    raise Rejection("AE", errors.UNKNOWN_KEY, group.accession_location,
                                    "a final result for an order that is not scheduled here "
                                    f"(Accession Number {group.accession!r})",
                                    log_text="a final result for an unknown order")
                done.flag("no_matching_order")
                continue
            for step in steps:
                # Already final: the first terminal status stays (bridge/steps/rules.py).
                update = change_status(otx.tx, StepState(step.id, step.status, step.item),
                                       r.status, source=Source.RESULT, message_id=message_id)
                done.count(update.written)
        return done
