"""The wiring (bridge/app/services.py): in the daemon, the reconciliation's C-FINDs to
a real DICOM peer as the PACS and the completion they make reach the ATNA audit
trail's local copy, and its metrics are on /metrics."""

from __future__ import annotations

import re
import time

from tests.console.conftest import admin_config, console_url
from tests.e2e.conftest import FIXTURES, start_daemon, stop_daemon, write_config

from .conftest import FakePacs, Study

STUDY = "1.2.840.113619.2.55.3.604688119.969.1764318615.101"  # the fixture order's


def metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert m, f"no {name} in /metrics"
    return float(m[1])


def test_the_daemons_reconciliation_is_audited_and_measured(tmp_path):
    import httpx

    pacs = FakePacs(studies=[Study(STUDY, "ACC20261128001", "PAT10001", instances=4)])
    reconcile = ("reconcile:\n  enabled: true\n  min_age_min: 0\n  max_age_h: 100000\n"
                 "  interval_s: 0.3\n  settle_poll_s: 0.3\n  pacs:\n"
                 f"    - {{name: pacs1, ae_title: PACS, host: 127.0.0.1, port: {pacs.port}}}\n")
    config = write_config(tmp_path, admin_config("audit:\n  enabled: true\n" + reconcile))
    daemon = start_daemon(config, tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        deadline = time.monotonic() + 60
        while not any("COMPLETED by pacs query" in line for line in daemon.log):
            assert time.monotonic() < deadline, "\n".join(daemon.log[-20:])
            time.sleep(0.1)
        text = httpx.get(console_url(daemon) + "/metrics", timeout=30).text
    finally:
        code = stop_daemon(daemon)
        pacs.stop()
    assert code == 0, "\n".join(daemon.log[-30:])
    assert metric(text, "mwl_bridge_reconcile_cycles_total") >= 2
    assert metric(text, 'mwl_bridge_reconcile_cfind_requests_total{pacs="pacs1"}') >= 2
    assert metric(text, 'mwl_bridge_reconcile_studies_total{outcome="completed",'
                        'source="query"}') == 1
    assert metric(text, "mwl_bridge_reconcile_conflicts_open") == 0
    queries = daemon.cli("audit", "list", "--event", "Query", "--ae", "PACS").stdout
    assert re.search(r"\((\d+) of \1 event\(s\)\)", queries) and "(0 of" not in queries
    assert "patient=PAT10001" in queries
    completed = daemon.cli("audit", "list", "--event", "Procedure Record").stdout
    assert "(1 of 1 event(s))" in completed and "ae=PACS" in completed, completed
