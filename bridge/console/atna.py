"""The admin's read-only view of the ATNA audit trail's local copy (docs/audit.md):
what ``mwl-bridge audit list`` and ``audit show`` read (bridge.store.atna_tx), with
the same filters. It names patients: admins only, filters by POST (never in a URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.dom import minidom

from bridge.store import Store, atna_tx
from bridge.store.sqltx import stamp

OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}
FILTERS = ("patient", "user", "ae", "event", "days")


def _row(e: atna_tx.StoredEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at, "event_id": e.event_id, "event": e.event_name,
            "type_codes": e.type_codes, "action": e.action,
            "outcome": OUTCOMES.get(e.outcome, str(e.outcome)), "failed": e.outcome != 0,
            "subjects": [f"{k}={v}" for k, v in e.subjects], "pending": list(e.pending)}


def search(store: Store, f: dict[str, str], limit: int, offset: int) -> dict[str, Any]:
    """One page, newest first, as ``audit list`` filters (``days``: the last N days)."""
    days = int(f["days"]) if f.get("days", "").isdigit() else 0
    since = stamp(datetime.now(UTC) - timedelta(days=days)) if days else ""
    rows, total = atna_tx.search(store, patient=f.get("patient", ""), user=f.get("user", ""),
                                 ae=f.get("ae", ""), event=f.get("event", ""), since=since,
                                 limit=limit, offset=offset)
    return {"items": [_row(e) for e in rows], "total": total, "limit": limit,
            "offset": offset}


def event(store: Store, event_id: int) -> dict[str, Any] | None:
    """One event with its audit message, indented for reading."""
    e = atna_tx.get_event(store, event_id)
    if e is None:
        return None
    try:
        xml = minidom.parseString(e.message).toprettyxml(indent="  ")  # the daemon's own XML
        xml = xml.split("\n", 1)[1] if xml.startswith("<?xml") else xml
    except Exception:  # noqa: BLE001 - show what is stored
        xml = e.message.decode("utf-8", "replace")
    return {**_row(e), "message": xml}
