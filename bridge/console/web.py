"""The console's HTTP plumbing: who a request is (session cookie, API token, or the
anonymous loopback admin), the CSRF and origin checks on unsafe requests, JSON
errors in one shape, security headers, and an access log without patient data.

An unsafe request (anything but GET/HEAD/OPTIONS) made with a session cookie
must carry the session's CSRF token (header ``X-CSRF-Token`` or form field
``csrf_token``); one made with an API token needs none (a browser never adds
an ``Authorization`` header by itself). With ``allow_anonymous_loopback`` and no
session, unsafe requests must be JSON (a cross-site form cannot send that
without a CORS preflight, which the console never answers), and the Host
header must be a loopback name (against DNS rebinding).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.console.actions import Actor
from bridge.console.auth import Authenticator, Principal, Session, same_secret
from bridge.console.context import ConsoleContext
from bridge.console.settings import Role

log = logging.getLogger("bridge.console")
access_log = logging.getLogger("bridge.console.access")

SESSION_COOKIE = "mwl_session"
LOGIN_COOKIE = "mwl_login"
CSRF_HEADER = "x-csrf-token"
MAX_BODY = 4 * 1024 * 1024  # request bodies (a pasted message, a form)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class RowId(Convertor[int]):
    """``{id:rowid}``: a row id in a path, 1 to 18 digits (Starlette's ``int`` takes any
    length, and a 20-digit id overflows the database's integer: a 500, not a 404)."""

    regex = "[0-9]{1,18}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("rowid", RowId())
MAX_ROW_ID = 10**18 - 1


class HttpError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_json(status: int, message: str, headers: dict[str, str] | None = None
               ) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status,
                        headers=headers)


@dataclass(frozen=True, slots=True)
class Identity:
    principal: Principal
    session: Session | None  # None: an API token, or anonymous without a cookie


class Gate:
    """Identifies requests and checks them; one per console."""

    def __init__(self, ctx: ConsoleContext, auth: Authenticator, *, secure_cookies: bool
                 ) -> None:
        self.ctx = ctx
        self.auth = auth
        self.secure_cookies = secure_cookies

    def identify(self, request: Request) -> Identity | None:
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise HttpError(401, "use Authorization: Bearer TOKEN",
                                {"WWW-Authenticate": "Bearer"})
            principal = self.auth.check_token(token.strip())
            if principal is None:
                raise HttpError(401, "unknown API token", {"WWW-Authenticate": "Bearer"})
            return Identity(principal, None)
        sid = request.cookies.get(SESSION_COOKIE, "")
        session = self.auth.session(sid) if sid else None
        if session is not None:
            return Identity(session.principal, session)
        if self.auth.anonymous:
            self._loopback_host(request)
            return Identity(Principal("loopback", "admin", "anonymous"), None)
        return None

    def _loopback_host(self, request: Request) -> None:
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if name not in _LOOPBACK_NAMES:
            raise HttpError(403, "without users the console answers loopback names only "
                                 "(127.0.0.1, localhost)")

    def check_unsafe(self, request: Request, identity: Identity, form_token: str = "") -> None:
        """CSRF and origin checks for a request that changes something."""
        if request.method in SAFE_METHODS:
            return
        origin = request.headers.get("origin")
        if origin and origin != "null":
            if urlsplit(origin).netloc != request.headers.get("host", ""):
                raise HttpError(403, "cross-origin request refused")
        elif origin == "null":
            raise HttpError(403, "cross-origin request refused")
        if identity.principal.kind == "token":
            return
        if identity.session is not None:
            sent = request.headers.get(CSRF_HEADER, "") or form_token
            if not same_secret(sent, identity.session.csrf):
                raise HttpError(403, "missing or wrong CSRF token (reload the page)")
            return
        # anonymous, no session: only JSON (no cross-site form can send it)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HttpError(403, "without a session, send the request as application/json")

    def session_cookie(self, response: Response, session: Session) -> None:
        response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="strict",
                            secure=self.secure_cookies, path="/")


def actor_of(request: Request, identity: Identity) -> Actor:
    peer = request.client.host if request.client else ""
    return Actor(identity.principal.label, identity.principal.role, peer)


