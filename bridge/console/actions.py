"""Operator actions as store write jobs: cancel, hold, release and reschedule a
worklist item, create one by hand, retry an outbox message.

Each job runs in one transaction on the daemon's writer (``submit``): the
change goes through ``bridge.steps.change_status`` with the daemon's Reporter
(so the RIS hears of it through the outbox, like an MPPS), and its audit row
is written in the same transaction. A job that may not act raises
``ActionRefused``; its savepoint is rolled back and nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom import Dataset
from pydicom.uid import generate_uid

from bridge.steps import (
    CANCELED,
    HELD,
    SCHEDULED,
    STARTED,
    TERMINAL,
    Reporter,
    Source,
    StepState,
    change_status,
    replaced,
    report_step,
)
from bridge.store import StoreTx, audit_tx, history_tx, mpps_tx, outbox_tx
from bridge.store.items import dumps_item, index_values

SPS = "ScheduledProcedureStepSequence"


class ActionRefused(Exception):
    """The action cannot be done (HTTP ``status``: 404 no such row, 409 not now)."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Actor:
    name: str  # Principal.label
    role: str
    peer: str = ""


@dataclass(frozen=True, slots=True)
class ActionResult:
    id: int
    status: str
    queued: int  # status messages queued for the RIS
    message: str


# action -> the SPS status it asks for
STATUS_ACTIONS = {"cancel": CANCELED, "hold": HELD, "release": SCHEDULED}


def _summary(status: str, item: Dataset) -> dict[str, Any]:
    """What the audit keeps of a step: its status and the scheduling it had."""
    sps = item[SPS][0] if item.get(SPS) else Dataset()
    return {"status": status,
            "start_date": str(sps.get("ScheduledProcedureStepStartDate", "") or ""),
            "start_time": str(sps.get("ScheduledProcedureStepStartTime", "") or ""),
            "station": _station(sps)}


def _station(sps: Dataset) -> str:
    value = sps.get("ScheduledStationAETitle", "")
    if value is None:
        return ""
    return value if isinstance(value, str) else "\\".join(map(str, value))


def _load(tx: StoreTx, step_id: int) -> mpps_tx.StepRecord:
    found = mpps_tx.steps_by_id(tx, [step_id])
    if not found:
        raise ActionRefused(f"no worklist item {step_id}", 404)
    return found[0]


def status_job(step_id: int, action: str, actor: Actor, reporter: Reporter | None,
               reason: str = "") -> Callable[[StoreTx], ActionResult]:
    wanted = STATUS_ACTIONS[action]

    def job(tx: StoreTx) -> ActionResult:
        step = _load(tx, step_id)
        if action == "release" and step.sps_status != HELD:
            raise ActionRefused(f"only a HELD item is released; this one is {step.sps_status}")
        if action == "hold" and step.sps_status == STARTED:
            raise ActionRefused("the modality has started this item; it cannot be held")
        update = change_status(tx, StepState(step.id, step.sps_status, step.item), wanted,
                               source=Source.OPERATOR, reporter=reporter, actor=actor.name,
                               note=reason)
        if not update.decision.changed:
            raise ActionRefused(f"not changed: {update.decision.reason}")
        after = update.decision.status
        audit_tx.record(tx, actor=actor.name, role=actor.role, action=f"step.{action}",
                        target_kind="step", target_id=str(step_id),
                        summary=f"{step.sps_status} -> {after}"
                        + (f"; {reason}" if reason else ""),
                        before=_summary(step.sps_status, step.item),
                        after=_summary(after, update.item), peer=actor.peer)
        return ActionResult(step_id, after, update.queued,
                            f"item {step_id}: {step.sps_status} -> {after}")

    return job


_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{4}(\d{2})?$")


def reschedule_job(step_id: int, date: str, time: str, station: str, actor: Actor,
                   reporter: Reporter | None, reason: str = ""
                   ) -> Callable[[StoreTx], ActionResult]:
    def job(tx: StoreTx) -> ActionResult:
        step = _load(tx, step_id)
        if step.sps_status in TERMINAL or step.sps_status == STARTED:
            raise ActionRefused(f"a {step.sps_status} item is not rescheduled")
        seq = step.item.get(SPS)
        if not seq:
            raise ActionRefused("the item has no Scheduled Procedure Step")
        sps = replaced(seq[0], "ScheduledProcedureStepStartDate", date)
        sps = replaced(sps, "ScheduledProcedureStepStartTime", time)
        if station:
            sps = replaced(sps, "ScheduledStationAETitle", station)
        content = replaced(step.item, SPS, [sps, *list(seq)[1:]])
        update = change_status(tx, StepState(step.id, step.sps_status, step.item),
                               step.sps_status, source=Source.OPERATOR, content=content,
                               reporter=reporter, actor=actor.name, note=reason)
        # The status stays, so change_status reports nothing: the RIS hears of the new
        # time (and station) through an ORC-1 SC message with the status it keeps.
        queued = update.queued + (report_step(tx, step_id, update.item, reporter)
                                  if reporter is not None else 0)
        audit_tx.record(tx, actor=actor.name, role=actor.role, action="step.reschedule",
                        target_kind="step", target_id=str(step_id),
                        summary=f"rescheduled to {date} {time}"
                        + (f" on {station}" if station else "")
                        + (f"; {reason}" if reason else ""),
                        before=_summary(step.sps_status, step.item),
                        after=_summary(update.decision.status, update.item), peer=actor.peer)
        return ActionResult(step_id, update.decision.status, queued,
                            f"item {step_id} rescheduled")

    return job


