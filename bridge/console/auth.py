"""Who is asking, and may they: passwords (argon2), API tokens, sessions, CSRF tokens,
the failed-login limit, and the three roles.

Sessions live in memory: a restart of the daemon logs everyone out. A session
cookie is an opaque random value (never the user name); the CSRF token is a
second random value kept in the session, which forms and the page's JavaScript
send back on every unsafe request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bridge.console.settings import ROLES, AdminSettings, Role

_RANK = {role: i for i, role in enumerate(ROLES)}
# Verifying against this hash when the user does not exist costs the same time as
# a wrong password: the answer's timing does not tell which user names exist.
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    """An argon2id hash (the library's current defaults) for ``admin.users[].password_hash``."""
    return _hasher.hash(password)


def new_token() -> tuple[str, str]:
    """A new API token and its SHA-256 (the config keeps only the hash)."""
    token = "mwl_" + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def allows(role: Role, needed: Role) -> bool:
    return _RANK[role] >= _RANK[needed]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts for: a user, a token, or the anonymous loopback admin."""

    name: str
    role: Role
    kind: str  # "user", "token" or "anonymous"

    @property
    def label(self) -> str:
        return self.name if self.kind == "user" else f"{self.kind}:{self.name}"


@dataclass(slots=True)
class Session:
    id: str
    principal: Principal
    csrf: str
    created: float
    seen: float
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) for the next page


@dataclass
class LoginLimiter:
    """At most ``max_failures`` failed logins per user name per window, and four times
    as many per client address (several people may share one workstation or NAT)."""

    max_failures: int
    window_s: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _limit(self, key: str) -> int:
        return self.max_failures * (4 if key.startswith("addr:") else 1)

    def retry_after(self, *keys: str) -> float:
        """Seconds until a login for these keys may be tried again; 0: now."""
        now = self.clock()
        wait = 0.0
        with self._lock:
            for key in keys:
                times = self._prune(key, now)
                limit = self._limit(key)
                if len(times) >= limit:
                    wait = max(wait, times[-limit] + self.window_s - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                self._prune(key, now).append(now)

    def succeeded(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def _prune(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(self._failures) > 10_000:  # a flood of made-up names: forget the idle ones
            for k in [k for k, v in self._failures.items() if not v and k != key]:
                del self._failures[k]
        return times


class Authenticator:
    """Checks passwords and tokens, and keeps the sessions."""

    def __init__(self, settings: AdminSettings, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.settings = settings
        self._users = {u.name: u for u in settings.users}
        self._tokens = {t.token_sha256: t for t in settings.tokens}
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.limiter = LoginLimiter(settings.login_max_failures, settings.login_window_s,
                                    clock)

    @property
    def anonymous(self) -> bool:
        return self.settings.anonymous

    def check_password(self, name: str, password: str) -> Principal | None:
        """The user, if the password is theirs. Blocking (argon2): run it in a thread."""
        user = self._users.get(name)
        try:
            _hasher.verify(user.password_hash if user else _DUMMY_HASH, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if user is None:
            return None
        return Principal(user.name, user.role, "user")

    def check_token(self, token: str) -> Principal | None:
        digest = token_digest(token)
        for known, entry in self._tokens.items():
            if hmac.compare_digest(known, digest):
                return Principal(entry.name, entry.role, "token")
        return None

    def open_session(self, principal: Principal) -> Session:
        now = self._clock()
        session = Session(secrets.token_urlsafe(32), principal, secrets.token_urlsafe(32),
                          now, now)
        with self._lock:
            self._expire(now)
            self._sessions[session.id] = session
        return session

    def session(self, session_id: str) -> Session | None:
        now = self._clock()
        with self._lock:
            s = self._sessions.get(session_id)
            if s is None:
                return None
            if (now - s.seen > self.settings.session_idle_minutes * 60
                    or now - s.created > self.settings.session_max_hours * 3600):
                del self._sessions[session_id]
                return None
            s.seen = now
            return s

    def close_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    def _expire(self, now: float) -> None:
        idle = self.settings.session_idle_minutes * 60
        for sid in [sid for sid, s in self._sessions.items() if now - s.seen > idle]:
            del self._sessions[sid]


def same_secret(a: str, b: str) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())
