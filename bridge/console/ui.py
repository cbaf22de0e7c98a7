"""The web UI: server-rendered pages (Jinja2 templates shipped in the package) with a
little plain JavaScript (static/console.js: the dashboard's polling, confirmations).

Patient data is shown to logged-in users only and never put into a URL: the
worklist search is a POST form, and pages are addressed by opaque row ids.
Every form carries the session's CSRF token; every change goes through the same
code as the API (actions.py, its audit rows included).
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from bridge.console import actions, api, atna, views
from bridge.console.actions import ActionRefused
from bridge.console.auth import allows
from bridge.console.context import ConsoleContext
from bridge.console.settings import Role
from bridge.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Call,
    Gate,
    HttpError,
    Identity,
    log,
)
from bridge.store import StepFilter
from bridge.store.browse import MessageFilter

TEMPLATES = Path(__file__).parent / "templates"
_env = Environment(loader=FileSystemLoader(TEMPLATES),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)
_env.filters["when"] = lambda v: (str(v or "")[:19].replace("T", " ") if v else "")
_env.filters["pretty"] = lambda v: json.dumps(v, indent=1, ensure_ascii=False)

NAV = (("/", "Dashboard", "viewer"), ("/worklist", "Worklist", "viewer"),
       ("/messages", "Messages", "viewer"), ("/outbox", "Outbox", "viewer"),
       ("/mpps", "MPPS", "viewer"), ("/mapping", "Mapping", "viewer"),
       ("/audit", "Audit", "admin"), ("/atna", "ATNA", "admin"), ("/config", "Config", "admin"))

Page = Callable[[Request, Identity], Awaitable[Response]]


def error_page(status: int, message: str) -> str:
    return _env.get_template("error.html").render(status=status, message=message, nav=(),
                                                  identity=None, flash=[], csrf="")


class Pages:
    def __init__(self, gate: Gate, ctx: ConsoleContext) -> None:
        self.gate = gate
        self.ctx = ctx
        self.store = ctx.store
        self.page_size = ctx.settings.page_size

    # --- plumbing ---

    def render(self, request: Request, identity: Identity, template: str, *,
               status: int = 200, **values: Any) -> HTMLResponse:
        session = identity.session
        flash = list(session.flash) if session is not None else []
        if session is not None:
            session.flash.clear()
        nav = [(href, label) for href, label, role in NAV
               if allows(identity.principal.role, role)]  # type: ignore[arg-type]
        body = _env.get_template(template).render(
            identity=identity.principal, csrf=session.csrf if session else "", nav=nav,
            path=request.url.path, flash=flash,
            may_operate=allows(identity.principal.role, "operator"), **values)
        return HTMLResponse(body, status_code=status)

    def guard(self, role: Role, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                identity = self.gate.identify(request)
            except HttpError as exc:
                return HTMLResponse(error_page(exc.status, exc.message), exc.status)
            fresh = None
            if identity is None:
                if request.method == "GET":
                    return RedirectResponse("/login", 303)
                return HTMLResponse(error_page(401, "log in first"), 401)
            if identity.session is None and identity.principal.kind == "anonymous":
                # the anonymous loopback admin still gets a session: forms need a CSRF token
                fresh = self.gate.auth.open_session(identity.principal)
                identity = Identity(identity.principal, fresh)
                if request.method != "GET":
                    return HTMLResponse(error_page(403, "missing CSRF token (reload the "
                                                        "page)"), 403)
            try:
                if request.method != "GET":
                    form = await request.form()
                    self.gate.check_unsafe(request, identity, str(form.get("csrf_token", "")))
                if not allows(identity.principal.role, role):
                    raise HttpError(403, f"this needs the {role} role; you are "
                                         f"{identity.principal.role}")
                response = await page(request, identity)
            except HttpError as exc:
                response = HTMLResponse(error_page(exc.status, exc.message), exc.status)
            except Exception:  # noqa: BLE001 - logged; the page says 500
                log.exception("console page %s failed", request.url.path)
                response = HTMLResponse(error_page(500, "internal error; see the daemon's "
                                                        "log"), 500)
            if fresh is not None:
                self.gate.session_cookie(response, fresh)
            return response

        return endpoint

    def back(self, identity: Identity, to: str, kind: str = "", text: str = "") -> Response:
        if text and identity.session is not None:
            identity.session.flash.append((kind, text))
        return RedirectResponse(to, 303)

    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    def _page_no(self, request: Request) -> int:
        try:
            return max(1, min(100_000, int(request.query_params.get("page", "1"))))
        except ValueError:
            return 1

    # --- login ---

    async def login_form(self, request: Request) -> Response:
        return self._login_page("", 200)

    def _login_page(self, error: str, status: int) -> HTMLResponse:
        # The login form's own CSRF token: a cookie and a hidden field that must match.
        token = secrets.token_urlsafe(24)
        body = _env.get_template("login.html").render(
            csrf=token, identity=None, nav=(), flash=[], error=error,
            anonymous=self.gate.auth.anonymous)
        response = HTMLResponse(body, status_code=status)
        response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict",
                            secure=self.gate.secure_cookies, path="/login")
        return response

    async def login(self, request: Request) -> Response:
        form = await request.form()
        name = str(form.get("name", ""))[:64]
        password = str(form.get("password", ""))[:1024]
        if not secrets.compare_digest(str(form.get("csrf_token", "")).encode(),
                                      request.cookies.get(LOGIN_COOKIE, "").encode()) \
                or not request.cookies.get(LOGIN_COOKIE):
            return self._login_page("the form expired; try again", 403)
        peer = request.client.host if request.client else ""
        keys = (f"user:{name}", f"addr:{peer}")
        limiter = self.gate.auth.limiter
        wait = limiter.retry_after(*keys)
        if wait > 0:
            response = self._login_page(
                f"too many failed logins; try again in {int(wait) + 1} s", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        principal = await asyncio.to_thread(self.gate.auth.check_password, name, password)
        if principal is None:
            limiter.failed(*keys)
            log.warning("console login failed from %s", peer)
            self.ctx.audit.authentication(user=name, host=peer, login=True, success=False)
            return self._login_page("wrong name or password", 401)
        limiter.succeeded(f"user:{name}")
        session = self.gate.auth.open_session(principal)
        log.info("console login: %s (%s) from %s", principal.name, principal.role, peer)
        self.ctx.audit.authentication(user=principal.name, host=peer, login=True)
        done = RedirectResponse("/", 303)
        self.gate.session_cookie(done, session)
        done.delete_cookie(LOGIN_COOKIE, path="/login")
        return done

    async def logout(self, request: Request, identity: Identity) -> Response:
        if identity.session is not None:
            self.gate.auth.close_session(identity.session.id)
            self.ctx.audit.authentication(user=identity.principal.name, host=request.client.host
                                          if request.client else "", login=False)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    # --- pages ---

    async def dashboard(self, request: Request, identity: Identity) -> Response:
        data = await self.read(views.dashboard, self.store)
        return self.render(request, identity, "dashboard.html", d=data,
                           instances=await self.read(self.ctx.instances),
                           live=self.ctx.live())

    async def worklist(self, request: Request, identity: Identity) -> Response:
        form: FormData | dict[str, str] = (await request.form() if request.method == "POST"
                                           else {})
        fields = {k: str(form.get(k, "")).strip()[:64] for k in (
            "station", "modality", "date_from", "date_to", "status", "patient_id",
            "accession")}
        try:
            offset = max(0, int(str(form.get("offset", "0")) or 0))
        except ValueError:
            offset = 0
        error = ""
        try:
            search = api.WorklistSearch(limit=self.page_size, offset=offset, **fields)
        except ValidationError as exc:
            error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                              for e in exc.errors(include_url=False, include_input=False))
            search = api.WorklistSearch(limit=self.page_size)
        where = StepFilter(station=search.station, modality=search.modality,
                           status=search.status, patient_id=search.patient_id,
                           accession=search.accession, date_from=search.date_from,
                           date_to=search.date_to)
        page = await self.read(views.search_steps, self.store, where, search.limit,
                               search.offset)
        return self.render(request, identity, "worklist.html", page=page, f=fields,
                           error=error, statuses=("", "SCHEDULED", "STARTED", "HELD",
                                                  "COMPLETED", "DISCONTINUED", "CANCELED"))

    async def item(self, request: Request, identity: Identity) -> Response:
        step_id = int(request.path_params["id"])
        detail = await self.read(views.step_detail, self.store, step_id)
        if detail is None:
            raise HttpError(404, f"no worklist item {step_id}")
        return self.render(request, identity, "item.html", s=detail)

    async def item_action(self, request: Request, identity: Identity) -> Response:
        step_id = int(request.path_params["id"])
        form = await request.form()
        action = str(form.get("action", ""))
        reason = str(form.get("reason", ""))[:200]
        actor = actions.Actor(identity.principal.label, identity.principal.role,
                              request.client.host if request.client else "")
        to = f"/worklist/{step_id}"
        try:
            if action in actions.STATUS_ACTIONS:
                job = actions.status_job(step_id, action, actor, self.ctx.reporter, reason)
            elif action == "reschedule":
                body = api.Reschedule(date=str(form.get("date", "")),
                                      time=str(form.get("time", "")).replace(":", ""),
                                      station=str(form.get("station", "")), reason=reason)
                time = body.time if len(body.time) == 6 else body.time + "00"
                job = actions.reschedule_job(step_id, body.date, time, body.station, actor,
                                             self.ctx.reporter, reason)
            else:
                raise HttpError(400, f"unknown action {action!r}")
            result = await self.ctx.submit(job)
        except ValidationError as exc:
            return self.back(identity, to, "error", "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)))
        except ActionRefused as exc:
            return self.back(identity, to, "error", str(exc))
        if result.queued:
            self.ctx.notify()
        note = f"; {result.queued} status message(s) queued for the RIS" if result.queued \
            else ""
        return self.back(identity, to, "ok", result.message + note)

    async def new_item(self, request: Request, identity: Identity) -> Response:
        values: dict[str, str] = {}
        error = ""
        if request.method == "POST":
            form = await request.form()
            values = {k: str(form.get(k, "")).strip() for k in (
                "patient_id", "patient_name", "accession", "modality", "station", "date",
                "time", "procedure", "birth_date", "sex")}
            values["time"] = values["time"].replace(":", "")
            values["date"] = values["date"].replace("-", "")
            values["birth_date"] = values["birth_date"].replace("-", "")
            try:
                body = api.CreateItem.model_validate(values)
                new = actions.NewItem(
                    patient_id=body.patient_id, patient_name=body.patient_name,
                    accession=body.accession, modality=body.modality, station=body.station,
                    date=body.date, time=body.time if len(body.time) == 6 else body.time + "00",
                    procedure=body.procedure, birth_date=body.birth_date, sex=body.sex)
                actor = actions.Actor(identity.principal.label, identity.principal.role,
                                      request.client.host if request.client else "")
                result = await self.ctx.submit(actions.create_job(new, actor,
                                                                  self.ctx.reporter))
                if result.queued:
                    self.ctx.notify()
                return self.back(identity, f"/worklist/{result.id}", "ok", result.message)
            except ValidationError as exc:
                error = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                                  for e in exc.errors(include_url=False, include_input=False))
            except ActionRefused as exc:
                error = str(exc)
        return self.render(request, identity, "new_item.html", v=values, error=error,
                           status=422 if error else 200)

    async def messages(self, request: Request, identity: Identity) -> Response:
        outcome = request.query_params.get("outcome", "")
        if outcome not in ("", "accepted", "rejected", "flagged"):
            outcome = ""
        page_no = self._page_no(request)
        page = await self.read(views.search_messages, self.store,
                               MessageFilter(outcome=outcome), self.page_size,
                               (page_no - 1) * self.page_size)
        return self.render(request, identity, "messages.html", page=page, outcome=outcome,
                           page_no=page_no, page_size=self.page_size)

    async def message(self, request: Request, identity: Identity) -> Response:
        message_id = int(request.path_params["id"])
        detail = await self.read(views.message_detail, self.store, message_id)
        if detail is None:
            raise HttpError(404, f"no message {message_id}")
        return self.render(request, identity, "message.html", m=detail)

    async def message_replay(self, request: Request, identity: Identity) -> Response:
        message_id = int(request.path_params["id"])
        call = Call(request, identity, self.ctx, None)
        try:
            result = await api.replay(call, message_id)
        except HttpError as exc:
            return self.back(identity, f"/messages/{message_id}", "error", exc.message)
        kind = "ok" if result["ack_code"] == "AA" else "error"
        return self.back(identity, f"/messages/{message_id}", kind,
                         f"replayed as message {result['replayed_as']}: "
                         f"{result['ack_code']} {result['summary']}")

    async def outbox(self, request: Request, identity: Identity) -> Response:
        state = request.query_params.get("state", "")
        states = [state] if state in ("pending", "sent", "dead") else []
        page_no = self._page_no(request)
        page = await self.read(views.search_outbox, self.store, states, "", self.page_size,
                               (page_no - 1) * self.page_size)
        return self.render(request, identity, "outbox.html", page=page, state=state,
                           page_no=page_no, page_size=self.page_size)

    async def outbox_item(self, request: Request, identity: Identity) -> Response:
        outbox_id = int(request.path_params["id"])
        detail = await self.read(views.outbox_detail, self.store, outbox_id)
        if detail is None:
            raise HttpError(404, f"no outbox message {outbox_id}")
        return self.render(request, identity, "outbox_item.html", m=detail)

    async def outbox_retry(self, request: Request, identity: Identity) -> Response:
        outbox_id = int(request.path_params["id"])
        actor = actions.Actor(identity.principal.label, identity.principal.role,
                              request.client.host if request.client else "")
        try:
            result = await self.ctx.submit(actions.retry_job(outbox_id, actor))
        except ActionRefused as exc:
            return self.back(identity, f"/outbox/{outbox_id}", "error", str(exc))
        self.ctx.notify()
        return self.back(identity, f"/outbox/{outbox_id}", "ok", result.message)

    async def mpps(self, request: Request, identity: Identity) -> Response:
        page_no = self._page_no(request)
        page = await self.read(views.search_mpps, self.store, "", self.page_size,
                               (page_no - 1) * self.page_size)
        return self.render(request, identity, "mpps.html", page=page, page_no=page_no,
                           page_size=self.page_size)

    async def mpps_item(self, request: Request, identity: Identity) -> Response:
        mpps_id = int(request.path_params["id"])
        detail = await self.read(views.mpps_detail, self.store, mpps_id)
        if detail is None:
            raise HttpError(404, f"no MPPS instance {mpps_id}")
        return self.render(request, identity, "mpps_item.html", m=detail)

    async def mapping(self, request: Request, identity: Identity) -> Response:
        text = ""
        result: dict[str, Any] | None = None
        error = ""
        if request.method == "POST":
            form = await request.form()
            text = str(form.get("message", ""))[:1_000_000]
            try:
                result = views.explain_text(self.ctx.mappings(), text,
                                            charset=self.ctx.charset,
                                            aliases=dict(self.ctx.charset_aliases))
            except views.PasteError as exc:
                error = str(exc)
        return self.render(request, identity, "mapping.html", text=text, result=result,
                           error=error, active=views.mapping_order(self.ctx.mappings()))

    async def audit(self, request: Request, identity: Identity) -> Response:
        page_no = self._page_no(request)
        page = await self.read(views.search_audit, self.store, "", "", "", self.page_size,
                               (page_no - 1) * self.page_size)
        return self.render(request, identity, "audit.html", page=page, page_no=page_no,
                           page_size=self.page_size)

    async def atna(self, request: Request, identity: Identity) -> Response:
        """The ATNA audit trail's local copy (read-only; filters as ``audit list``)."""
        form: FormData | dict[str, str] = (await request.form() if request.method == "POST"
                                           else {})
        fields = {k: str(form.get(k, "")).strip()[:64] for k in atna.FILTERS}
        try:
            offset = max(0, int(str(form.get("offset", "0")) or 0))
        except ValueError:
            offset = 0
        error = "" if not fields["days"] or fields["days"].isdigit() else \
            "Days: a whole number of days"
        page = await self.read(atna.search, self.store, fields, self.page_size, offset)
        return self.render(request, identity, "atna.html", page=page, f=fields, error=error)

    async def atna_event(self, request: Request, identity: Identity) -> Response:
        event_id = int(request.path_params["id"])
        e = await self.read(atna.event, self.store, event_id)
        if e is None:
            raise HttpError(404, f"no audit event {event_id}")
        return self.render(request, identity, "atna_event.html", e=e)

    async def config(self, request: Request, identity: Identity) -> Response:
        return self.render(request, identity, "config.html",
                           config=views.redacted(self.ctx.config()))


