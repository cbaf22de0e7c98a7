"""SSLContexts for the DICOM and MLLP listeners and clients, from TlsSettings.

One builder for both protocols, so a site configures TLS once and the same
rules hold everywhere: TLS 1.2 or newer, on TLS 1.2 forward-secret AEAD suites only,
and (on the server side, by default) mutual TLS: a client must present a
certificate signed by a CA in ``ca_file``. Every problem is raised as a
TlsConfigError naming the setting and the file, at start-up, not on the first
connection.

``TlsSettings`` lives here, on the ground floor, so that every package's
settings section (``mllp``, ``dicom``, the outbound destinations) can use it
without importing another package; bridge.app.settings composes the sections.
"""

from __future__ import annotations

import logging
import ssl
import stat
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class TlsSettings(BaseModel):
    """TLS for one listener or client (``server_context``/``client_context`` build it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    cert_file: Path | None = Field(default=None, description="our PEM certificate (chain)")
    key_file: Path | None = Field(default=None, description="its PEM private key")
    ca_file: Path | None = Field(default=None, description="PEM CAs that sign peers' certs")
    # Server side: mutual TLS, a client without a certificate from ca_file is refused.
    require_peer_cert: bool = True
    # Client side: the server certificate must name the host we connect to.
    check_hostname: bool = True
    min_version: Literal["1.2", "1.3"] = "1.2"
    handshake_timeout_s: float = Field(default=10.0, gt=0)


log = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 30

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TlsConfigError(ValueError):
    """The TLS settings cannot make a working SSLContext."""


def server_context(tls: TlsSettings, section: str) -> ssl.SSLContext | None:
    """The context a listener wraps accepted sockets with; None when TLS is off.

    ``section`` (e.g. "dicom.tls") names the settings in error messages.
    """
    if not tls.enabled:
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise TlsConfigError(f"{section}: a TLS listener needs cert_file and key_file")
    if tls.require_peer_cert and tls.ca_file is None:
        raise TlsConfigError(
            f"{section}: require_peer_cert (mutual TLS) needs ca_file to verify clients")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(ctx, tls)
    _load_chain(ctx, tls.cert_file, tls.key_file, section)
    if tls.ca_file is not None:
        _load_cas(ctx, tls.ca_file, section)
    ctx.verify_mode = ssl.CERT_REQUIRED if tls.require_peer_cert else (
        ssl.CERT_OPTIONAL if tls.ca_file is not None else ssl.CERT_NONE)
    return ctx


def client_context(tls: TlsSettings, section: str) -> ssl.SSLContext | None:
    """The context an outgoing connection uses; None when TLS is off.

    The server is always verified: against ``ca_file`` when given, else the
    system's trust store. ``cert_file``/``key_file`` are sent for mutual TLS.
    """
    if not tls.enabled:
        return None
    if (tls.cert_file is None) != (tls.key_file is None):
        raise TlsConfigError(f"{section}: cert_file and key_file go together")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _common(ctx, tls)
    if tls.ca_file is not None:
        _load_cas(ctx, tls.ca_file, section)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if tls.cert_file is not None and tls.key_file is not None:
        _load_chain(ctx, tls.cert_file, tls.key_file, section)
    ctx.check_hostname = tls.check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# TLS 1.2 suites: forward-secret key exchange (ECDHE, DHE) with an AEAD cipher only (no
# CBC, no static RSA). TLS 1.3's suites are all of that kind and are not set here.
TLS12_CIPHERS = ("ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL:!eNULL:!aDSS:!PSK"
                 ":!SRP")


def _common(ctx: ssl.SSLContext, tls: TlsSettings) -> None:
    ctx.minimum_version = _VERSIONS[tls.min_version]
    ctx.set_ciphers(TLS12_CIPHERS)
    # No renegotiation, no compression: both are attack surface with no use here.
    ctx.options |= ssl.OP_NO_COMPRESSION
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        ctx.options |= ssl.OP_NO_RENEGOTIATION


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path, section: str) -> None:
    for name, path in (("cert_file", cert), ("key_file", key)):
        if not path.is_file():
            raise TlsConfigError(f"{section}.{name}: {path} is not a readable file")
    check_key_private(key, f"{section}.key_file")
    try:
        ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(
            f"{section}: cannot load cert_file {cert} with key_file {key}: "
            f"{exc.strerror or exc}") from None
    log_expiry(cert, section)


def certificate_expiry(cert: Path) -> float | None:
    """The first certificate's notAfter in ``cert`` as a Unix time (None if unknown)."""
    decode = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if decode is None:  # CPython's decoder; no other is at hand without a dependency
        return None
    try:
        return float(ssl.cert_time_to_seconds(decode(str(cert))["notAfter"]))
    except (ssl.SSLError, OSError, KeyError, ValueError):
        return None


def log_expiry(cert: Path, section: str, now: float | None = None) -> None:
    """INFO: when the certificate expires; WARNING within EXPIRY_WARNING_DAYS or after."""
    not_after = certificate_expiry(cert)
    if not_after is None:
        return
    days = (not_after - (time.time() if now is None else now)) / 86400
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(not_after))
    if days < 0:
        log.warning("%s: the certificate %s EXPIRED on %s; peers will refuse it: renew "
                    "cert_file", section, cert, when)
    elif days < EXPIRY_WARNING_DAYS:
        log.warning("%s: the certificate %s expires on %s, in %d day(s): renew cert_file",
                    section, cert, when, int(days))
    else:
        log.info("%s: certificate %s valid until %s (%d days)", section, cert, when, int(days))


def check_key_private(key: Path, setting: str) -> None:
    """Refuse a private key that other users may read, as OpenSSH does.

    Group read is allowed only for a key owned by root (Debian's ``ssl-cert`` group,
    PostgreSQL's rule); write or execute bits for others, or any bit for the world,
    never are.
    """
    st = key.stat()
    mode = stat.S_IMODE(st.st_mode)
    group_ok = st.st_uid == 0 and not mode & 0o037
    if mode & 0o077 and not group_ok:
        raise TlsConfigError(
            f"{setting}: the private key {key} is readable by other users "
            f"(mode {mode:04o}); fix: chmod 600 {key}")


def _load_cas(ctx: ssl.SSLContext, ca: Path, section: str) -> None:
    if not ca.is_file():
        raise TlsConfigError(f"{section}.ca_file: {ca} is not a readable file")
    try:
        ctx.load_verify_locations(cafile=ca)
    except (ssl.SSLError, OSError) as exc:
        raise TlsConfigError(f"{section}.ca_file: cannot load {ca}: {exc.strerror or exc}"
                             ) from None


def peer_subject(sock: object) -> str:
    """The common name of a TLS peer's certificate ('' when none), for logs."""
    getpeercert = getattr(sock, "getpeercert", None)
    if getpeercert is None:
        return ""
    cert = getpeercert()
    if not cert:
        return ""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def check_listeners(dicom: TlsSettings, mllp: TlsSettings) -> None:
    """Build both listeners' contexts once, so check-config reports what serve would."""
    server_context(dicom, "dicom.tls")
    server_context(mllp, "mllp.tls")
