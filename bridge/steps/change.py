"""The one function that changes a step's status, and queues the HL7 status
messages for it in the same transaction.

Every source of a status change calls ``change_status`` inside its store write
job: HL7 order control and ORU results (bridge/orders/), MPPS N-CREATE/N-SET
(bridge/mpps/), idle rules (bridge/maintenance/), and later PACS
reconciliation and operator actions. It applies the conflict rule
(bridge/steps/rules.py), writes the step, and hands the change to the
``Reporter`` (the outbound profiles, bridge/outbound/events.py) whose rows it
queues in the outbox, so a status and its message are committed together or
not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydicom import Dataset
from pydicom.datadict import dictionary_VR, keyword_dict
from pydicom.dataelem import DataElement
from pydicom.tag import Tag

from bridge.steps.rules import ORC5_FOR_SPS, StatusDecision, next_status
from bridge.store import history_tx, mpps_tx, outbox_tx
from bridge.store.base import StoreTx, UpsertOutcome
from bridge.store.outbox_tx import NewMessage

SPS = "ScheduledProcedureStepSequence"


class Source(StrEnum):
    """Where a status change came from (logged; later shown to operators)."""

    HL7 = "hl7"  # order control (ORC-1/ORC-5)
    RESULT = "result"  # ORU^R01 final result
    MPPS = "mpps"
    IDLE_RULE = "idle rule"
    OPERATOR = "operator"  # the operator console: cancel, hold, release, reschedule
    # The study reached the PACS (bridge/reconcile/): found by the query loop, told
    # by an Instance Availability Notification, pushed by Orthanc's stable-study hook.
    PACS_QUERY = "pacs query"
    IAN = "ian"
    PACS_PUSH = "pacs push"


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One step's status change (or an unscheduled MPPS's), about to be reported."""

    order: Dataset  # the stored worklist item after the change (or one made from the MPPS)
    mpps: Dataset
    status: str  # HL7 ORC-5: IP, CM, DC (and CA, HD, SC from the console)
    sps_status: str
    scheduled: bool
    order_key: str
    mpps_id: int | None = None
    step_id: int | None = None
    # ORC-1 ($order_control in the outbound profiles): SC (status changed), or SN
    # (send order number) for an item the RIS has not heard of: one made by hand.
    order_control: str = "SC"


class Reporter(Protocol):
    """Builds the outbox rows that report a change (bridge.outbound.StatusMessages)."""

    def for_change(self, change: StatusChange, *, now: datetime | None = None
                   ) -> list[NewMessage]: ...


@dataclass(frozen=True, slots=True)
class StepState:
    """A stored step as a status change sees it."""

    id: int
    status: str
    item: Dataset


@dataclass(frozen=True, slots=True)
class StepUpdate:
    """What ``change_status`` did: the decision, the step's item afterwards, the rows queued."""

    decision: StatusDecision
    item: Dataset
    written: UpsertOutcome
    queued: int = 0


def order_key(order: Dataset, fallback: str) -> str:
    """What "the same order" means for delivery order: the RIS's order numbers,
    else the accession number, else ``fallback`` (e.g. the step's row id)."""
    placer = _text(order, "PlacerOrderNumberImagingServiceRequest")
    filler = _text(order, "FillerOrderNumberImagingServiceRequest")
    if placer or filler:
        return f"order:{placer}/{filler}"
    accession = _text(order, "AccessionNumber")
    return f"accession:{accession}" if accession else fallback


