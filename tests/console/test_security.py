"""The console's security, over real HTTP against the running daemon: each role is
refused what it may not do (403), CSRF and origin checks, the failed-login limit,
cookie flags, no patient data in the access log, loopback only by default, and the
refusal to start without users."""

from __future__ import annotations

import re
import socket
import subprocess
import sys

import httpx
import pytest

from bridge.app.settings import load_settings
from tests.e2e.conftest import FIXTURES, REPO, start_daemon, stop_daemon, write_config

from .conftest import PASSWORDS, Console, console_url

VIEWER_REFUSED = [("POST", "/api/worklist/1/cancel", {}), ("POST", "/api/worklist/1/hold", {}),
                  ("POST", "/api/worklist/1/release", {}),
                  ("POST", "/api/worklist/1/reschedule", {"date": "20261128", "time": "1000"}),
                  ("POST", "/api/messages/1/replay", None), ("POST", "/api/outbox/1/retry", None),
                  ("POST", "/api/worklist", {"patient_id": "X", "patient_name": "X^Y",
                                             "accession": "A1", "modality": "CT",
                                             "station": "CT01", "date": "20261128",
                                             "time": "1000"})]
OPERATOR_REFUSED = [("GET", "/api/config", None), ("POST", "/api/audit/search", {})]