def routes(gate: Gate, ctx: ConsoleContext) -> list[BaseRoute]:
    p = Pages(gate, ctx)
    g = p.guard
    return [
        Route("/login", p.login_form, methods=["GET"]),
        Route("/login", p.login, methods=["POST"]),
        Route("/logout", g("viewer", p.logout), methods=["POST"]),
        Route("/", g("viewer", p.dashboard), methods=["GET"]),
        Route("/worklist", g("viewer", p.worklist), methods=["GET", "POST"]),
        Route("/worklist/new", g("operator", p.new_item), methods=["GET", "POST"]),
        Route("/worklist/{id:rowid}", g("viewer", p.item), methods=["GET"]),
        Route("/worklist/{id:rowid}/action", g("operator", p.item_action), methods=["POST"]),
        Route("/messages", g("viewer", p.messages), methods=["GET"]),
        Route("/messages/{id:rowid}", g("viewer", p.message), methods=["GET"]),
        Route("/messages/{id:rowid}/replay", g("operator", p.message_replay),
              methods=["POST"]),
        Route("/outbox", g("viewer", p.outbox), methods=["GET"]),
        Route("/outbox/{id:rowid}", g("viewer", p.outbox_item), methods=["GET"]),
        Route("/outbox/{id:rowid}/retry", g("operator", p.outbox_retry), methods=["POST"]),
        Route("/mpps", g("viewer", p.mpps), methods=["GET"]),
        Route("/mpps/{id:rowid}", g("viewer", p.mpps_item), methods=["GET"]),
        Route("/mapping", g("viewer", p.mapping), methods=["GET", "POST"]),
        Route("/audit", g("admin", p.audit), methods=["GET"]),
        Route("/atna", g("admin", p.atna), methods=["GET", "POST"]),
        Route("/atna/{id:rowid}", g("admin", p.atna_event), methods=["GET"]),
        Route("/config", g("admin", p.config), methods=["GET"]),
    ]
