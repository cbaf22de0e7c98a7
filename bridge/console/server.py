"""The console's HTTP server: uvicorn's ``Server`` on the daemon's own event loop.

The socket is bound here (so a port conflict is an OSError at start, which the
application layer turns into its StartupError), TLS comes from bridge.tls like
the other listeners, and uvicorn's own signal handling, logging set-up and
lifespan are left out: the daemon owns the loop, the signals and the logs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

import uvicorn

from bridge.console.app import build_app
from bridge.console.context import ConsoleContext
from bridge.console.settings import is_loopback

log = logging.getLogger("bridge.console")


class ConsoleRefused(Exception):
    """The console may not start as configured (no users, not loopback-only)."""


def check_start(ctx: ConsoleContext) -> None:
    s = ctx.settings
    if s.anonymous:
        if not s.allow_anonymous_loopback:
            raise ConsoleRefused(
                "the console has no users: add admin.users (mwl-bridge admin hash-password) "
                "or admin.tokens, or set admin.allow_anonymous_loopback on a loopback host")
        if not is_loopback(s.host):
            raise ConsoleRefused(
                f"the console has no users and admin.host is {s.host}, not loopback: "
                "admin.allow_anonymous_loopback only works on 127.0.0.1 or ::1")


class ConsoleServer:
    def __init__(self, ctx: ConsoleContext, ssl_context: ssl.SSLContext | None) -> None:
        check_start(ctx)
        self.ctx = ctx
        self.ssl = ssl_context
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @property
    def url(self) -> str:
        host = self.ctx.settings.host
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self.ssl else 'http'}://{shown}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; raises OSError when the address cannot be bound."""
        s = self.ctx.settings
        app = build_app(self.ctx, secure_cookies=self.ssl is not None)
        config = uvicorn.Config(app, host=s.host, port=s.port, lifespan="off",
                                log_config=None, access_log=False, server_header=False,
                                proxy_headers=False, http="h11", ws="none",
                                timeout_graceful_shutdown=5, timeout_keep_alive=5)
        config.load()
        config.ssl = self.ssl
        # uvicorn's own lines: its access log is off (ours, in web.py, keeps no query
        # string and no patient data), its records go to the daemon's handler (text or
        # JSON, logging.format), and its start-up INFO lines repeat the daemon's ready
        # line: only its warnings and errors are kept.
        logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING,
                                                        logging.getLogger().level))
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        sock = _bind(s.host, s.port)
        try:
            await server.startup(sockets=[sock])
        except BaseException:
            sock.close()
            raise
        self._server, self._sock = server, sock
        self.port = int(sock.getsockname()[1])
        self._task = asyncio.create_task(server.main_loop(), name="console")

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        await self._server.shutdown(sockets=[self._sock] if self._sock else None)
        self._server = None
        self._task = None


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
