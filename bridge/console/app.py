"""The console's Starlette application: the API (api.py), the pages (ui.py), the
static files (no CDN, no build step), and the plain endpoints the application
layer hands in (e.g. /metrics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles

from bridge.console import ui
from bridge.console.actions import ActionRefused
from bridge.console.api import ENDPOINTS
from bridge.console.auth import Authenticator, allows
from bridge.console.context import ConsoleContext, PlainAnswer
from bridge.console.openapi import document
from bridge.console.web import (
    MAX_BODY,
    Call,
    Endpoint,
    Gate,
    HttpError,
    SecurityHeaders,
    error_json,
    json_body,
)

log = logging.getLogger("bridge.console")
STATIC = Path(__file__).parent / "static"


def _api_route(ep: Endpoint, gate: Gate, ctx: ConsoleContext) -> Route:
    async def endpoint(request: Request) -> Response:
        try:
            identity = gate.identify(request)
            if identity is None:
                raise HttpError(401, "log in at /login, or send Authorization: Bearer TOKEN",
                                {"WWW-Authenticate": "Bearer"})
            gate.check_unsafe(request, identity)
            if ep.role is not None and not allows(identity.principal.role, ep.role):
                raise HttpError(403, f"this needs the {ep.role} role; "
                                     f"{identity.principal.label} is {identity.principal.role}")
            body = await json_body(request, ep.body) if ep.body is not None else None
            result = await ep.handler(Call(request, identity, ctx, body))
            return JSONResponse(result, status_code=ep.ok)
        except HttpError as exc:
            return error_json(exc.status, exc.message, exc.headers)
        except ActionRefused as exc:
            return error_json(exc.status, str(exc))
        except Exception:  # one line for the client; the details in the daemon's log
            log.exception("console API %s %s failed", ep.method, ep.path)
            return error_json(500, "internal error; see the daemon's log")

    return Route(ep.path, endpoint, methods=[ep.method])


def _plain_route(path: str, fn: Any) -> Route:
    async def endpoint(request: Request) -> Response:
        answer: PlainAnswer = await fn()
        return Response(answer.body, status_code=answer.status,
                        media_type=answer.content_type)

    return Route(path, endpoint, methods=["GET"])


def build_app(ctx: ConsoleContext, *, secure_cookies: bool = False) -> Starlette:
    auth = Authenticator(ctx.settings)
    gate = Gate(ctx, auth, secure_cookies=secure_cookies)
    spec = document()

    async def openapi(request: Request) -> Response:
        return JSONResponse(spec)

    routes: list[BaseRoute] = [
        Route("/api/openapi.json", openapi, methods=["GET"]),
        *(_api_route(ep, gate, ctx) for ep in ENDPOINTS),
        *(_plain_route(path, fn) for path, fn in ctx.plain.items()),
        *ui.routes(gate, ctx),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        if request.url.path.startswith("/api/"):
            return error_json(status, str(detail))
        return HTMLResponse(ui.error_page(status, str(detail)), status_code=status)

    app = Starlette(
        middleware=[Middleware(SecurityHeaders, log_requests=ctx.settings.access_log)],
        exception_handlers={HTTPException: http_error},
    )
    # The body limit on the router, inside SecurityHeaders (which turns its plain-text
    # 413 into the API's JSON error), not on the application, outside every middleware.
    app.router = Router(routes=routes, max_body_size=MAX_BODY)
    return app
