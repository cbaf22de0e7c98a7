"""The reconciliation loop: every ``reconcile.interval_s`` (and once at start), the
open items due for a look are asked for at the PACS, and each answer is applied
(bridge/reconcile/apply.py) under the rules of bridge/reconcile/rules.py.

Bounds: a cycle takes at most ``max_items_per_cycle`` due items (the store's
index range, reconcile_tx.due_steps), asks them in associations of
``batch_size`` at most ``max_queries_per_s`` C-FIND requests a second, and
commits each batch's outcome in one transaction. An item not found is asked
again after ``recheck_s``; a found one after ``settle_poll_s`` until settled.
So the requests follow the items due, never the items stored.

With several instances on one database only the maintenance leader runs a
cycle, and each batch's job checks in its own transaction that the role is
still this instance's (as housekeeping does).

Threads: a task on the daemon's loop; the C-FINDs and the due read in worker
threads, the writes through ``submit`` (the CommitQueue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol, TypeVar

from bridge.audit import NO_AUDIT, AuditTrail
from bridge.periodic import Periodic
from bridge.reconcile.apply import Applied, complete, flag
from bridge.reconcile.query import PacsClient, PacsError, RateLimit
from bridge.reconcile.rules import Expected, Kind, Settle, Verdict, judge, settled
from bridge.reconcile.settings import ReconcileSettings
from bridge.reconcile.trail import Subject, record_conflict, record_study
from bridge.steps import Reporter, Source
from bridge.store import Store, Submit, mpps_tx, reconcile_tx
from bridge.store.base import StoreTx
from bridge.store.reconcile_tx import WatchedStep
from bridge.store.sqltx import parse_stamp, stamp
from bridge.telemetry.metrics import Metrics, ReconcileState

log = logging.getLogger(__name__)
T = TypeVar("T")


class Leader(Protocol):
    """Whether this instance runs maintenance (bridge.maintenance.leader.Leadership)."""

    def is_leader(self) -> bool: ...

    def holds(self, tx: StoreTx) -> bool:
        """Inside a job's transaction: the role is still this instance's."""


@dataclass(frozen=True, slots=True)
class Looked:
    """What the PACS answered for one item."""

    step: WatchedStep
    verdict: Verdict
    pacs: str


@dataclass
class CycleReport:
    due: int = 0
    queries: int = 0  # C-FIND requests sent
    applied: Applied = field(default_factory=Applied)
    failures: list[str] = field(default_factory=list)  # per PACS, the reason


def _local(ts: datetime) -> str:
    return ts.astimezone().strftime("%Y%m%d%H%M%S")


def _failed(exc: Exception) -> None:
    log.error("reconciliation cycle failed: %s", type(exc).__name__)
    log.debug("reconciliation cycle failure", exc_info=exc)


class Reconciler:
    """The loop; a service (``start``/``stop``), ``run_once`` for one cycle."""

    def __init__(self, settings: ReconcileSettings, store: Store, submit: Submit, *,
                 calling_aet: str, messages: Reporter | None = None,
                 notify: Callable[[], None] | None = None, leader: Leader | None = None,
                 audit: AuditTrail = NO_AUDIT, metrics: Metrics | None = None) -> None:
        self._s = settings
        self._audit = audit  # a Query per C-FIND, a Procedure Record per completion
        self._metrics = metrics
        self._store = store
        self._submit = submit
        self._messages = messages
        self._notify = notify or (lambda: None)
        self._leader = leader
        self._clients = [PacsClient(p, settings.calling_ae_title or calling_aet,
                                    setting=f"reconcile.pacs[{i}]", audit=audit)
                         for i, p in enumerate(settings.pacs)]
        self._rate = RateLimit(settings.max_queries_per_s)
        self._settle = Settle(settings.settle, timedelta(seconds=settings.settle_time_s))
        self._periodic = Periodic("reconcile", settings.interval_s, self.run_once,
                                  on_error=_failed,
                                  is_leader=None if leader is None else leader.is_leader)
        self.last: CycleReport | None = None

    def start(self) -> None:
        if self._s.enabled:
            self._periodic.start()

    async def stop(self) -> None:
        await self._periodic.stop()

    def kick(self) -> None:
        """Run a cycle now (this instance just became the maintenance leader)."""
        self._periodic.kick()

    async def run_once(self, now: datetime | None = None) -> CycleReport:
        """One cycle: the due items, asked batch by batch, each batch's outcome
        committed. Returns what it did."""
        now = now or datetime.now(UTC)
        s = self._s
        report = CycleReport()
        due = await asyncio.to_thread(
            reconcile_tx.due_steps, self._store, statuses=list(s.statuses),
            start_from=_local(now - timedelta(hours=s.max_age_h)),
            start_to=_local(now - timedelta(minutes=s.min_age_min)), now=stamp(now),
            stations=s.stations, modalities=s.modalities, limit=s.max_items_per_cycle)
        report.due = len(due)
        started = time.monotonic()
        for first in range(0, len(due), s.batch_size):
            batch = due[first:first + s.batch_size]
            looked, queries, failures = await asyncio.to_thread(self._ask, batch)
            report.queries += queries
            report.failures.extend(failures)
            if looked:
                done = await self._submit(self._guarded(self._apply_job(looked, now),
                                                        Applied()))
                report.applied.add(done)
                self._audit_completions(looked, done)
            if failures and not looked:
                break  # every PACS is failing: the next cycle tries again
        a = report.applied
        if report.due:
            log.info("reconciliation: %d item(s) due, %d C-FIND request(s) in %.1f s; "
                     "%d completed, %d waiting to settle, %d not found, %d conflict(s), "
                     "%d kept (already final)", report.due, report.queries,
                     time.monotonic() - started, len(a.completed), len(a.waiting),
                     len(a.not_found), len(a.conflicts), len(a.kept))
        if a.queued:
            self._notify()
        if self._metrics is not None:
            self._metrics.reconcile_cycle()
            self._metrics.reconcile_outcomes("query", a.counts())
        self.last = report
        return report

    def _audit_completions(self, looked: Sequence[Looked], done: Applied) -> None:
        """After the commit: each item completed, a Procedure Record update with the
        PACS that has its study as the Source and the daemon as the requestor."""
        by_step = {one.step.id: one.pacs for one in looked}
        peers = {c.peer.label: c.peer for c in self._clients}
        for step_id, subject in zip(done.completed, done.subjects, strict=True):
            label = by_step.get(step_id, "")
            peer = peers.get(label)
            record_study(self._audit, informant=peer.ae_title if peer else label,
                         host=peer.host if peer else "", requested=False,
                         study_uid=subject.study_uid, completed=[subject])
        for step_id, (subject, found) in zip(done.conflicts, done.flagged, strict=True):
            peer = peers.get(by_step.get(step_id, ""))
            record_conflict(self._audit, informant=peer.ae_title if peer else
                            by_step.get(step_id, ""), host=peer.host if peer else "",
                            subject=subject, found_study=found)

    def _guarded(self, job: Callable[[StoreTx], T], idle: T) -> Callable[[StoreTx], T]:
        leader = self._leader
        if leader is None:
            return job
        return lambda tx: job(tx) if leader.holds(tx) else idle

    def _ask(self, batch: Sequence[WatchedStep]) -> tuple[list[Looked], int, list[str]]:
        """Ask each PACS in turn for the items no earlier one has found (worker thread).

        A PACS that fails part-way keeps what it answered; the rest go to the next
        PACS, and when none answered, stay due (asked again at the next cycle)."""
        pending = list(batch)
        looked: list[Looked] = []
        queries = 0
        failures: list[str] = []
        answered = False
        for client in self._clients:
            if not pending:
                break
            done: set[int] = set()
            finder = None
            failed = True  # until the session ends normally
            try:
                with client.session(self._rate) as finder:
                    for step in pending:
                        exp = Expected(step.study_uid, step.accession, step.patient_id)
                        about = Subject(step.patient_id, step.accession, step.study_uid)
                        by_uid = finder.find(study_uid=step.study_uid, subject=about) \
                            if step.study_uid else []
                        by_acc = finder.find(accession=step.accession, subject=about) \
                            if not by_uid and step.accession else []
                        verdict = judge(exp, by_uid, by_acc)
                        if verdict.kind is not Kind.NOT_FOUND:
                            looked.append(Looked(step, verdict, client.peer.label))
                            done.add(step.id)
                answered = True
                failed = False
            except PacsError as exc:
                log.warning("reconciliation: %s", exc)
                failures.append(str(exc))
            except Exception as exc:  # noqa: BLE001 - a PACS's answer must not stop the loop
                log.warning("reconciliation: PACS %s: %s", client.peer.label,
                            type(exc).__name__)
                failures.append(f"PACS {client.peer.label}: {type(exc).__name__}")
            queries += finder.requests if finder is not None else 0
            if self._metrics is not None:
                self._metrics.reconcile_cfind(client.peer.label,
                                              finder.requests if finder is not None else 0)
                if failed:
                    self._metrics.reconcile_pacs_error(client.peer.label)
            pending = [step for step in pending if step.id not in done]
        if answered:  # nobody has it (as far as the PACS that answered know)
            looked.extend(Looked(step, Verdict(Kind.NOT_FOUND), "") for step in pending)
        return looked, queries, failures

    def _apply_job(self, looked: Sequence[Looked], now: datetime
                   ) -> Callable[[StoreTx], Applied]:
        s = self._s

        def job(tx: StoreTx) -> Applied:
            done = Applied()
            for one in looked:
                step, verdict = one.step, one.verdict
                if verdict.kind is Kind.NOT_FOUND:
                    reconcile_tx.record_check(
                        tx, step.id, next_check=stamp(now + timedelta(seconds=s.recheck_s)))
                    done.not_found.append(step.id)
                    continue
                if verdict.kind is Kind.CONFLICT:
                    done.add(flag(tx, step.id, verdict, pacs=one.pacs, subject=Subject(
                        step.patient_id, step.accession, step.study_uid)))
                    continue
                study = verdict.study
                assert study is not None
                seen_at = parse_stamp(step.seen_at) if step.seen_at else None
                if settled(self._settle, previous=step.instances, seen_at=seen_at,
                           study=study, now=now):
                    records = mpps_tx.steps_by_id(tx, [step.id])
                    if not records:
                        continue  # purged meanwhile
                    done.add(complete(tx, records[0], study, source=Source.PACS_QUERY,
                                      pacs=one.pacs, reporter=self._messages, now=now))
                    continue
                same = study.instances == step.instances and seen_at is not None
                reconcile_tx.record_check(
                    tx, step.id, next_check=stamp(now + timedelta(seconds=s.settle_poll_s)),
                    pacs=one.pacs, found_uid=study.study_uid, series=study.series,
                    instances=study.instances,
                    seen_at=step.seen_at if same else stamp(now))
                done.waiting.append(step.id)
            return done

        return job


def reconcile_reader(store: Store) -> Callable[[], ReconcileState]:
    """The items watched, found and in conflict, read on each scrape (Metrics)."""

    def read() -> ReconcileState:
        s = reconcile_tx.summary(store)
        return ReconcileState(s.watched, s.found, s.conflicts)

    return read
