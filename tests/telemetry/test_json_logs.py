"""logging.format json: the daemon, run as operators run it, writes one JSON object per
line on standard error, with stable field names and no patient data."""

from __future__ import annotations

import json
import logging
from io import StringIO
from pathlib import Path

import pytest

from bridge.app.logs import JsonFormatter, setup_logging
from tests.e2e.conftest import DCMTK, FIXTURES, start_daemon, stop_daemon, write_config


@pytest.mark.skipif(not (DCMTK / "findscu").exists(), reason="DCMTK not installed")
def test_the_daemon_logs_one_json_object_per_line(tmp_path: Path):
    config = write_config(tmp_path, "logging:\n  level: DEBUG\n  format: json\n")
    daemon = start_daemon(config, tmp_path / "data")
    try:
        assert daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7").returncode == 0
        assert daemon.send(FIXTURES / "orm-missing-pid3.hl7").returncode == 1
        assert len(daemon.findscu(tmp_path, "PatientName", "AccessionNumber")) == 1
    finally:
        code = stop_daemon(daemon)
    assert code == 0
    records = []
    for line in daemon.log:
        record = json.loads(line)  # every line, not only the bridge's own
        assert isinstance(record, dict), line
        records.append(record)
    assert len(records) > 5
    for r in records:
        assert {"ts", "level", "logger", "msg"} <= r.keys(), r
        assert r["ts"].endswith("Z") and r["ts"][10] == "T"
        assert r["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
    ready = [r for r in records if r["msg"].startswith("ready: MLLP on")]
    assert len(ready) == 1 and ready[0]["logger"] == "bridge.app.daemon"
    accepted = [r for r in records if r.get("ack_code") == "AA"]
    assert accepted and accepted[0]["control_id"] == "MSG-20261128-0001"
    assert accepted[0]["message_type"] == "ORM^O01"
    assert accepted[0]["logger"] == "bridge.orders.ingest"
    rejected = [r for r in records if r.get("ack_code") == "AE"]
    assert rejected and rejected[0]["error_code"] == 101
    assert any(r["msg"] == "stopped" for r in records)
    text = "\n".join(daemon.log)
    assert "DOE" not in text and "PAT10001" not in text  # no PHI without log_phi


def test_a_start_failure_is_json_too(tmp_path: Path):
    import subprocess
    import sys

    from tests.e2e.conftest import REPO

    config = write_config(tmp_path, "logging:\n  format: json\n"
                                    "store:\n  sqlite_path: /proc/no/such/dir/db.sqlite3\n")
    res = subprocess.run([sys.executable, "-m", "bridge", "--config", str(config), "serve"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert lines
    records = [json.loads(line) for line in lines]
    assert records[-1]["level"] == "ERROR" and "cannot start" in records[-1]["msg"]


def _format(log_phi: bool, **extra: object) -> dict[str, object]:
    record = logging.LogRecord("bridge.test", logging.INFO, __file__, 1, "hello %s", ("you",),
                               None)
    for k, v in extra.items():
        setattr(record, k, v)
    return dict(json.loads(JsonFormatter(log_phi=log_phi).format(record)))


def test_patient_fields_only_with_log_phi():
    out = _format(False, control_id="C1", calling_ae="CT01", patient_name="DOE^JOHN",
                  patient_id="PAT1")
    assert out["msg"] == "hello you" and out["control_id"] == "C1"
    assert out["calling_ae"] == "CT01"
    assert "patient_name" not in out and "patient_id" not in out
    assert _format(True, patient_name="DOE^JOHN")["patient_name"] == "DOE^JOHN"


def test_an_exception_gives_its_type_and_place_and_its_text_only_with_log_phi():
    logger = logging.getLogger("bridge.test.exc")
    stream = StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        for log_phi in (False, True):
            setup_logging("INFO", fmt="json", log_phi=log_phi, stream=stream)
            try:
                raise ValueError("DOE^JOHN is not a date")
            except ValueError:
                logger.exception("failed")
    finally:  # leave the test process's logging as it was
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)
        logging.captureWarnings(False)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["exc_type"] == "ValueError" and "test_json_logs.py" in first["exc_where"]
    assert "DOE" not in json.dumps(first)
    assert "DOE^JOHN is not a date" in second["exc"]
