"""The daemon's Prometheus metrics, on a registry of their own.

One ``Metrics`` per daemon, made by ``bridge.app.services.build_services`` and
handed to what it instruments (an optional ``metrics`` argument, None in tests
and tools that want none). Its methods are what the instrumented code calls;
each is cheap and thread-safe (pynetdicom's association threads, the
store-writer thread and the event loop all call them).

What is read rather than counted (the outbox's depth and age, the mapping
reloader's counts, open connections, readiness) comes from callables the
application layer registers with the ``watch_*`` methods; they run when the
registry is collected, i.e. on each scrape, in the scraper's thread (the
outbox reader queries the store: call ``render()`` off the event loop).

Label values are bounded: calling AE titles and HL7 message types pass through
a ``LabelCap`` (the configured AEs plus a few others, then ``other``); every
other label has a fixed set of values.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from bridge.telemetry.labels import LabelCap

log = logging.getLogger(__name__)

T = TypeVar("T")

PREFIX = "mwl_bridge_"
# The classic text format every Prometheus reads (the names here are all plain ASCII,
# so the body is the same in its newer versions).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Latency buckets (seconds): from a cached resend (sub-millisecond) to a stuck fsync.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0)
ANSWER_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

# HL7 message types: "ORM^O01"-like (code, event, optionally the structure).
MESSAGE_TYPE_PATTERN = r"[A-Z0-9]{3}(\^[A-Z0-9]{2,3}(\^[A-Z0-9_]{3,7})?)?"
# AE titles as labels: printable ASCII without backslash (what guard.py lets in).
AE_TITLE_PATTERN = r"[\x20-\x5b\x5d-\x7e]{1,16}"

# A-ASSOCIATE-RJ (source, reason) -> label (PS3.8 Table 9-21).
_REJECTION_REASONS = {
    (1, 1): "address_not_allowed",  # service user, no reason given (our allow-lists)
    (1, 2): "application_context_not_supported",
    (1, 3): "calling_ae_not_recognized",
    (1, 7): "called_ae_not_recognized",
    (3, 1): "temporary_congestion",
    (3, 2): "local_limit_exceeded",
}
REJECTION_REASONS = (*sorted(set(_REJECTION_REASONS.values())), "other")

MPPS_OPERATIONS = ("n_create", "n_set")
MPPS_STATUSES = ("in_progress", "completed", "discontinued", "refused", "failed")
CFIND_OUTCOMES = ("success", "cancelled", "refused", "failed", "aborted")
MAPPING_OUTCOMES = ("success", "failure")
# PACS reconciliation (bridge/reconcile/): where a study's word came from, and what
# became of the item it is about.
RECONCILE_SOURCES = ("query", "ian", "push")
RECONCILE_OUTCOMES = ("not_found", "waiting", "completed", "kept", "conflict")


def rejection_reason(source: int, reason: int) -> str:
    """The ``reason`` label of an A-ASSOCIATE-RJ with this source and reason."""
    return _REJECTION_REASONS.get((source, reason), "other")


def mpps_status_label(status: str) -> str:
    """'IN PROGRESS' -> 'in_progress'; anything unexpected -> 'other'."""
    label = status.strip().lower().replace(" ", "_")
    return label if label in MPPS_STATUSES else "other"


@dataclass(frozen=True, slots=True)
class OutboxQueue:
    """What the outbox holds for one destination right now (read from the store)."""

    destination: str
    pending: int
    dead: int
    oldest_pending_age_s: float | None  # None: nothing pending


@dataclass(frozen=True, slots=True)
class ForwardQueue:
    """What the MPPS forwarding queue holds for one destination now (read from the store)."""

    destination: str
    pending: int
    dead: int


@dataclass(frozen=True, slots=True)
class ReconcileState:
    """The reconciliation's standing figures (bridge.store.reconcile_tx.summary)."""

    watched: int  # items looked for at least once
    found: int  # found at the PACS and settling
    conflicts: int  # flagged, not completed


@dataclass(frozen=True, slots=True)
class MappingState:
    """The mapping reloader's counts and the active set's size."""

    reloads: int
    failures: int
    active: int