def change_status(tx: StoreTx, step: StepState, wanted: str, *, source: Source,
                  content: Dataset | None = None, message_id: int | None = None,
                  reporter: Reporter | None = None, mpps: Dataset | None = None,
                  mpps_id: int | None = None, now: datetime | None = None,
                  actor: str = "", note: str = "") -> StepUpdate:
    """Move ``step`` towards SPS status ``wanted`` under the conflict rule.

    ``content`` replaces the stored item as well (an HL7 change order); the
    status written is always the rule's, whatever ``content`` says. With a
    ``reporter``, a change to STARTED, COMPLETED or DISCONTINUED is reported
    (ORC-5 IP, CM, DC) in the same transaction. ``source`` says who asked;
    every actual change is kept in the item's status history (``step_history``)
    with it, the HL7 message or MPPS that made it, and ``actor`` and ``note``
    (the console user and reason, the idle rule).
    """
    decision = next_status(step.status, wanted)
    if content is not None:
        item = with_status(content, decision.status)
        written = tx.replace_step(step.id, item, message_id)
    elif decision.changed:
        item = mpps_tx.set_step_status(tx, step.id, step.item, decision.status,
                                       message_id=message_id)
        written = UpsertOutcome.UPDATED
    else:
        return StepUpdate(decision, step.item, UpsertOutcome.UNCHANGED)
    if decision.changed:
        history_tx.record(tx, step_id=step.id, from_status=step.status,
                          to_status=decision.status, source=str(source),
                          message_id=message_id, mpps_id=mpps_id, actor=actor, note=note)
    queued = 0
    if decision.changed and reporter is not None and decision.status in ORC5_FOR_SPS:
        change = StatusChange(
            order=item, mpps=mpps if mpps is not None else Dataset(),
            status=ORC5_FOR_SPS[decision.status], sps_status=decision.status, scheduled=True,
            order_key=order_key(item, f"step:{step.id}"), mpps_id=mpps_id, step_id=step.id)
        queued = report(tx, [change], reporter, now=now)
    return StepUpdate(decision, item, written, queued)


def report(tx: StoreTx, changes: list[StatusChange], reporter: Reporter, *,
           now: datetime | None = None) -> int:
    """Queue the status messages for ``changes``; also for an unscheduled MPPS,
    which has no step to change. Returns the number of outbox rows."""
    now = now or datetime.now().astimezone()
    rows = [row for change in changes for row in reporter.for_change(change, now=now)]
    return len(outbox_tx.enqueue(tx, rows))


def report_step(tx: StoreTx, step_id: int, item: Dataset, reporter: Reporter, *,
                order_control: str = "SC", now: datetime | None = None) -> int:
    """Report a step as it stands, without a status change: the console's reschedule
    (ORC-1 SC, ORC-5 the status it keeps, the new start in the profile's timing
    fields) and an item made by hand (ORC-1 SN). Returns the outbox rows queued."""
    status = step_status(item)
    if status not in ORC5_FOR_SPS:
        return 0
    change = StatusChange(order=item, mpps=Dataset(), status=ORC5_FOR_SPS[status],
                          sps_status=status, scheduled=True,
                          order_key=order_key(item, f"step:{step_id}"), step_id=step_id,
                          order_control=order_control)
    return report(tx, [change], reporter, now=now)


def replaced(ds: Dataset, keyword: str, value: object) -> Dataset:
    """A shallow copy of ``ds`` with one attribute set to a new element.

    Elements are shared with ``ds`` and never changed in place (a deep copy of
    a worklist item costs about a millisecond; this a few microseconds).
    """
    elements = dict(ds.items())
    tag = Tag(keyword_dict[keyword])
    elements[tag] = DataElement(tag, dictionary_VR(tag), value)
    return Dataset(elements)


def with_status(item: Dataset, status: str) -> Dataset:
    """A copy of ``item`` with its SPS status set (``item`` is not changed)."""
    seq = item.get(SPS)
    if not seq or seq[0].get("ScheduledProcedureStepStatus") == status:
        return item
    sps = replaced(seq[0], "ScheduledProcedureStepStatus", status)
    return replaced(item, SPS, [sps, *list(seq)[1:]])


def step_status(item: Dataset) -> str:
    seq = item.get(SPS)
    if not seq:
        return ""
    return str(seq[0].get("ScheduledProcedureStepStatus", "") or "")


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()
