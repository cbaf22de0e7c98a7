"""Audit messages as syslog: RFC 5424 framing, sent over TLS (RFC 5425, octet-counted
frames) or UDP (RFC 5426, one datagram per message), as IHE ATNA's Record Audit Event
transaction (ITI-20) prescribes.

Blocking sockets with timeouts: only the audit delivery thread calls these.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from datetime import UTC, datetime
from typing import Protocol

log = logging.getLogger(__name__)

# PRI: facility 10 (security/authorization, "authpriv"), severity 5 (notice).
PRI = 10 * 8 + 5
MSGID = "IHE+RFC-3881"  # what IHE ITI-20 puts in MSGID for DICOM audit messages
BOM = b"\xef\xbb\xbf"  # RFC 5424: a UTF-8 MSG starts with the BOM
# RFC 5426 (IPv4): a datagram should stay within 65,507 bytes of payload.
MAX_DATAGRAM = 65507


def _field(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, or the NILVALUE."""
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def frame(message: bytes, *, hostname: str, app_name: str, procid: str,
          at: datetime | None = None) -> bytes:
    """One RFC 5424 syslog message carrying ``message`` (UTF-8 XML) as its MSG."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    header = (f"<{PRI}>1 {stamp} {_field(hostname, 255)} {_field(app_name, 48)} "
              f"{_field(procid, 128)} {MSGID} -")
    return header.encode("ascii") + b" " + BOM + message


def octet_counted(message: bytes) -> bytes:
    """RFC 5425 framing: MSG-LEN SP SYSLOG-MSG."""
    return str(len(message)).encode("ascii") + b" " + message


class Transport(Protocol):
    """One repository's connection; ``send`` raises OSError when it could not send."""

    def send(self, messages: list[bytes]) -> None: ...

    def close(self) -> None: ...


class TlsTransport:
    """RFC 5425: one long-lived TLS connection, made again when the repository closed it."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, *, server_name: str,
                 timeout_s: float) -> None:
        self._address = (host, port)
        self._context = context
        self._server_name = server_name
        self._timeout_s = timeout_s
        self._sock: ssl.SSLSocket | None = None

    def _connected(self) -> ssl.SSLSocket:
        sock = self._sock
        if sock is not None and not _still_open(sock, self._timeout_s):
            self.close()
            sock = None
        if sock is None:
            raw = socket.create_connection(self._address, timeout=self._timeout_s)
            try:
                sock = self._context.wrap_socket(raw, server_hostname=self._server_name)
            except BaseException:
                raw.close()
                raise
            self._sock = sock
        return sock

    def send(self, messages: list[bytes]) -> None:
        sock = self._connected()
        try:
            sock.sendall(b"".join(octet_counted(m) for m in messages))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None


def _still_open(sock: ssl.SSLSocket, timeout_s: float) -> bool:
    """False when the repository closed the connection (or reset it) since the last
    send: a syslog receiver never writes, so anything readable is its goodbye. Sent
    into a closed connection, the next messages would be lost without an error."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not sock.pending():
            return True
        sock.setblocking(False)
        try:
            data = sock.recv(1)
        except ssl.SSLWantReadError:
            return True  # a partial record (e.g. a TLS 1.3 session ticket)
        finally:
            sock.settimeout(timeout_s)
        return bool(data)
    except (OSError, ValueError):
        return False


class UdpTransport:
    """RFC 5426: one datagram per message. Lossy by nature: a datagram the repository
    never got is not noticed (only a refusal the host reports back is)."""

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._sock: socket.socket | None = None

    def send(self, messages: list[bytes]) -> None:
        if self._sock is None:
            family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
            self._sock = socket.socket(family, socket.SOCK_DGRAM)
            self._sock.connect(self._address)  # so the host's refusals come back as errors
        for message in messages:
            if len(message) > MAX_DATAGRAM:
                # Retrying cannot help: skipped (the local copy keeps it), and said.
                log.warning("an audit message of %d bytes does not fit a UDP datagram (at "
                            "most %d) and is not sent to %s:%d; use transport tls",
                            len(message), MAX_DATAGRAM, *self._address)
                continue
            self._sock.send(message)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
