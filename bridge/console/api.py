"""The JSON API: one table of endpoints, from which both the routes and the
OpenAPI document (``/api/openapi.json``, kept as docs/openapi.json) are made.

One style throughout: listings are ``POST /api/THING/search`` with the filters
in a JSON body (patient IDs and accession numbers never go into a URL, where
access logs and browser histories would keep them) and answer
``{"items": [...], "total": N, "limit": L, "offset": O}``; one row is
``GET /api/THING/{id}``; an action is ``POST /api/THING/{id}/ACTION``. Every
error is ``{"error": {"status": S, "message": "..."}}``.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bridge.console import actions, views
from bridge.console.context import ReplayResult
from bridge.console.web import Call, Endpoint, HttpError
from bridge.store import StepFilter, StoreTx, reconcile_tx
from bridge.store.browse import MessageFilter

Limit = Annotated[int, Field(ge=1, le=1000, description="rows per page")]
Offset = Annotated[int, Field(ge=0, le=10_000_000, description="rows to skip")]
Date = Annotated[str, Field(pattern=r"^(\d{8})?$", description="YYYYMMDD")]
Text64 = Annotated[str, Field(max_length=64)]
_DA = re.compile(r"^\d{8}$")
# A day and a time as DICOM DA and TM hold them (the calendar check follows: Feb 30th
# fits the pattern and is refused with 422 "not a calendar date").
DAY = r"^\d{4}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])$"
HHMM = r"^([01]\d|2[0-3])[0-5]\d([0-5]\d)?$"
# Text for a DICOM value: no backslash (the value separator), no control character.
TEXT = r"^[^\\\x00-\x1f\x7f]*$"
ID_TEXT = r"^[^\\^\x00-\x1f\x7f]*$"  # and no ^ (a Patient ID is not a name)


class Body(BaseModel):
    # strict: true is not a limit, nor "5" an offset (pydantic would coerce both)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PageBody(Body):
    limit: Limit = 50
    offset: Offset = 0


class WorklistSearch(PageBody):
    station: Text64 = ""
    modality: Annotated[str, Field(max_length=16)] = ""
    date: Date = ""
    date_from: Date = ""
    date_to: Date = ""
    status: Annotated[str, Field(max_length=16)] = ""
    patient_id: Text64 = ""
    accession: Annotated[str, Field(max_length=16)] = ""


class MessageSearch(PageBody):
    outcome: Literal["", "accepted", "rejected", "flagged"] = ""
    control_id: Annotated[str, Field(max_length=199)] = ""
    message_type: Annotated[str, Field(max_length=20)] = ""
    since: Annotated[str, Field(max_length=40, description="ISO 8601, UTC")] = ""


class OutboxSearch(PageBody):
    states: list[Literal["pending", "sent", "dead"]] = Field(default_factory=list,
                                                             max_length=3)
    destination: Text64 = ""


class MppsSearch(PageBody):
    status: Literal["", "IN PROGRESS", "COMPLETED", "DISCONTINUED"] = ""


class AuditSearch(PageBody):
    actor: Text64 = ""
    target_kind: Literal["", "step", "message", "outbox"] = ""
    target_id: Text64 = ""


UID = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"


class StudyPushBody(Body):
    """A study the PACS holds as complete (Orthanc's OnStableStudy)."""

    study_instance_uid: Annotated[str, Field(min_length=1, max_length=64, pattern=UID)]
    accession_number: Annotated[str, Field(max_length=16, pattern=TEXT)] = ""
    patient_id: Annotated[str, Field(max_length=64, pattern=ID_TEXT)] = ""
    # Not strict: Orthanc's Lua writes a count as 3 or as 3.0.
    series: Annotated[int, Field(ge=-1, le=1_000_000, strict=False)] = -1
    instances: Annotated[int, Field(ge=-1, le=100_000_000, strict=False)] = -1
    pacs: Annotated[str, Field(max_length=64, pattern=ID_TEXT)] = "orthanc"


class Reason(Body):
    reason: Annotated[str, Field(max_length=200)] = ""


class Reschedule(Body):
    date: Annotated[str, Field(pattern=DAY, description="YYYYMMDD")]
    time: Annotated[str, Field(pattern=HHMM, description="HHMM[SS]")]
    station: Annotated[str, Field(max_length=16, pattern=TEXT)] = ""
    reason: Annotated[str, Field(max_length=200)] = ""

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        return _check_date(value)


def _check_date(value: str) -> str:
    import datetime as dt

    try:
        dt.datetime.strptime(value, "%Y%m%d")
    except ValueError:
        raise ValueError("not a calendar date (YYYYMMDD)") from None
    return value


class CreateItem(Body):
    patient_id: Annotated[str, Field(min_length=1, max_length=64, pattern=ID_TEXT)]
    patient_name: Annotated[str, Field(min_length=1, max_length=64, pattern=TEXT,
                                       description="Family^Given")]
    accession: Annotated[str, Field(min_length=1, max_length=16, pattern=TEXT)]
    modality: Annotated[str, Field(pattern=r"^[A-Z0-9_]{1,16}$")]
    station: Annotated[str, Field(min_length=1, max_length=16, pattern=TEXT)]
    date: Annotated[str, Field(pattern=DAY, description="YYYYMMDD")]
    time: Annotated[str, Field(pattern=HHMM, description="HHMM[SS]")]
    procedure: Annotated[str, Field(max_length=64, pattern=TEXT)] = ""
    birth_date: Date = ""
    sex: Literal["", "F", "M", "O"] = ""

    @field_validator("date")
    @classmethod
    def _real_date(cls, value: str) -> str:
        return _check_date(value)


class Explain(Body):
    message: Annotated[str, Field(min_length=1, max_length=1_000_000,
                                  description="one HL7 v2 message (ER7)")]


async def _read(fn: Any, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _found(value: Any, what: str) -> Any:
    if value is None:
        raise HttpError(404, f"no {what}")
    return value


# --- handlers --------------------------------------------------------------------------

async def session_info(call: Call) -> Any:
    p = call.identity.principal
    s = call.identity.session
    return {"name": p.name, "role": p.role, "kind": p.kind,
            "csrf_token": s.csrf if s is not None else None}


async def dashboard(call: Call) -> Any:
    data = await _read(views.dashboard, call.ctx.store)
    rows = await _read(call.ctx.instances)
    return {**data, "live": call.ctx.live(), "instances": rows, "instance_count": len(rows)}


async def worklist_search(call: Call) -> Any:
    b: WorklistSearch = call.body
    for name in ("date", "date_from", "date_to"):
        if getattr(b, name) and not _DA.match(getattr(b, name)):
            raise HttpError(422, f"{name}: YYYYMMDD")
    where = StepFilter(station=b.station, modality=b.modality, date=b.date, status=b.status,
                       patient_id=b.patient_id, accession=b.accession,
                       date_from=b.date_from, date_to=b.date_to)
    return await _read(views.search_steps, call.ctx.store, where, b.limit, b.offset)


async def worklist_item(call: Call) -> Any:
    return _found(await _read(views.step_detail, call.ctx.store, call.path_id()),
                  "worklist item")


async def _status_action(call: Call, action: str) -> Any:
    body: Reason = call.body
    result = await call.ctx.submit(actions.status_job(
        call.path_id(), action, call.actor, call.ctx.reporter, body.reason))
    if result.queued:
        call.ctx.notify()
    return {"id": result.id, "status": result.status, "queued": result.queued,
            "message": result.message}


async def worklist_cancel(call: Call) -> Any:
    return await _status_action(call, "cancel")


async def worklist_hold(call: Call) -> Any:
    return await _status_action(call, "hold")


async def worklist_release(call: Call) -> Any:
    return await _status_action(call, "release")


async def worklist_reschedule(call: Call) -> Any:
    b: Reschedule = call.body
    time = b.time if len(b.time) == 6 else b.time + "00"
    result = await call.ctx.submit(actions.reschedule_job(
        call.path_id(), b.date, time, b.station, call.actor, call.ctx.reporter, b.reason))
    if result.queued:
        call.ctx.notify()
    return {"id": result.id, "status": result.status, "queued": result.queued,
            "message": result.message}


async def worklist_create(call: Call) -> Any:
    b: CreateItem = call.body
    new = actions.NewItem(patient_id=b.patient_id, patient_name=b.patient_name,
                          accession=b.accession, modality=b.modality, station=b.station,
                          date=b.date, time=b.time if len(b.time) == 6 else b.time + "00",
                          procedure=b.procedure, birth_date=b.birth_date, sex=b.sex)
    result = await call.ctx.submit(actions.create_job(new, call.actor, call.ctx.reporter))
    if result.queued:
        call.ctx.notify()
    return {"id": result.id, "status": result.status, "queued": result.queued,
            "message": result.message}


async def messages_search(call: Call) -> Any:
    b: MessageSearch = call.body
    where = MessageFilter(outcome=b.outcome, control_id=b.control_id,
                          message_type=b.message_type, since=b.since)
    return await _read(views.search_messages, call.ctx.store, where, b.limit, b.offset)


async def message_item(call: Call) -> Any:
    return _found(await _read(views.message_detail, call.ctx.store, call.path_id()),
                  "message")


async def replay(call: Call, message_id: int) -> dict[str, Any]:
    """Replay a dead letter through the daemon's intake; audited."""
    original = await _read(views.message_detail, call.ctx.store, message_id)
    if original is None:
        raise HttpError(404, f"no message {message_id}")
    if original["ack_code"] == "AA":
        raise HttpError(409, f"message {message_id} was accepted; only rejected messages "
                             "are replayed")
    actor = call.actor

    def audit(tx: StoreTx, result: ReplayResult) -> None:
        # In the transaction that records the replayed message (bridge/app/services.py).
        actions.audit_job(
            actor, "message.replay", "message", str(message_id),
            f"replayed as {result.message_id}: {result.ack_code}" if result.message_id
            else f"not replayed: {result.summary}"[:200],
            before={"ack_code": original["ack_code"], "error": original["error"]},
            after={"message_id": result.message_id, "ack_code": result.ack_code,
                   "summary": result.summary})(tx)

    result = await call.ctx.replay(message_id, audit)
    return {"id": message_id, "replayed_as": result.message_id, "ack_code": result.ack_code,
            "summary": result.summary,
            "ack": views.hl7_text(result.ack) if result.ack else ""}


async def message_replay(call: Call) -> Any:
    return await replay(call, call.path_id())


async def outbox_search(call: Call) -> Any:
    b: OutboxSearch = call.body
    return await _read(views.search_outbox, call.ctx.store, list(b.states), b.destination,
                       b.limit, b.offset)


async def outbox_item(call: Call) -> Any:
    return _found(await _read(views.outbox_detail, call.ctx.store, call.path_id()),
                  "outbox message")


async def outbox_retry(call: Call) -> Any:
    result = await call.ctx.submit(actions.retry_job(call.path_id(), call.actor))
    call.ctx.notify()
    return {"id": result.id, "status": result.status, "queued": 1, "message": result.message}


async def mpps_search(call: Call) -> Any:
    b: MppsSearch = call.body
    return await _read(views.search_mpps, call.ctx.store, b.status, b.limit, b.offset)


async def mpps_item(call: Call) -> Any:
    return _found(await _read(views.mpps_detail, call.ctx.store, call.path_id()),
                  "MPPS instance")


async def mapping_explain(call: Call) -> Any:
    b: Explain = call.body
    try:
        return views.explain_text(call.ctx.mappings(), b.message, charset=call.ctx.charset,
                                  aliases=dict(call.ctx.charset_aliases))
    except views.PasteError as exc:
        raise HttpError(422, str(exc)) from None


async def mapping_check(call: Call) -> Any:
    problems = await asyncio.to_thread(call.ctx.check_mappings)
    return {"ok": not problems, "problems": problems,
            "active": views.mapping_order(call.ctx.mappings())}


async def config(call: Call) -> Any:
    return views.redacted(call.ctx.config())


async def instances(call: Call) -> Any:
    rows = await _read(call.ctx.instances)  # a store read
    return {"items": rows, "total": len(rows), "limit": len(rows), "offset": 0}


async def audit_search(call: Call) -> Any:
    b: AuditSearch = call.body
    return await _read(views.search_audit, call.ctx.store, b.actor, b.target_kind,
                       b.target_id, b.limit, b.offset)


async def reconcile_study(call: Call) -> Any:
    push = call.ctx.study_push
    if push is None:
        raise HttpError(404, "the PACS push is not available in this daemon")
    b: StudyPushBody = call.body
    return await push(study_uid=b.study_instance_uid, accession=b.accession_number,
                      patient_id=b.patient_id, series=b.series, instances=b.instances,
                      pacs=b.pacs, user=call.actor.name, host=call.actor.peer)


async def reconcile_conflicts(call: Call) -> Any:
    rows = await _read(reconcile_tx.conflicts, call.ctx.store, 1000)
    items = [{"step_id": c.step_id, "kind": c.kind, "detail": c.detail, "pacs": c.pacs,
              "found_study_uid": c.found_uid, "accession_number": c.accession,
              "status": c.sps_status, "at": c.at} for c in rows]
    return {"items": items, "total": len(items), "limit": 1000, "offset": 0}


_ID = "{id:rowid}"  # bridge/console/web.py: RowId

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/session", "viewer", "Who you are, your role and CSRF token",
             session_info, "session", response="Session"),
    Endpoint("GET", "/api/dashboard", "viewer", "Message rates, outbox, last errors",
             dashboard, "dashboard"),
    Endpoint("POST", "/api/worklist/search", "viewer", "Search worklist items",
             worklist_search, "worklist", WorklistSearch, response="Page"),
    Endpoint("POST", "/api/worklist", "operator", "Create a worklist item by hand",
             worklist_create, "worklist", CreateItem, ok=201, response="ActionResult"),
    Endpoint("GET", f"/api/worklist/{_ID}", "viewer",
             "One worklist item: DICOM JSON, MPPS, outbox, history", worklist_item,
             "worklist"),
    Endpoint("POST", f"/api/worklist/{_ID}/cancel", "operator", "Cancel an item (ORC-5 CA)",
             worklist_cancel, "worklist", Reason, response="ActionResult"),
    Endpoint("POST", f"/api/worklist/{_ID}/hold", "operator", "Hold an item (ORC-5 HD)",
             worklist_hold, "worklist", Reason, response="ActionResult"),
    Endpoint("POST", f"/api/worklist/{_ID}/release", "operator",
             "Release a held item (ORC-5 SC)", worklist_release, "worklist", Reason,
             response="ActionResult"),
    Endpoint("POST", f"/api/worklist/{_ID}/reschedule", "operator",
             "Move an item to another date, time or station", worklist_reschedule,
             "worklist", Reschedule, response="ActionResult"),
    Endpoint("POST", "/api/messages/search", "viewer",
             "Search the HL7 message log (rejected: the dead letters)", messages_search,
             "messages", MessageSearch, response="Page"),
    Endpoint("GET", f"/api/messages/{_ID}", "viewer",
             "One message: raw text by segment, ACK, reason, replays", message_item,
             "messages"),
    Endpoint("POST", f"/api/messages/{_ID}/replay", "operator",
             "Run a rejected message again, with the mapping files as they are now",
             message_replay, "messages"),
    Endpoint("POST", "/api/outbox/search", "viewer", "Search the outbound status messages",
             outbox_search, "outbox", OutboxSearch, response="Page"),
    Endpoint("GET", f"/api/outbox/{_ID}", "viewer", "One outbound message with its ACK",
             outbox_item, "outbox"),
    Endpoint("POST", f"/api/outbox/{_ID}/retry", "operator",
             "Re-queue a dead letter (or make a waiting one due now)", outbox_retry,
             "outbox", response="ActionResult"),
    Endpoint("POST", "/api/mpps/search", "viewer", "Search MPPS instances", mpps_search,
             "mpps", MppsSearch, response="Page"),
    Endpoint("GET", f"/api/mpps/{_ID}", "viewer", "One MPPS instance as DICOM JSON",
             mpps_item, "mpps"),
    Endpoint("POST", "/api/mapping/explain", "viewer",
             "Explain how a message maps, attribute by attribute", mapping_explain,
             "mapping", Explain),
    Endpoint("GET", "/api/mapping/check", "viewer",
             "Check the mapping files on disk; the active set in routing order",
             mapping_check, "mapping"),
    Endpoint("GET", "/api/config", "admin", "The settings in effect, secrets hidden",
             config, "admin"),
    Endpoint("GET", "/api/instances", "viewer", "The daemon instances and their roles",
             instances, "admin", response="Page"),
    Endpoint("POST", "/api/reconcile/study", "operator",
             "A PACS reports a complete study (Orthanc OnStableStudy): complete or flag "
             "its items", reconcile_study, "reconcile", StudyPushBody),
    Endpoint("GET", "/api/reconcile/conflicts", "viewer",
             "Items not completed because the PACS holds a conflicting study",
             reconcile_conflicts, "reconcile", response="Page"),
    Endpoint("POST", "/api/audit/search", "admin",
             "Search the audit trail of changes made through the console", audit_search,
             "admin", AuditSearch, response="Page"),
)
