"""Metrics, readiness and the plain endpoint functions behind /metrics, /healthz, /readyz.

A ground-level package: it imports only the base modules, and any package may
import it. ``bridge.app`` makes the one ``Metrics`` (its own
``prometheus_client.CollectorRegistry``, never the global one) and the one
``Readiness``, and hands the ``Metrics`` to what it instruments as an optional
``metrics`` argument; the HTTP server (the console) serves the functions of
``endpoints``.
"""

from bridge.telemetry.endpoints import (
    HttpAnswer,
    healthz_endpoint,
    metrics_endpoint,
    readyz_endpoint,
)
from bridge.telemetry.labels import LabelCap
from bridge.telemetry.metrics import (
    MappingState,
    Metrics,
    OutboxQueue,
    RecentEvents,
    rejection_reason,
)
from bridge.telemetry.readiness import Check, Readiness

__all__ = [
    "Check",
    "HttpAnswer",
    "LabelCap",
    "MappingState",
    "Metrics",
    "OutboxQueue",
    "Readiness",
    "RecentEvents",
    "healthz_endpoint",
    "metrics_endpoint",
    "readyz_endpoint",
    "rejection_reason",
]
