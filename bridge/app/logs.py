"""The daemon's log output: ``logging.format`` text (default) or json.

json: one object per line on standard error, with stable field names:

    ts       the time, UTC, ISO 8601 with milliseconds ("2026-11-28T09:49:56.123Z")
    level    DEBUG, INFO, WARNING, ERROR, CRITICAL
    logger   the logger's name ("bridge.orders.ingest")
    msg      the formatted message
    thread   the thread's name, when it is not the main thread ("store-writer", ...)
    exc_type, exc_where  for a logged exception: its type and where it was raised
    exc      the whole traceback, only with ``logging.log_phi`` (an exception's
             message may quote a value)

plus every field a call passes with ``extra=`` (``control_id``, ``message_type``,
``peer``, ``calling_ae``, ...). Fields that name patient data (``PHI_FIELDS``)
are dropped unless ``logging.log_phi`` is on. The messages themselves follow the
same rule as in text: no patient data at INFO and above (docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

# The attributes every LogRecord has; anything else on a record came with extra=.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime", "taskName",
    "color_message",  # uvicorn's ANSI-coloured copy of msg (the console's HTTP server)
}

# extra= fields that carry patient data: only with log_phi.
PHI_FIELDS = frozenset({
    "patient_id", "patient_name", "birth_date", "accession", "accession_number",
    "other_patient_ids", "raw", "content", "message_text", "text", "identifier",
})

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler setup_logging installs (and replaces when called again)."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (see the module docstring)."""

    def __init__(self, *, log_phi: bool = False) -> None:
        super().__init__()
        self.log_phi = log_phi

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.threadName and record.thread != threading.main_thread().ident:
            out["thread"] = record.threadName
        for key, value in vars(record).items():
            if key in _RECORD_FIELDS or key in out or key.startswith("_"):
                continue
            if key in PHI_FIELDS and not self.log_phi:
                continue
            out[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["exc_type"] = type(exc).__name__
            frames = traceback.extract_tb(exc.__traceback__)
            if frames:
                out["exc_where"] = f"{frames[-1].filename}:{frames[-1].lineno} in " \
                                   f"{frames[-1].name}"
            if self.log_phi:
                out["exc"] = "".join(traceback.format_exception(exc)).rstrip()
        return json.dumps(out, ensure_ascii=False, default=str, separators=(",", ":"))


def setup_logging(level: str, *, fmt: str = "text", log_phi: bool = False,
                  stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (standard error) in ``fmt``.

    pynetdicom logs request identifiers (patient data) at INFO, and pydicom
    quotes invalid values in its WARNINGs: both stay quiet unless ``log_phi``.
    """
    handler = _Handler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(log_phi=log_phi))
        logging.captureWarnings(True)  # warnings become records too: every line is JSON
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)  # set up again (tests run several daemons in one process)
    root.addHandler(handler)
    root.setLevel(level)
    if not log_phi:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        logging.getLogger("pydicom").setLevel(logging.ERROR)
