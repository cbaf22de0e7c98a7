"""A PACS's own word that a study is complete, pushed over the console's API
(``POST /api/reconcile/study``): Orthanc's Lua ``OnStableStudy``
(docs/orthanc/on-stable-study.lua) calls it with an API token when a study has
received nothing new for its ``StableAge``.

The console cannot import this package; the application layer hands it
``StudyPush`` as a callable (``ConsoleContext.study_push``). The push is applied
by the rules of bridge/reconcile/rules.py: the open items with the study's UID
are completed (Source ``pacs push``), the items of its accession with another
UID, or of another Patient ID, are flagged, terminal statuses stay.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.reconcile.apply import Applied, pushed
from bridge.reconcile.rules import StudyAnswer
from bridge.reconcile.trail import record_conflict, record_study
from bridge.steps import Reporter, Source
from bridge.store import Submit
from bridge.store.base import StoreTx
from bridge.telemetry.metrics import Metrics


class StudyPush:
    """``await push(study_uid=..., accession=..., patient_id=..., series=..., instances=...)``."""

    def __init__(self, submit: Submit, *, messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None, audit: AuditTrail = NO_AUDIT,
                 metrics: Metrics | None = None) -> None:
        self._submit = submit
        # Each push: a Procedure Record update, the API user as the requestor.
        self._audit = audit
        self._metrics = metrics
        self._messages = messages
        self._notify = notify or (lambda: None)

    async def __call__(self, *, study_uid: str, accession: str = "", patient_id: str = "",
                       series: int = -1, instances: int = -1, pacs: str = "push",
                       user: str = "", host: str = "") -> dict[str, Any]:
        """``user`` and ``host``: who called (the API token's name) and from where."""
        study = StudyAnswer(study_uid=study_uid, accession=accession, patient_id=patient_id,
                            series=series, instances=instances)
        now = datetime.now(UTC)

        def job(tx: StoreTx) -> Applied:
            return pushed(tx, study, source=Source.PACS_PUSH, pacs=pacs,
                          reporter=self._messages, now=now)

        done: Applied = await self._submit(job)
        record_study(self._audit, informant=user or pacs, host=host, requested=True,
                     kind="user" if user else "app", study_uid=study_uid,
                     completed=done.subjects)
        for subject, found in done.flagged:
            record_conflict(self._audit, informant=user or pacs, host=host,
                            subject=subject, found_study=found)
        if self._metrics is not None:
            self._metrics.reconcile_outcomes("push", done.counts())
        if done.queued:
            self._notify()
        return {"completed": done.completed, "kept": done.kept, "conflicts": done.conflicts}
