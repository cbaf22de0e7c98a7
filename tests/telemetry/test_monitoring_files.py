"""docs/monitoring/: the alert rules and the Grafana dashboard use only metrics that exist."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from bridge.audit import NO_AUDIT
from bridge.audit.metrics import AuditMetrics
from bridge.telemetry import Metrics

DOCS = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
NAME = re.compile(r"\bmwl_bridge_[a-z0-9_]+")


def _expressions() -> list[tuple[str, str]]:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text(encoding="utf-8"))
    found = [(f"alerts.yml: {r['alert']}", r["expr"]) for g in rules["groups"]
             for r in g["rules"]]
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    found += [(f"grafana-dashboard.json: {p['title']}", t["expr"]) for p in dashboard["panels"]
              for t in p["targets"]]
    for var in dashboard["templating"]["list"]:
        if "definition" in var:
            found.append((f"grafana-dashboard.json: ${var['name']}", var["definition"]))
    return found


def _all_names() -> frozenset[str]:
    """The daemon's registry as the daemon has it: with the audit trail's metrics
    (registered by the AuditService, bridge/audit/metrics.py)."""
    metrics = Metrics()
    AuditMetrics(metrics.registry, trail=NO_AUDIT, depth=dict)
    return metrics.names()


def test_every_metric_the_rules_and_the_dashboard_use_exists():
    names = _all_names()
    used = [(where, name) for where, expr in _expressions() for name in NAME.findall(expr)]
    assert len(used) > 30
    missing = sorted({f"{where}: {name}" for where, name in used if name not in names})
    assert not missing, "unknown metrics:\n" + "\n".join(missing)


def test_every_metric_family_is_on_the_dashboard():
    used = {name for _, expr in _expressions() for name in NAME.findall(expr)}
    base = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in _all_names()}
    assert {"mwl_bridge_audit_events", "mwl_bridge_reconcile_conflicts_open"} <= families
    assert families - base <= {"mwl_bridge_metrics_read_errors"}


def test_the_rules_file_is_well_formed():
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"]
            assert rule["expr"].count("(") == rule["expr"].count(")")
