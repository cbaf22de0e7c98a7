"""The write side of reconciliation, shared by the query loop, the IAN SCP and the
Orthanc push: complete an item through ``bridge.steps.change_status`` (with the
Reporter, so the RIS gets its CM), or flag a conflict. Each function runs inside
a store write job; the caller's job is one transaction.

Logs name step ids, conflict kinds and counts, never patient data.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from pydicom import Dataset

from bridge.reconcile.rules import (
    Expected,
    Kind,
    StudyAnswer,
    Verdict,
    judge,
)
from bridge.reconcile.trail import Subject
from bridge.steps import COMPLETED, TERMINAL, Reporter, Source, StepState, change_status
from bridge.store import mpps_tx, reconcile_tx
from bridge.store.base import StoreTx
from bridge.store.mpps_tx import StepRecord

log = logging.getLogger(__name__)


@dataclass
class Applied:
    """What one write job did (for logs, metrics and tests)."""

    completed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # already terminal: not changed
    conflicts: list[int] = field(default_factory=list)
    waiting: list[int] = field(default_factory=list)  # found, not settled yet
    not_found: list[int] = field(default_factory=list)
    queued: int = 0  # status messages
    # Who and what each completed item is about: for the audit trail (never logged).
    subjects: list[Subject] = field(default_factory=list)
    # Each conflict flagged: the item, and the Study Instance UID the PACS holds.
    flagged: list[tuple[Subject, str]] = field(default_factory=list)

    def add(self, other: Applied) -> None:
        for name in ("completed", "kept", "conflicts", "waiting", "not_found", "subjects",
                     "flagged"):
            getattr(self, name).extend(getattr(other, name))
        self.queued += other.queued

    def counts(self) -> dict[str, int]:
        """Items per metric outcome (bridge.telemetry.metrics.RECONCILE_OUTCOMES)."""
        return {"not_found": len(self.not_found), "waiting": len(self.waiting),
                "completed": len(self.completed), "kept": len(self.kept),
                "conflict": len(self.conflicts)}


def study_data_set(study: StudyAnswer, now: datetime) -> Dataset:
    """What the outbound profiles see as ``mpps.`` for a completion by the PACS: the
    counts (``mpps.NumberOfStudyRelatedSeries``, ``mpps.NumberOfStudyRelatedInstances``)
    and the time the PACS said so, as the step's end (ORC-9 ``$event_time``)."""
    ds = Dataset()
    ds.StudyInstanceUID = study.study_uid
    if study.series >= 0:
        ds.NumberOfStudyRelatedSeries = study.series
    if study.instances >= 0:
        ds.NumberOfStudyRelatedInstances = study.instances
    if study.modalities:
        ds.ModalitiesInStudy = study.modalities.split("\\")
        ds.Modality = study.modalities.split("\\")[0]
    local = now.astimezone()
    ds.PerformedProcedureStepEndDate = f"{local:%Y%m%d}"
    ds.PerformedProcedureStepEndTime = f"{local:%H%M%S}"
    return ds


def expected(step: StepRecord) -> Expected:
    item = step.item
    return Expected(study_uid=str(item.get("StudyInstanceUID", "") or "").strip(),
                    accession=str(item.get("AccessionNumber", "") or "").strip(),
                    patient_id=str(item.get("PatientID", "") or "").strip())


def complete(tx: StoreTx, step: StepRecord, study: StudyAnswer, *, source: Source,
             pacs: str, reporter: Reporter | None, now: datetime) -> Applied:
    """Complete ``step`` (read FOR UPDATE in this transaction) from ``study``."""
    done = Applied()
    note = f"{pacs}: {max(study.series, 0)} series, {max(study.instances, 0)} instances"
    update = change_status(tx, StepState(step.id, step.sps_status, step.item), COMPLETED,
                           source=source, reporter=reporter,
                           mpps=study_data_set(study, now), now=now, note=note)
    reconcile_tx.forget(tx, [step.id])
    if update.decision.changed:
        done.completed.append(step.id)
        done.queued += update.queued
        exp = expected(step)
        done.subjects.append(Subject(exp.patient_id, exp.accession,
                                     study.study_uid or exp.study_uid))
        log.info("worklist item %d COMPLETED by %s (%s)", step.id, source, note)
    else:
        # An MPPS COMPLETED/DISCONTINUED or an HL7 cancel came first: it stays.
        done.kept.append(step.id)
        log.info("worklist item %d keeps %s: %s", step.id, update.decision.status,
                 update.decision.reason)
    return done


def flag(tx: StoreTx, step_id: int, verdict: Verdict, *, pacs: str,
         subject: Subject | None = None) -> Applied:
    """``subject``: the item's patient, accession and study, for the audit trail."""
    assert verdict.conflict is not None and verdict.study is not None
    reconcile_tx.flag_conflict(tx, step_id, kind=str(verdict.conflict), detail=verdict.detail,
                               pacs=pacs, found_uid=verdict.study.study_uid)
    log.warning("worklist item %d not completed: conflict %s at %s (%s); see "
                "`mwl-bridge reconcile conflicts`", step_id, verdict.conflict, pacs,
                verdict.detail)
    return Applied(conflicts=[step_id],
                   flagged=[(subject or Subject(), verdict.study.study_uid)])


def pushed(tx: StoreTx, study: StudyAnswer, *, source: Source, pacs: str,
           reporter: Reporter | None, now: datetime) -> Applied:
    """A study the PACS reports as complete (IAN, Orthanc's stable study): complete
    the open items with its Study Instance UID, or flag the items of its accession
    when the UIDs differ. Nothing is done for a study no item expects."""
    done = Applied()
    steps = (mpps_tx.find_steps(tx, {"study_instance_uid": study.study_uid})
             if study.study_uid else [])
    if not steps and study.accession:
        steps = mpps_tx.find_steps(tx, {"accession_number": study.accession})
    for step in steps:
        if step.sps_status in TERMINAL:
            done.kept.append(step.id)
            continue
        # As the accession's answer: its own UID is found, another one a conflict.
        exp = expected(step)
        verdict = judge(exp, (), [study])
        if verdict.kind is Kind.CONFLICT:
            done.add(flag(tx, step.id, verdict, pacs=pacs,
                          subject=Subject(exp.patient_id, exp.accession, exp.study_uid)))
        elif verdict.kind is Kind.FOUND:
            done.add(complete(tx, step, study, source=source, pacs=pacs, reporter=reporter,
                              now=now))
    return done