@dataclass(frozen=True, slots=True)
class NewItem:
    """A worklist item made by hand (RIS downtime)."""

    patient_id: str
    patient_name: str
    accession: str
    modality: str
    station: str
    date: str
    time: str
    procedure: str = ""
    birth_date: str = ""
    sex: str = ""
    issuer: str = ""


def manual_item(new: NewItem, now: datetime) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.AccessionNumber = new.accession
    ds.PatientName = new.patient_name
    ds.PatientID = new.patient_id
    if new.issuer:
        ds.IssuerOfPatientID = new.issuer
    ds.PatientBirthDate = new.birth_date
    ds.PatientSex = new.sex
    ds.StudyInstanceUID = generate_uid()
    ds.RequestedProcedureID = new.accession
    ds.RequestedProcedureDescription = new.procedure
    sps = Dataset()
    sps.ScheduledStationAETitle = new.station
    sps.ScheduledProcedureStepStartDate = new.date
    sps.ScheduledProcedureStepStartTime = new.time
    sps.Modality = new.modality
    sps.ScheduledProcedureStepID = f"M{now:%y%m%d%H%M%S}"
    sps.ScheduledProcedureStepDescription = new.procedure
    sps.ScheduledProcedureStepStatus = SCHEDULED
    ds.ScheduledProcedureStepSequence = [sps]
    del ds.SpecificCharacterSet  # stored items hold Unicode text without one
    return ds


def create_job(new: NewItem, actor: Actor, reporter: Reporter | None = None
               ) -> Callable[[StoreTx], ActionResult]:
    def job(tx: StoreTx) -> ActionResult:
        cur, p = tx.cur, tx.param
        cur.execute(f"SELECT COUNT(*) FROM procedure_step WHERE accession_number = {p}",
                    (new.accession,))
        if int(cur.fetchone()[0]):
            raise ActionRefused(f"an item with Accession Number {new.accession} exists")
        item = manual_item(new, datetime.now())
        tx.upsert_step(item)
        idx = index_values(item)
        cur.execute("SELECT id FROM procedure_step WHERE study_instance_uid = "
                    f"{p} AND requested_procedure_id = {p} AND sps_id = {p}",
                    (idx.study_instance_uid, idx.requested_procedure_id, idx.sps_id))
        step_id = int(cur.fetchone()[0])
        history_tx.record(tx, step_id=step_id, from_status="", to_status=SCHEDULED,
                          source=str(Source.OPERATOR), actor=actor.name, note="made by hand")
        # The RIS has no order for it yet: ORC-1 SN (send order number), ORC-5 SC, with
        # the accession number the operator gave; the RIS matches it by that.
        queued = (report_step(tx, step_id, item, reporter, order_control="SN")
                  if reporter is not None else 0)
        audit_tx.record(tx, actor=actor.name, role=actor.role, action="step.create",
                        target_kind="step", target_id=str(step_id),
                        summary="created by hand", before=None,
                        after={**_summary(SCHEDULED, item), "item": dumps_item(item)},
                        peer=actor.peer)
        return ActionResult(step_id, SCHEDULED, queued, f"item {step_id} created")

    return job


def retry_job(outbox_id: int, actor: Actor) -> Callable[[StoreTx], ActionResult]:
    def job(tx: StoreTx) -> ActionResult:
        cur, p = tx.cur, tx.param
        cur.execute(f"SELECT state, last_error FROM outbox WHERE id = {p}", (outbox_id,))
        row = cur.fetchone()
        if row is None:
            raise ActionRefused(f"no outbox message {outbox_id}", 404)
        if not outbox_tx.requeue(tx, [outbox_id]):
            raise ActionRefused(
                f"outbox message {outbox_id} is {row[0]}" + (
                    "; it has no message text (it could not be built)"
                    if row[0] == "dead" else "; only dead or waiting messages are retried"))
        audit_tx.record(tx, actor=actor.name, role=actor.role, action="outbox.retry",
                        target_kind="outbox", target_id=str(outbox_id),
                        summary=f"{row[0]} -> pending", before={"state": row[0],
                                                                 "last_error": row[1]},
                        after={"state": "pending"}, peer=actor.peer)
        return ActionResult(outbox_id, "pending", 0, f"outbox message {outbox_id} re-queued")

    return job


def audit_job(actor: Actor, action: str, target_kind: str, target_id: str, summary: str,
              before: Any = None, after: Any = None) -> Callable[[StoreTx], int]:
    def job(tx: StoreTx) -> int:
        return audit_tx.record(tx, actor=actor.name, role=actor.role, action=action,
                               target_kind=target_kind, target_id=target_id, summary=summary,
                               before=before, after=after, peer=actor.peer)

    return job
