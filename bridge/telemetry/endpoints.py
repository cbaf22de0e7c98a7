"""GET /metrics, /healthz and /readyz as plain functions: no web framework here.

The HTTP server (the console) mounts them: it calls the function (off the event
loop: /metrics and /readyz query the store) and turns the ``HttpAnswer`` into
its own response object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bridge.telemetry.metrics import Metrics
from bridge.telemetry.readiness import Readiness

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    content_type: str


def metrics_endpoint(metrics: Metrics) -> HttpAnswer:
    """GET /metrics: the Prometheus text exposition."""
    body, content_type = metrics.render()
    return HttpAnswer(200, body, content_type)


def healthz_endpoint() -> HttpAnswer:
    """GET /healthz: the process is alive and its HTTP server answers."""
    return HttpAnswer(200, _json({"status": "ok"}), JSON)


def readyz_endpoint(readiness: Readiness) -> HttpAnswer:
    """GET /readyz: 200 when every check passes, else 503; the checks in the body."""
    ok, details = readiness.check()
    return HttpAnswer(200 if ok else 503,
                      _json({"status": "ready" if ok else "not ready", "checks": details}),
                      JSON)


def _json(data: object) -> bytes:
    return json.dumps(data, sort_keys=True).encode() + b"\n"
