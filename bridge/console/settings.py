"""The ``admin`` configuration section: the operator console (HTTP API and web UI).

Off by default: the console shows patient data and can cancel procedures, so a
site turns it on deliberately, after creating users (``mwl-bridge admin
hash-password``). When on, it binds to loopback unless ``host`` says otherwise.
docs/console.md describes every key.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bridge.section import Port, Section
from bridge.tls import TlsSettings

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _secret_from_file(data: object, field: str) -> object:
    """``<field>_file: PATH`` instead of ``<field>``: the first line of that file, so a
    secret can live in a file only the daemon's user reads (issue: secrets out of the
    config). The path must be absolute: it is read while the config is validated."""
    if not isinstance(data, dict) or f"{field}_file" not in data:
        return data
    data = dict(data)
    path = Path(str(data.pop(f"{field}_file")))
    if field in data:
        raise ValueError(f"set either {field} or {field}_file, not both")
    if not path.is_absolute():
        raise ValueError(f"{field}_file must be an absolute path")
    try:
        first = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{field}_file {path}: cannot read it ({exc.strerror})") from None
    if not first or not first[0].strip():
        raise ValueError(f"{field}_file {path} is empty")
    data[field] = first[0].strip()
    return data


class ConsoleUser(Section):
    """A local user: log in with name and password (the hash is argon2id)."""

    name: str = Field(pattern=_NAME)
    password_hash: str = Field(description="an argon2 hash: mwl-bridge admin hash-password")
    role: Role = "viewer"

    @model_validator(mode="before")
    @classmethod
    def _hash_file(cls, data: object) -> object:
        return _secret_from_file(data, "password_hash")

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("not an argon2 hash; make one with `mwl-bridge admin "
                             "hash-password`")
        return value


class ConsoleToken(Section):
    """An API token for scripts (``Authorization: Bearer TOKEN``); only its SHA-256 is kept."""

    name: str = Field(pattern=_NAME)
    token_sha256: str = Field(description="mwl-bridge admin new-token prints a token and this")
    role: Role = "viewer"

    @model_validator(mode="before")
    @classmethod
    def _digest_file(cls, data: object) -> object:
        return _secret_from_file(data, "token_sha256")

    @field_validator("token_sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        if not _SHA256.match(value):
            raise ValueError("64 lower-case hex digits (the SHA-256 of the token)")
        return value


class AdminSettings(Section):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Port = 8080
    tls: TlsSettings = TlsSettings(require_peer_cert=False)
    users: list[ConsoleUser] = Field(default_factory=list)
    tokens: list[ConsoleToken] = Field(default_factory=list)
    # With no user and no token the console refuses to start, unless it listens on
    # loopback only and this is on: then whoever can reach it is an admin.
    allow_anonymous_loopback: bool = False
    session_idle_minutes: float = Field(default=30.0, gt=0)  # log out after this long idle
    session_max_hours: float = Field(default=12.0, gt=0)  # log in again after this long
    login_max_failures: int = Field(default=5, ge=1)  # per user name and per address ...
    login_window_s: float = Field(default=300.0, gt=0)  # ... in this window; then 429
    page_size: int = Field(default=50, ge=1, le=1000)  # rows per page in the UI
    access_log: bool = True  # one INFO line per request: method, path, status, user, ms

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("an address to listen on, e.g. 127.0.0.1")
        return value

    @model_validator(mode="after")
    def _unique(self) -> AdminSettings:
        for what, names in (("users", [u.name for u in self.users]),
                            ("tokens", [t.name for t in self.tokens])):
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"{what}: names must be unique: {', '.join(twice)}")
        return self

    @property
    def anonymous(self) -> bool:
        return not self.users and not self.tokens


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