@dataclass
class Call:
    """One API request, identified and checked, with its validated body."""

    request: Request
    identity: Identity
    ctx: ConsoleContext
    body: Any

    @property
    def actor(self) -> Actor:
        return actor_of(self.request, self.identity)

    def path_id(self, name: str = "id") -> int:
        value = self.request.path_params[name]
        if not isinstance(value, int):
            raise HttpError(404, "not found")
        return value


Handler = Callable[[Call], Awaitable[Any]]


@dataclass(frozen=True)
class Endpoint:
    """One API operation: the route, the OpenAPI entry and the role it needs."""

    method: str
    path: str  # Starlette syntax: /api/worklist/{id:rowid}
    role: Role | None  # None: public
    summary: str
    handler: Handler
    tag: str
    body: type[BaseModel] | None = None
    ok: int = 200
    response: str = ""  # the name of a schema in openapi.SCHEMAS, "" = any object
    description: str = ""


async def json_body(request: Request, model: type[BaseModel]) -> BaseModel:
    ctype = request.headers.get("content-type", "").split(";")[0].strip()
    if ctype != "application/json":
        raise HttpError(415, "send the request body as application/json")
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=False):
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise HttpError(422, "; ".join(problems)) from None


class SecurityHeaders:
    """Headers on every response, and one access log line per request: method, path
    (never the query string), status, who, milliseconds. Paths hold only opaque ids."""

    def __init__(self, app: ASGIApp, *, log_requests: bool) -> None:
        self.app = app
        self.log_requests = log_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        as_json = b""  # the body of an API error that Starlette answered in plain text

        async def send_with_headers(message: Message) -> None:
            nonlocal status, as_json
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                if (status == 413 and str(scope.get("path", "")).startswith("/api/")
                        and dict(headers).get(b"content-type", b"").startswith(b"text/")):
                    # The router's body limit (app.py) answers before any handler:
                    # the API keeps its one error shape.
                    as_json = json.dumps({"error": {"status": 413, "message": (
                        f"the request body is larger than {MAX_BODY // 2**20} MiB")}}
                                         ).encode()
                    headers = [(k, v) for k, v in headers
                               if k.lower() not in (b"content-type", b"content-length")]
                    headers += [(b"content-type", b"application/json"),
                                (b"content-length", str(len(as_json)).encode())]
                for k, v in _HEADERS:
                    if k not in names:
                        headers.append((k, v))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and as_json:
                message = {"type": "http.response.body", "body": as_json, "more_body": False}
                as_json = b""
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            if self.log_requests:
                client = scope.get("client") or ("-", 0)
                path = logged_path(scope, status)
                ms = round((time.perf_counter() - started) * 1000, 1)
                # The same facts as fields, for logging.format json (bridge/app/logs.py).
                access_log.info("%s %s %s %d %.1f ms", client[0], scope["method"], path,
                                status, ms, extra={"peer": client[0],
                                                   "method": scope["method"], "path": path,
                                                   "status": status, "ms": ms})


def logged_path(scope: Scope, status: int) -> str:
    """The path as the access log shows it: the console's own paths hold only opaque
    row ids (patient data goes in POST bodies, never in a URL, and the query string
    is never logged), but a path that matched no route, or named no row, is whatever
    the client typed, which may be a Patient ID: only its first segment is kept."""
    path = str(scope.get("path", ""))
    route = scope.get("route")
    # A route's own parameters are integers ({id:int}); a Mount (static files) is not.
    if route is not None and (not isinstance(route, Mount) or status < 400):
        return path
    first = path.lstrip("/").split("/", 1)[0]
    if first not in _FIRST_SEGMENTS:
        return "/..."
    return f"/{first}/..." if "/" in path.lstrip("/") else f"/{first}"


# The first path segments of the console's routes (ui.py, api.py, the plain endpoints).
_FIRST_SEGMENTS = frozenset({"api", "static", "login", "logout", "worklist", "messages",
                             "outbox", "mpps", "mapping", "audit", "config", "metrics",
                             "healthz", "readyz"})


_HEADERS = [(k.encode(), v.encode()) for k, v in (
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; "
     "style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
     "form-action 'self'; frame-ancestors 'none'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    # same-origin: with no-referrer, browsers send "Origin: null" on form posts
    ("referrer-policy", "same-origin"),
    ("cache-control", "no-store"),
)]