class RecentEvents:
    """How many events happened in the last minutes: counts in 10-second buckets, for
    the operator console's dashboard (Prometheus computes its own rates from the
    counters; a dashboard without a Prometheus server needs this). Thread-safe."""

    BUCKET_S = 10.0

    def __init__(self, keep_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._keep = int(keep_s // self.BUCKET_S)
        self._clock = clock
        self._buckets: dict[int, int] = {}
        self._lock = threading.Lock()

    def add(self, n: int = 1) -> None:
        slot = int(self._clock() // self.BUCKET_S)
        with self._lock:
            self._buckets[slot] = self._buckets.get(slot, 0) + n
            if len(self._buckets) > self._keep + 2:
                for old in [k for k in self._buckets if k < slot - self._keep]:
                    del self._buckets[old]

    def count(self, seconds: float) -> int:
        """Events in the last ``seconds`` (to the bucket: up to 10 s more)."""
        now = int(self._clock() // self.BUCKET_S)
        first = now - int(seconds // self.BUCKET_S) + 1
        with self._lock:
            return sum(n for k, n in self._buckets.items() if k >= first)


class Metrics:
    """The registry and every metric of the daemon; see the module docstring.

    ``known_aes``: the configured calling AE titles (``dicom.known_aes``), always
    their own label value; ``destinations``: the outbound destinations' names,
    whose counters start at 0. ``extra_label_values``: how many other distinct
    AE titles (and HL7 message types) get a label of their own before ``other``.
    """

    def __init__(self, *, known_aes: Iterable[str] = (), destinations: Iterable[str] = (),
                 extra_label_values: int = 16,
                 forward_destinations: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.calling_ae = LabelCap(known_aes, extra=extra_label_values,
                                   pattern=AE_TITLE_PATTERN)
        self.message_type = LabelCap(extra=extra_label_values * 2,
                                     pattern=MESSAGE_TYPE_PATTERN)
        self._destinations = tuple(destinations)
        self.destination = LabelCap(self._destinations, extra=8)

        # HL7 intake
        self.hl7_messages = Counter(
            PREFIX + "hl7_messages", "HL7 messages received over MLLP, by message type "
            "(MSH-9) and outcome (the ACK code sent: AA, AE, AR; none: no ACK, not HL7)",
            ["type", "outcome"], registry=r)
        self.hl7_resends = Counter(
            PREFIX + "hl7_resends", "HL7 messages answered with their original ACK "
            "(exact resends of an accepted message)", registry=r)
        self.hl7_ack_latency = Histogram(
            PREFIX + "hl7_ack_latency_seconds", "Time from a frame's arrival to its ACK "
            "being ready (decode, map, commit)", buckets=LATENCY_BUCKETS, registry=r)

        # DICOM associations and C-FIND
        self.associations = Counter(
            PREFIX + "dicom_associations", "DICOM associations accepted, by calling AE "
            "title (configured AEs, a few others, then 'other')", ["calling_ae"], registry=r)
        self.association_rejections = Counter(
            PREFIX + "dicom_association_rejections", "DICOM associations rejected "
            "(A-ASSOCIATE-RJ or closed at accept), by reason", ["reason"], registry=r)
        for reason in REJECTION_REASONS:
            self.association_rejections.labels(reason)
        self.cfind_requests = Counter(
            PREFIX + "cfind_requests", "Modality Worklist C-FIND requests, by calling AE "
            "title and outcome (success, cancelled, refused: a bad identifier, failed: "
            "the store or an item failed, aborted: the association ended)",
            ["calling_ae", "outcome"], registry=r)
        self.cfind_duration = Histogram(
            PREFIX + "cfind_duration_seconds", "Time to answer a C-FIND, from the request "
            "to the last answer handed to the network", buckets=LATENCY_BUCKETS,
            registry=r)
        self.cfind_answers = Histogram(
            PREFIX + "cfind_answers", "Worklist items answered per C-FIND",
            buckets=ANSWER_BUCKETS, registry=r)

        # MPPS
        self.mpps_events = Counter(
            PREFIX + "mpps_events", "MPPS N-CREATE and N-SET requests, by operation and "
            "resulting status (in_progress, completed, discontinued; refused: a failure "
            "status sent to the modality; failed: an internal error)",
            ["operation", "status"], registry=r)

        # Outbox
        self.outbox_sent = Counter(
            PREFIX + "outbox_sent", "Status messages delivered (AA/CA), by destination",
            ["destination"], registry=r)
        self.outbox_retries = Counter(
            PREFIX + "outbox_retries", "Status message deliveries that failed and will "
            "be retried, by destination", ["destination"], registry=r)
        self.outbox_dead_letters = Counter(
            PREFIX + "outbox_dead_letters", "Status messages refused by the receiver "
            "(AE/AR/CR) and kept as dead letters, by destination", ["destination"],
            registry=r)
        for dest in self._destinations:
            for counter in (self.outbox_sent, self.outbox_retries, self.outbox_dead_letters):
                counter.labels(self.destination(dest))

        # MPPS forwarding (bridge/mpps/forward.py)
        self._forward_destinations = tuple(forward_destinations)
        self.forward_destination = LabelCap(self._forward_destinations, extra=8)
        self.forward_delivered = Counter(
            PREFIX + "mpps_forward_delivered", "MPPS N-CREATE/N-SET forwarded and answered "
            "with success or a warning, by destination", ["destination"], registry=r)
        self.forward_retries = Counter(
            PREFIX + "mpps_forward_retries", "MPPS forwards that failed on the network and "
            "will be retried, by destination", ["destination"], registry=r)
        self.forward_failed = Counter(
            PREFIX + "mpps_forward_failed", "MPPS forwards kept as dead letters (a failure "
            "status from the peer, or the retries ran out), by destination",
            ["destination"], registry=r)
        for dest in self._forward_destinations:
            for counter in (self.forward_delivered, self.forward_retries, self.forward_failed):
                counter.labels(self.forward_destination(dest))

        # Store
        self.commit_duration = Histogram(
            PREFIX + "store_commit_duration_seconds", "Time of one group commit of the "
            "store writer (the batch's jobs and the commit)", buckets=LATENCY_BUCKETS,
            registry=r)
        self.commit_jobs = Histogram(
            PREFIX + "store_commit_jobs", "Jobs per group commit", buckets=BATCH_BUCKETS,
            registry=r)
        self.commit_failures = Counter(
            PREFIX + "store_commit_failures", "Group commits that failed as a whole",
            registry=r)

        # PACS reconciliation (bridge/reconcile/): the query loop, IAN, Orthanc's push
        self.pacs = LabelCap(extra=8)
        self.reconcile_cycles = Counter(
            PREFIX + "reconcile_cycles", "Reconciliation cycles run (leader only)",
            registry=r)
        self.reconcile_queries = Counter(
            PREFIX + "reconcile_cfind_requests", "Study Root C-FIND requests sent to a "
            "PACS by the reconciliation, by PACS", ["pacs"], registry=r)
        self.reconcile_pacs_errors = Counter(
            PREFIX + "reconcile_pacs_errors", "PACS that could not be asked (no "
            "association, a failed C-FIND), by PACS", ["pacs"], registry=r)
        self.reconcile_studies = Counter(
            PREFIX + "reconcile_studies", "Worklist items the PACS had word of, by source "
            "(query: the loop's C-FIND, ian, push: Orthanc) and outcome (not_found, "
            "waiting: found, not settled, completed, kept: already final, conflict)",
            ["source", "outcome"], registry=r)
        for outcome in RECONCILE_OUTCOMES:
            self.reconcile_studies.labels("query", outcome)

        self.recent_cfind = RecentEvents()  # for the console's dashboard (live())

        self._watched = _Watched(self)
        r.register(self._watched)
        # After the readers' collector, so a scrape shows its own read errors.
        self.read_errors = Counter(
            PREFIX + "metrics_read_errors", "Values that could not be read for a scrape "
            "(e.g. the outbox while the store is down), by source", ["source"], registry=r)

    # --- what instrumented code calls -------------------------------------------

    def message(self, message_type: str, outcome: str, seconds: float, *,
                resend: bool = False) -> None:
        """One HL7 frame answered (outcome: its ACK code, '' for no ACK)."""
        self.hl7_messages.labels(self.message_type(message_type), outcome or "none").inc()
        self.hl7_ack_latency.observe(seconds)
        if resend:
            self.hl7_resends.inc()

    def association(self, calling_ae: str) -> None:
        self.associations.labels(self.calling_ae(calling_ae)).inc()

    def association_rejected(self, reason: str) -> None:
        """``reason``: one of REJECTION_REASONS (see ``rejection_reason``)."""
        self.association_rejections.labels(
            reason if reason in REJECTION_REASONS else "other").inc()

    def association_rejected_rj(self, source: int, reason: int) -> None:
        """An A-ASSOCIATE-RJ sent with this source and reason (PS3.8 Table 9-21)."""
        self.association_rejected(rejection_reason(source, reason))

    def cfind(self, calling_ae: str, outcome: str, seconds: float, answers: int) -> None:
        self.cfind_requests.labels(self.calling_ae(calling_ae),
                                   outcome if outcome in CFIND_OUTCOMES else "failed").inc()
        self.cfind_duration.observe(seconds)
        self.cfind_answers.observe(answers)
        self.recent_cfind.add()

    def mpps(self, operation: str, status: str) -> None:
        """``operation``: n_create or n_set; ``status``: the MPPS status after it
        ('IN PROGRESS', ...) or 'refused' / 'failed'."""
        op = operation if operation in MPPS_OPERATIONS else "other"
        self.mpps_events.labels(op, mpps_status_label(status)).inc()

    def outbox_outcome(self, destination: str, outcome: str) -> None:
        """``outcome``: sent, retry or dead."""
        counter = {"sent": self.outbox_sent, "retry": self.outbox_retries,
                   "dead": self.outbox_dead_letters}[outcome]
        counter.labels(self.destination(destination)).inc()

    def forward_outcome(self, destination: str, outcome: str) -> None:
        """An MPPS forward's outcome: delivered, retry or failed."""
        counter = {"delivered": self.forward_delivered, "retry": self.forward_retries,
                   "failed": self.forward_failed}[outcome]
        counter.labels(self.forward_destination(destination)).inc()

    def reconcile_cycle(self) -> None:
        self.reconcile_cycles.inc()

    def reconcile_cfind(self, pacs: str, n: int = 1) -> None:
        if n:
            self.reconcile_queries.labels(self.pacs(pacs)).inc(n)

    def reconcile_pacs_error(self, pacs: str) -> None:
        self.reconcile_pacs_errors.labels(self.pacs(pacs)).inc()

    def reconcile_outcomes(self, source: str, counts: dict[str, int]) -> None:
        """``counts``: outcome (RECONCILE_OUTCOMES) -> items."""
        for outcome, n in counts.items():
            if n and outcome in RECONCILE_OUTCOMES and source in RECONCILE_SOURCES:
                self.reconcile_studies.labels(source, outcome).inc(n)

    def commit(self, seconds: float, jobs: int, *, ok: bool = True) -> None:
        """One group commit of the store writer."""
        self.commit_duration.observe(seconds)
        self.commit_jobs.observe(jobs)
        if not ok:
            self.commit_failures.inc()

    # --- what is read on each scrape ----------------------------------------------

    def watch_outbox(self, read: Callable[[], Sequence[OutboxQueue]]) -> None:
        """``read``: the outbox per destination (a store query; runs on each scrape)."""
        self._watched.outbox = read

    def watch_forward(self, read: Callable[[], Sequence[ForwardQueue]]) -> None:
        """``read``: the MPPS forwarding queue per destination (a store query)."""
        self._watched.forward = read

    def watch_mappings(self, read: Callable[[], MappingState]) -> None:
        self._watched.mappings = read

    def watch_connections(self, mllp: Callable[[], int] | None = None,
                          dicom: Callable[[], int] | None = None) -> None:
        """Open MLLP connections and DICOM associations, read on each scrape."""
        self._watched.mllp = mllp
        self._watched.dicom = dicom

    def watch_reconcile(self, read: Callable[[], ReconcileState]) -> None:
        """The items watched, found and in conflict (reconcile_tx.summary)."""
        self._watched.reconcile = read

    def watch_readiness(self, read: Callable[[], dict[str, bool]]) -> None:
        """Each readiness check's result, exported as mwl_bridge_ready{check}."""
        self._watched.readiness = read

    def live(self) -> dict[str, int]:
        """The figures the operator console's dashboard shows beside its store counts:
        C-FIND requests in the last minute and five minutes, and the DICOM
        associations and MLLP connections open now (cheap: no store query)."""
        w = self._watched
        out = {"cfind_per_minute": self.recent_cfind.count(60),
               "cfind_5m": self.recent_cfind.count(300)}
        for key, source, read in (("associations_open", "dicom", w.dicom),
                                  ("mllp_connections_open", "mllp", w.mllp)):
            if read is not None:
                value = w._read(source, read)
                out[key] = int(value) if value is not None else 0
        return out

    # --- exposition -----------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The text exposition of every metric and its content type, for GET /metrics.

        Blocking (the outbox reader queries the store): call it off the event loop.
        """
        return generate_latest(self.registry), CONTENT_TYPE

    def names(self) -> frozenset[str]:
        """Every series name this registry can expose (with _total, _bucket, ...)."""
        out: set[str] = set()
        for family in self.registry.collect():
            out |= _series_names(family)
        out |= self._watched.all_names()
        return frozenset(out)


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def _series_names(family: Metric) -> set[str]:
    return {family.name + s for s in _SUFFIXES.get(family.type, ("",))}


class _Watched(Collector):
    """The values read at collection time from the callables the app registered."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.outbox: Callable[[], Sequence[OutboxQueue]] | None = None
        self.forward: Callable[[], Sequence[ForwardQueue]] | None = None
        self.mappings: Callable[[], MappingState] | None = None
        self.mllp: Callable[[], int] | None = None
        self.dicom: Callable[[], int] | None = None
        self.readiness: Callable[[], dict[str, bool]] | None = None
        self.reconcile: Callable[[], ReconcileState] | None = None
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}

    def collect(self) -> Iterator[Metric]:
        yield from self._outbox()
        yield from self._forward()
        yield from self._mappings()
        yield from self._connections()
        yield from self._readiness()
        yield from self._reconcile()

    def all_names(self) -> set[str]:
        """Every family this collector can yield (each is made by one function, so
        they are listed without reading anything)."""
        names: set[str] = set()
        for family in (*_outbox_families(), *_forward_families(), *_mapping_families(),
                       *_connection_families(), *_readiness_families(),
                       *_reconcile_families()):
            names |= _series_names(family)
        return names

    def _read(self, source: str, read: Callable[[], T]) -> T | None:
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - one bad source must not fail the scrape
            self._metrics.read_errors.labels(source).inc()
            now = time.monotonic()
            with self._lock:
                last = self._logged.get(source, -3600.0)
                quiet = now - last < 300.0
                if not quiet:
                    self._logged[source] = now
            if not quiet:
                log.warning("metrics: cannot read %s: %s", source, type(exc).__name__)
            return None

    def _outbox(self) -> Iterator[Metric]:
        if self.outbox is None:
            return
        queues = self._read("outbox", self.outbox)
        if queues is None:
            return
        pending, dead, age = _outbox_families()
        label = self._metrics.destination
        totals: dict[str, list[float]] = {}
        for q in queues:
            entry = totals.setdefault(label(q.destination), [0, 0, -1.0])
            entry[0] += q.pending
            entry[1] += q.dead
            if q.oldest_pending_age_s is not None:
                entry[2] = max(entry[2], q.oldest_pending_age_s)
        for dest in self._metrics._destinations:
            totals.setdefault(label(dest), [0, 0, -1.0])
        for dest, (n_pending, n_dead, oldest) in sorted(totals.items()):
            pending.add_metric([dest], n_pending)
            dead.add_metric([dest], n_dead)
            age.add_metric([dest], max(oldest, 0.0))
        yield from (pending, dead, age)

    def _forward(self) -> Iterator[Metric]:
        if self.forward is None:
            return
        queues = self._read("mpps_forward", self.forward)
        if queues is None:
            return
        pending, dead = _forward_families()
        label = self._metrics.forward_destination
        totals: dict[str, list[int]] = {label(d): [0, 0]
                                        for d in self._metrics._forward_destinations}
        for q in queues:
            entry = totals.setdefault(label(q.destination), [0, 0])
            entry[0] += q.pending
            entry[1] += q.dead
        for dest, (n_pending, n_dead) in sorted(totals.items()):
            pending.add_metric([dest], n_pending)
            dead.add_metric([dest], n_dead)
        yield from (pending, dead)

    def _mappings(self) -> Iterator[Metric]:
        if self.mappings is None:
            return
        state = self._read("mappings", self.mappings)
        if state is None:
            return
        reloads, active = _mapping_families()
        reloads.add_metric(["success"], state.reloads)
        reloads.add_metric(["failure"], state.failures)
        active.add_metric([], state.active)
        yield from (reloads, active)

    def _connections(self) -> Iterator[Metric]:
        mllp, dicom = _connection_families()
        for family, read, source in ((mllp, self.mllp, "mllp"), (dicom, self.dicom, "dicom")):
            if read is None:
                continue
            value = self._read(source, read)
            if value is not None:
                family.add_metric([], value)
                yield family

    def _reconcile(self) -> Iterator[Metric]:
        if self.reconcile is None:
            return
        state = self._read("reconcile", self.reconcile)
        if state is None:
            return
        watched, found, conflicts = _reconcile_families()
        watched.add_metric([], state.watched)
        found.add_metric([], state.found)
        conflicts.add_metric([], state.conflicts)
        yield from (watched, found, conflicts)

    def _readiness(self) -> Iterator[Metric]:
        if self.readiness is None:
            return
        checks = self._read("readiness", self.readiness)
        if checks is None:
            return
        (ready,) = _readiness_families()
        for name, ok in sorted(checks.items()):
            ready.add_metric([name], 1.0 if ok else 0.0)
        ready.add_metric(["all"], 1.0 if checks and all(checks.values()) else 0.0)
        yield ready


def _outbox_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(PREFIX + "outbox_pending", "Status messages waiting to be "
                          "delivered (pending, including those being retried), by "
                          "destination", labels=["destination"]),
        GaugeMetricFamily(PREFIX + "outbox_dead", "Dead letters in the outbox now (until "
                          "retried or purged), by destination", labels=["destination"]),
        GaugeMetricFamily(PREFIX + "outbox_oldest_pending_age_seconds", "Age of the oldest "
                          "pending status message (0: none pending), by destination",
                          labels=["destination"]),
    )


def _forward_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(PREFIX + "mpps_forward_pending", "MPPS requests waiting to be "
                          "forwarded (including those being retried), by destination",
                          labels=["destination"]),
        GaugeMetricFamily(PREFIX + "mpps_forward_dead", "MPPS forwards kept as dead letters "
                          "now (until retried or purged), by destination",
                          labels=["destination"]),
    )


def _mapping_families() -> tuple[CounterMetricFamily, GaugeMetricFamily]:
    return (
        CounterMetricFamily(PREFIX + "mapping_reloads", "Mapping reloads (SIGHUP or file "
                            "changes), by outcome (failure: a broken file, the old set "
                            "stays active)", labels=["outcome"]),
        GaugeMetricFamily(PREFIX + "mappings_active", "Mapping files in the active set"),
    )


def _connection_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(PREFIX + "mllp_connections_open", "Open MLLP connections"),
        GaugeMetricFamily(PREFIX + "dicom_associations_open", "Open DICOM associations"),
    )


def _readiness_families() -> tuple[GaugeMetricFamily]:
    return (GaugeMetricFamily(PREFIX + "ready", "1 when a readiness check passes (check="
                              "'all': every one), read on each scrape", labels=["check"]),)


def _reconcile_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (GaugeMetricFamily(PREFIX + "reconcile_watched_items", "Open worklist items the "
                              "reconciliation has looked for at the PACS at least once"),
            GaugeMetricFamily(PREFIX + "reconcile_found_items", "Items found at the PACS "
                              "and waiting for their study to settle"),
            GaugeMetricFamily(PREFIX + "reconcile_conflicts_open", "Items flagged: the PACS "
                              "holds their accession under another study or patient"))