def _call(client: httpx.Client, method: str, path: str, body: object,
          headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return client.request(method, path, headers=headers)
    return client.request(method, path, json=body, headers=headers)


def test_each_role_is_refused_what_it_may_not_do(console: Console):
    console.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    for role, refused in (("viewer", VIEWER_REFUSED + OPERATOR_REFUSED),
                          ("operator", OPERATOR_REFUSED)):
        client = console.client(role)
        for method, path, body in refused:
            res = _call(client, method, path, body)
            assert res.status_code == 403, (role, path, res.text)
            assert f"is {role}" in res.json()["error"]["message"]
    # ... and a user logged in with the same role is refused the same way in the UI.
    vera, csrf = console.login("vera")
    res = vera.post("/worklist/1/action", data={"action": "cancel", "csrf_token": csrf})
    assert res.status_code == 403
    assert vera.get("/audit").status_code == 403
    assert console.client("viewer").get("/api/worklist/1").json()["status"] == "SCHEDULED"
    admin = console.client("admin")
    assert admin.get("/api/config").status_code == 200
    assert admin.post("/api/audit/search", json={}).status_code == 200


def test_without_credentials_nothing_but_the_public_endpoints(console: Console):
    anon = console.client()
    assert anon.post("/api/worklist/search", json={}).status_code == 401
    assert anon.get("/api/worklist/1").status_code == 401
    bad = anon.get("/api/session", headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401
    page = anon.get("/worklist")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    for public in ("/healthz", "/readyz", "/metrics", "/api/openapi.json", "/login"):
        assert anon.get(public).status_code == 200, public
    assert "DOE" not in anon.get("/metrics").text


def test_csrf_tokens_and_origins_are_checked(console: Console):
    console.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    oscar, csrf = console.login("oscar")
    # API with the session cookie: no token, a wrong one, a foreign origin -> 403
    assert oscar.post("/api/worklist/1/hold", json={}).status_code == 403
    assert oscar.post("/api/worklist/1/hold", json={},
                      headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert oscar.post("/api/worklist/1/hold", json={},
                      headers={"X-CSRF-Token": csrf,
                               "Origin": "https://evil.example"}).status_code == 403
    # the UI's forms
    assert oscar.post("/worklist/1/action", data={"action": "hold"}).status_code == 403
    assert oscar.post("/worklist/1/action",
                      data={"action": "hold", "csrf_token": "forged"}).status_code == 403
    assert console.client("viewer").get("/api/worklist/1").json()["status"] == "SCHEDULED"
    ok = oscar.post("/api/worklist/1/hold", json={}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200, ok.text
    ok = oscar.post("/worklist/1/action", data={"action": "release", "csrf_token": csrf})
    assert ok.status_code == 303
    # the login form has its own token
    fresh = console.client()
    assert fresh.post("/login", data={"name": "oscar", "password": PASSWORDS["oscar"]}
                      ).status_code == 403


def test_session_cookie_flags_and_logout(console: Console):
    c = console.client()
    page = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
    res = c.post("/login", data={"name": "alice", "password": PASSWORDS["alice"],
                                 "csrf_token": token})
    cookie = next(v for k, v in res.headers.multi_items()
                  if k == "set-cookie" and v.startswith("mwl_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "alice" not in cookie
    headers = c.get("/").headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    csrf = c.get("/api/session").json()["csrf_token"]
    assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    assert c.get("/api/session").status_code == 401


def test_failed_logins_are_rate_limited(console: Console):
    c = console.client()

    def attempt(password: str) -> httpx.Response:
        page = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
        return c.post("/login", data={"name": "vera", "password": password,
                                      "csrf_token": token})

    for _ in range(3):  # login_max_failures: 3 in the tests' config
        assert attempt("wrong").status_code == 401
    locked = attempt(PASSWORDS["vera"])  # even the right password, for now
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert "too many failed logins" in locked.text
    # Another user from the same address is not locked out by vera's failures ...
    assert console.login("oscar")
    # ... until the address itself has failed four times as often (12 here).
    for name in ("nobody1", "nobody2", "nobody3"):
        for _ in range(3):
            page = c.get("/login")
            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
            c.post("/login", data={"name": name, "password": "wrong", "csrf_token": token})
    page = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
    res = c.post("/login", data={"name": "alice", "password": PASSWORDS["alice"],
                                 "csrf_token": token})
    assert res.status_code == 429


def test_no_patient_data_in_the_access_log(console: Console):
    console.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
    alice, csrf = console.login("alice")
    alice.post("/worklist", data={"patient_id": "PAT10001", "accession": "ACC20261128001",
                                  "csrf_token": csrf})
    alice.post("/api/worklist/search", json={"patient_id": "PAT10001"},
               headers={"X-CSRF-Token": csrf})
    alice.get("/worklist/1")
    alice.get("/messages/1")
    log = "\n".join(console.daemon.log)
    assert "bridge.console.access" in log and "POST /worklist 200" in log
    for phi in ("PAT10001", "DOE", "ACC20261128001"):
        assert phi not in log


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent for UDP connect
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_console_is_off_and_loopback_only_by_default(console: Console):
    defaults = load_settings(None, {})
    assert defaults.admin.enabled is False
    assert (defaults.admin.host, defaults.admin.port) == ("127.0.0.1", 8080)
    port = int(console.url.rsplit(":", 1)[1])
    assert console.url.startswith("http://127.0.0.1:")
    address = _non_loopback_address()
    assert address is not None, "this machine has no non-loopback address to try"
    with pytest.raises(OSError):
        socket.create_connection((address, port), timeout=3).close()


def _serve(tmp_path, text: str) -> subprocess.CompletedProcess[str]:
    cfg = write_config(tmp_path, text)
    return subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "serve"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)


def test_without_users_the_console_refuses_to_start(tmp_path):
    res = _serve(tmp_path, "admin:\n  enabled: true\n  port: 0\n")
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.startswith("cannot start")]
    assert lines == ["cannot start: the console has no users: add admin.users (mwl-bridge "
                     "admin hash-password) or admin.tokens, or set "
                     "admin.allow_anonymous_loopback on a loopback host"]
    res = _serve(tmp_path, "admin:\n  enabled: true\n  port: 0\n  host: 0.0.0.0\n"
                           "  allow_anonymous_loopback: true\n")
    assert res.returncode == 2 and "not loopback" in res.stderr


def test_anonymous_loopback_console_is_admin_but_still_checks_csrf(tmp_path):
    d = start_daemon(write_config(tmp_path, "admin:\n  enabled: true\n  port: 0\n"
                                            "  allow_anonymous_loopback: true\n"),
                     tmp_path / "data")
    try:
        url = console_url(d)
        d.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        c = httpx.Client(base_url=url)
        assert c.get("/api/session").json()["role"] == "admin"
        assert c.post("/api/worklist/1/hold", json={}).status_code == 200  # JSON: allowed
        form = c.post("/api/worklist/1/release", data={"reason": "x"})
        assert form.status_code == 403  # a cross-site form can't send JSON; refused
        rebound = c.get("/api/session", headers={"Host": f"evil.example:{url[-5:]}"})
        assert rebound.status_code == 403  # DNS rebinding
    finally:
        assert stop_daemon(d) == 0


def test_a_busy_port_stops_start_up_with_the_setting_to_change(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = _serve(tmp_path, f"admin:\n  enabled: true\n  port: {port}\n"
                               "  allow_anonymous_loopback: true\n")
    assert res.returncode == 2
    assert (f"cannot start: the operator console cannot listen on 127.0.0.1:{port}: "
            "Address already in use; change admin.port (or admin.host)") in res.stderr


def test_access_log_is_json_friendly_and_drops_unknown_paths(tmp_path):
    """logging.format json: each request is one object with stable fields; a path that
    names no row or route (which a client could fill with a Patient ID) is cut to its
    first segment, and uvicorn's own access log stays off."""
    import json

    from .conftest import start_console

    c = start_console(tmp_path, "logging:\n  format: json\n")
    try:
        c.daemon.send(FIXTURES / "orm-o01-ihe-ct.hl7")
        api = c.client("viewer")
        assert api.get("/api/worklist/PAT10001").status_code == 404
        assert api.get("/static/PAT10001.css").status_code == 404
        assert api.get("/PAT10001/DOE").status_code == 404
        assert api.get("/api/worklist/1?patient=PAT10001").status_code == 200
        assert api.post("/api/worklist/search", json={"patient_id": "PAT10001"}
                        ).status_code == 200
    finally:
        assert stop_daemon(c.daemon) == 0
    records = [json.loads(line) for line in c.daemon.log]
    access = [r for r in records if r["logger"] == "bridge.console.access"]
    assert {"peer", "method", "path", "status", "ms"} <= access[0].keys(), access[0]
    paths = {(r["method"], r["path"], r["status"]) for r in access}
    assert ("GET", "/api/...", 404) in paths and ("GET", "/static/...", 404) in paths
    assert ("GET", "/...", 404) in paths  # not a segment of the console's: nothing kept
    assert ("GET", "/api/worklist/1", 200) in paths
    assert ("POST", "/api/worklist/search", 200) in paths
    assert not [r for r in records if r["logger"].startswith("uvicorn.access")]
    assert not any("color_message" in r for r in records)
    text = "\n".join(line for line in c.daemon.log if "bridge.console.access" in line)
    for phi in ("DOE", "patient=", "PAT10001"):
        assert phi not in text
