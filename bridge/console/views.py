"""The console's data, read from the store and shaped as JSON-ready dicts; the API
returns them as they are and the HTML pages render them. Blocking reads: the
web layer runs them in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from pydicom import Dataset

from bridge.hl7 import CharsetError, HL7ParseError, decode_frame, parse_message
from bridge.hl7.charset import text_codec
from bridge.hl7.message import Limits
from bridge.mapping.engine import MappingSet
from bridge.mapping.explain import explain, routing_order, shown_path
from bridge.store import StepFilter, StepRow, Store, audit_tx, browse, history_tx, outbox_tx
from bridge.store.audit_tx import AuditEntry
from bridge.store.browse import MessageFilter
from bridge.store.history_tx import HistoryEntry
from bridge.store.items import dumps_item
from bridge.store.mpps_tx import MppsRecord
from bridge.store.orders_tx import LoggedMessage
from bridge.store.outbox_tx import OutboxMessage

SPS = "ScheduledProcedureStepSequence"


def _s(ds: Dataset | None, keyword: str) -> str:
    if ds is None:
        return ""
    value = ds.get(keyword)
    if value is None:
        return ""
    if not isinstance(value, str) and keyword == "ScheduledStationAETitle":
        return "\\".join(map(str, value))
    return str(value)


def step_row(row: StepRow) -> dict[str, Any]:
    ds = row.item
    sps = ds[SPS][0] if ds.get(SPS) else None
    return {"id": row.id, "status": row.sps_status,
            "date": _s(sps, "ScheduledProcedureStepStartDate"),
            "time": _s(sps, "ScheduledProcedureStepStartTime"),
            "station": _s(sps, "ScheduledStationAETitle"), "modality": _s(sps, "Modality"),
            "accession": _s(ds, "AccessionNumber"), "patient_id": _s(ds, "PatientID"),
            "patient_name": _s(ds, "PatientName"),
            "procedure": _s(ds, "RequestedProcedureDescription")
            or _s(sps, "ScheduledProcedureStepDescription"),
            "updated_at": row.updated_at}


def search_steps(store: Store, where: StepFilter, limit: int, offset: int) -> dict[str, Any]:
    rows = [step_row(r) for r in store.iter_steps(where, limit=limit, offset=offset)]
    return {"items": rows, "total": store.count_matching(where), "limit": limit,
            "offset": offset}


def step_detail(store: Store, step_id: int) -> dict[str, Any] | None:
    row = browse.get_step(store, step_id)
    if row is None:
        return None
    links = browse.step_links(store, step_id)
    audit, _ = audit_tx.search(store, target_kind="step", target_id=str(step_id), limit=100)
    return {**step_row(row), "created_at": row.created_at,
            "item": json.loads(dumps_item(row.item)),
            "message_id": links.message_id,
            "mpps": [mpps_row(m) for m in links.mpps],
            "outbox": [outbox_row(m) for m in links.outbox],
            "status_history": status_history(store, step_id, row.created_at,
                                             row.sps_status),
            "history": [audit_row(a) for a in reversed(audit)]}


def history_row(h: HistoryEntry) -> dict[str, Any]:
    return {"at": h.at, "from": h.from_status, "to": h.to_status, "source": h.source,
            "message_id": h.message_id, "mpps_id": h.mpps_id, "actor": h.actor,
            "note": h.note}


def status_history(store: Store, step_id: int, created_at: str, status: str
                   ) -> list[dict[str, Any]]:
    """Every status change of the item, oldest first, each with its source (HL7
    message, ORU result, MPPS, idle rule, operator). An item made from an HL7 order
    starts with a ``created`` row (its status then: the first change's ``from``)."""
    rows = [history_row(h) for h in history_tx.for_step(store, step_id)]
    if not rows or rows[0]["from"] != "":
        first = rows[0]["from"] if rows else status
        rows.insert(0, {"at": created_at, "from": "", "to": first, "source": "created",
                        "message_id": None, "mpps_id": None, "actor": "", "note": ""})
    return rows


def message_row(m: LoggedMessage) -> dict[str, Any]:
    return {"id": m.id, "received_at": m.received_at, "peer": m.peer,
            "sender": f"{m.sending_application}/{m.sending_facility}",
            "control_id": m.control_id, "message_type": m.message_type,
            "ack_code": m.ack_code, "outcome": m.outcome, "error": m.error,
            "mapping": m.mapping, "flags": m.flags, "replay_of": m.replay_of}


def hl7_text(raw: bytes, charset: str = "iso8859-1",
             aliases: dict[str, str] | None = None) -> str:
    try:
        return decode_frame(raw, default=charset, aliases=aliases or {}).text
    except CharsetError:
        return raw.decode("latin-1")


def segments(text: str) -> list[dict[str, Any]]:
    """Each segment with its fields numbered as HL7 counts them (MSH-1 is the separator)."""
    out: list[dict[str, Any]] = []
    counts: dict[str, int] = {}
    for line in re.split(r"\r\n|\r|\n", text):
        if not line:
            continue
        name = line[:3]
        counts[name] = counts.get(name, 0) + 1
        parts = line.split("|")
        if name == "MSH":
            fields = [("MSH-1", "|")] + [(f"MSH-{i + 2}", v) for i, v in enumerate(parts[1:])]
        else:
            fields = [(f"{name}-{i}", v) for i, v in enumerate(parts[1:], 1)]
        out.append({"segment": name, "repeat": counts[name],
                    "fields": [{"position": pos, "value": v} for pos, v in fields]})
    return out


def message_detail(store: Store, message_id: int) -> dict[str, Any] | None:
    m = browse.get_message(store, message_id)
    if m is None:
        return None
    text = hl7_text(m.raw)
    ack = hl7_text(m.ack) if m.ack else ""
    replays = browse.search_messages(store, MessageFilter(replay_of=message_id), limit=50)
    return {**message_row(m), "text": text, "segments": segments(text), "ack": ack,
            "ack_segments": segments(ack),
            "replays": [message_row(r) for r in replays.rows]}


def search_messages(store: Store, where: MessageFilter, limit: int, offset: int
                    ) -> dict[str, Any]:
    page = browse.search_messages(store, where, limit=limit, offset=offset)
    return {"items": [message_row(m) for m in page.rows], "total": page.total,
            "limit": limit, "offset": offset}


def outbox_row(m: OutboxMessage) -> dict[str, Any]:
    return {"id": m.id, "state": m.state, "destination": m.destination, "event": m.event,
            "message_type": m.message_type, "control_id": m.control_id,
            "attempts": m.attempts, "created_at": m.created_at,
            "next_attempt_at": m.next_attempt_at, "sent_at": m.sent_at,
            "last_error": m.last_error, "step_id": m.step_id, "mpps_id": m.mpps_id}


def outbox_detail(store: Store, outbox_id: int) -> dict[str, Any] | None:
    m = outbox_tx.get_message(store, outbox_id)
    if m is None:
        return None
    text = m.payload.decode("utf-8", errors="replace")
    ack = m.ack.decode("utf-8", errors="replace")
    return {**outbox_row(m), "order_key": m.order_key, "text": text,
            "segments": segments(text), "ack": ack, "ack_segments": segments(ack)}


def search_outbox(store: Store, states: list[str], destination: str, limit: int,
                  offset: int) -> dict[str, Any]:
    page = browse.search_outbox(store, states=states, destination=destination, limit=limit,
                                offset=offset)
    return {"items": [outbox_row(m) for m in page.rows], "total": page.total,
            "limit": limit, "offset": offset}


def mpps_row(m: MppsRecord) -> dict[str, Any]:
    return {"id": m.id, "sop_instance_uid": m.sop_instance_uid, "status": m.status,
            "calling_aet": m.calling_aet, "station_aet": m.station_aet,
            "modality": m.modality, "scheduled": m.scheduled, "note": m.note,
            "created_at": m.created_at, "updated_at": m.updated_at,
            "step_ids": list(m.step_ids)}


def mpps_detail(store: Store, mpps_id: int) -> dict[str, Any] | None:
    m = browse.get_mpps_by_id(store, mpps_id)
    if m is None:
        return None
    return {**mpps_row(m), "item": json.loads(dumps_item(m.item))}


def search_mpps(store: Store, status: str, limit: int, offset: int) -> dict[str, Any]:
    page = browse.search_mpps(store, status=status, limit=limit, offset=offset)
    return {"items": [mpps_row(m) for m in page.rows], "total": page.total,
            "limit": limit, "offset": offset}


def audit_row(a: AuditEntry) -> dict[str, Any]:
    return {"id": a.id, "at": a.at, "actor": a.actor, "role": a.role, "action": a.action,
            "target_kind": a.target_kind, "target_id": a.target_id, "summary": a.summary,
            "before": a.before, "after": a.after}


def search_audit(store: Store, actor: str, target_kind: str, target_id: str, limit: int,
                 offset: int) -> dict[str, Any]:
    rows, total = audit_tx.search(store, actor=actor, target_kind=target_kind,
                                  target_id=target_id, limit=limit, offset=offset)
    return {"items": [audit_row(a) for a in rows], "total": total, "limit": limit,
            "offset": offset}


def _since(delta: timedelta) -> str:
    return (datetime.now(UTC) - delta).isoformat()


def dashboard(store: Store) -> dict[str, Any]:
    """Counts for the dashboard: messages by outcome (last 5 minutes, hour, day), the
    outbox by state and its oldest pending message, the last rejections."""
    windows = {"5m": timedelta(minutes=5), "1h": timedelta(hours=1), "24h": timedelta(days=1)}
    messages: dict[str, dict[str, int]] = {}
    for label, delta in windows.items():
        counts = browse.message_counts(store, _since(delta))
        accepted = counts.get("AA", 0)
        messages[label] = {"accepted": accepted,
                           "rejected": sum(n for code, n in counts.items() if code != "AA")}
    per_min = {k: round(v / 5, 1) for k, v in messages["5m"].items()}
    outbox = outbox_tx.count_by_state(store)
    dead_letters = browse.search_messages(store, MessageFilter(outcome="rejected"), limit=5)
    return {
        "now": datetime.now(UTC).isoformat(timespec="seconds"),
        "messages": messages, "per_minute": per_min,
        "outbox": {"pending": outbox.get("pending", 0), "sent": outbox.get("sent", 0),
                   "dead": outbox.get("dead", 0),
                   "oldest_pending": browse.oldest_pending(store) or ""},
        "dead_letters": dead_letters.total,
        "worklist_items": store.count_steps(),
        "last_errors": [{"id": m.id, "received_at": m.received_at,
                         "message_type": m.message_type, "control_id": m.control_id,
                         "ack_code": m.ack_code, "error": m.error}
                        for m in dead_letters.rows],
    }


class PasteError(ValueError):
    """A pasted message that is not HL7 (no MSH, bad MSH-18, ...)."""


def explain_text(mappings: MappingSet, text: str, *, charset: str = "ascii",
                 aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """``mapping explain`` for a pasted message: routing, then each attribute's value,
    the HL7 field it came from and the rule that fired.

    Pasted text is already Unicode, but the bytes of its ``\\Xhh\\`` escapes are in
    the set MSH-18 names (else ``charset``, mllp.default_charset), as in the daemon."""
    text = text.strip().replace("\r\n", "\r").replace("\n", "\r")
    if not text.startswith("MSH"):
        raise PasteError("not an HL7 message: it must start with an MSH segment")
    try:
        codec = text_codec(text, default=charset, aliases=aliases or {})
        message = parse_message(text, Limits(segments=2000, fields=256, repetitions=100,
                                             components=100), codec=codec)
    except CharsetError as exc:
        raise PasteError(f"MSH-18: {exc}") from None
    except HL7ParseError as exc:
        raise PasteError(f"not an HL7 message: {exc}") from None
    exp = explain(mappings, message)
    return {
        "mapping": exp.mapping.name if exp.mapping is not None else None,
        "routes": [{"mapping": r.mapping, "file": shown_path(r.path), "verdict": r.verdict}
                   for r in exp.routes],
        "items": [{"group": i.group,
                   "rows": [{"attribute": r.attribute, "depth": r.depth, "value": r.value,
                             "field": r.field, "rule": r.rule,
                             "error": str(r.error) if r.error is not None else None}
                            for r in i.rows]}
                  for i in exp.items],
        "error": None if exp.error is None else {
            "code": exp.error.code, "ack_code": exp.error.ack_code,
            "location": exp.error.location, "text": str(exp.error)},
    }


def mapping_order(mappings: MappingSet) -> list[dict[str, Any]]:
    return [{"name": m.name, "file": shown_path(m.path), "fallback": m.match.fallback}
            for m in routing_order(mappings)]


_SECRET = re.compile(r"password|secret|hash|dsn|sha256|^token$", re.IGNORECASE)


def redacted(value: Any) -> Any:
    """The settings with every secret hidden: passwords, token and password hashes,
    database connection strings (which may hold a password)."""
    if isinstance(value, dict):
        return {k: ("***" if _SECRET.search(str(k)) and v not in ("", None, [], {})
                    else redacted(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value
