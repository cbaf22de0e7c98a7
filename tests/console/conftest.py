"""The operator console as a user meets it: the daemon as a subprocess (as in
tests/e2e), the console on a free loopback port, users and API tokens per role."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest

from bridge.console.auth import hash_password, token_digest
from tests.e2e.conftest import RunningDaemon, start_daemon, stop_daemon, write_config

CONSOLE = re.compile(r'ready: MLLP on .*, console on (https?://[^\s,"]+)')
PASSWORDS = {"alice": "alice-secret-1", "oscar": "oscar-secret-1", "vera": "vera-secret-1"}
ROLES = {"alice": "admin", "oscar": "operator", "vera": "viewer"}
TOKENS = {"admin": "mwl_test-admin-token", "operator": "mwl_test-operator-token",
          "viewer": "mwl_test-viewer-token"}


@cache
def _hashes() -> dict[str, str]:
    return {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def admin_config(extra: str = "", *, max_failures: int = 3) -> str:
    users = "".join(f"    - {{name: {n}, password_hash: '{h}', role: {ROLES[n]}}}\n"
                    for n, h in _hashes().items())
    tokens = "".join(f"    - {{name: {role}-script, token_sha256: {token_digest(t)}, "
                     f"role: {role}}}\n" for role, t in TOKENS.items())
    return ("admin:\n  enabled: true\n  host: 127.0.0.1\n  port: 0\n"
            f"  login_max_failures: {max_failures}\n  login_window_s: 60\n"
            f"  users:\n{users}  tokens:\n{tokens}" + extra)


@dataclass
class Console:
    daemon: RunningDaemon
    url: str

    def client(self, role: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[role]}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30,
                            follow_redirects=False)

    def login(self, name: str, password: str | None = None) -> tuple[httpx.Client, str]:
        """A client with a session cookie, and the session's CSRF token."""
        c = self.client()
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert token, page.text
        res = c.post("/login", data={"name": name, "password": password or PASSWORDS[name],
                                     "csrf_token": token[1]})
        assert res.status_code == 303, res.text
        csrf = c.get("/api/session").json()["csrf_token"]
        return c, csrf


def console_url(d: RunningDaemon) -> str:
    for line in d.log:
        m = CONSOLE.search(line)
        if m:
            return m[1]
    raise AssertionError("no console address in the ready line:\n" + "\n".join(d.log))


def start_console(tmp: Path, extra: str = "", **kw: int) -> Console:
    d = start_daemon(write_config(tmp, admin_config(extra, **kw)), tmp / "data")
    return Console(d, console_url(d))


@pytest.fixture
def console(tmp_path) -> Iterator[Console]:
    c = start_console(tmp_path)
    yield c
    code = stop_daemon(c.daemon)
    assert code == 0, "daemon did not stop cleanly:\n" + "\n".join(c.daemon.log[-30:])
