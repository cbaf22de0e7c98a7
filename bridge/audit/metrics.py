"""The audit trail's metrics, on the daemon's registry (bridge.telemetry.Metrics):
events recorded and dropped, the in-memory queue, the spool's depth per repository,
deliveries and failures. None registry: counted nowhere (tests, tools)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge.audit.trail import AuditTrail
from bridge.telemetry.metrics import PREFIX


class _Depth(Collector):
    def __init__(self, trail: AuditTrail, depth: Callable[[], dict[str, int]]) -> None:
        self._trail = trail
        self._depth = depth

    def collect(self) -> Iterator[Metric]:
        queue = GaugeMetricFamily(PREFIX + "audit_queue", "Audit events waiting in memory "
                                  "for the spool (bounded by audit.queue_size)")
        queue.add_metric([], self._trail.waiting)
        yield queue
        spool = GaugeMetricFamily(PREFIX + "audit_spool_pending", "Audit events spooled "
                                  "and not yet delivered, by repository", labels=["repository"])
        try:
            for name, n in sorted(self._depth().items()):
                spool.add_metric([name], n)
        except Exception:  # noqa: BLE001 - a scrape must not fail when the store does
            pass
        yield spool


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry | None, *, trail: AuditTrail,
                 depth: Callable[[], dict[str, int]]) -> None:
        self._trail = trail
        self._counted_drops = 0
        r = registry or CollectorRegistry(auto_describe=False)
        self.events = Counter(PREFIX + "audit_events", "Audit events by fate: recorded "
                              "(spooled), dropped (the audit queue was full), given_up "
                              "(undelivered past retention or audit.max_pending)",
                              ["fate"], registry=r)
        for fate in ("recorded", "dropped", "given_up"):
            self.events.labels(fate)
        self.sent = Counter(PREFIX + "audit_delivered", "Audit events delivered, by "
                            "repository", ["repository"], registry=r)
        self.failures = Counter(PREFIX + "audit_delivery_failures", "Failed attempts to "
                                "reach an audit repository", ["repository"], registry=r)
        r.register(_Depth(trail, depth))

    def recorded(self, n: int) -> None:
        self.events.labels("recorded").inc(n)
        dropped = self._trail.dropped
        if dropped > self._counted_drops:
            self.events.labels("dropped").inc(dropped - self._counted_drops)
            self._counted_drops = dropped

    def given_up(self, n: int) -> None:
        self.events.labels("given_up").inc(n)

    def delivered(self, repository: str, n: int) -> None:
        self.sent.labels(repository).inc(n)

    def failed(self, repository: str) -> None:
        self.failures.labels(repository).inc()
