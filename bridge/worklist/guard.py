"""Bounds on what a DICOM peer may make the SCP read, checked on the raw bytes.

pynetdicom reads a PDU by its 6-byte header and then blocks until it has read
as many bytes as the header's length field claims (up to 4 GiB), before
anything (AE titles, addresses) is checked; it then glues every P-DATA
fragment of a DIMSE message together, however many there are. A peer could
so make the SCP buffer hundreds of megabytes per connection.

This module sits between the socket and pynetdicom: the sockets the server
accepts are ``GuardedSocket`` (or ``GuardedSSLSocket`` with TLS, made by the
SSL context), whose ``recv`` feeds every byte through a ``PduStream`` first.
Before a PDU's body is read, its claimed length is checked:

- the first PDU of a connection (the A-ASSOCIATE-RQ) and every PDU other than
  P-DATA-TF: at most ``max_associate_rq_bytes``;
- a P-DATA-TF: at most ``max_pdu`` (what the SCP offered), and the command
  set or data set it continues at most ``max_message_bytes`` in all.

Besides, the A-ASSOCIATE-RQ's AE titles are checked before pynetdicom decodes
them: pynetdicom raises on an AE title with a control character, a backslash
or non-ASCII bytes, and answers with an A-ABORT and a traceback in the log.
Here the peer gets the A-ASSOCIATE-RJ of PS3.8 (calling AE title not
recognised, or called AE title not recognised).

A refused connection gets an A-ABORT (service provider, invalid PDU
parameter value) or that A-ASSOCIATE-RJ and is closed; pynetdicom sees the
connection end before the refused PDU, and the log one WARNING line. A peer
that stops sending in the middle of a PDU for ``network_timeout_s`` is
dropped the same way: pynetdicom's own timers do not run while it waits for
the rest of a PDU.

``PduStream`` is pure (bytes in, a verdict out), so the rules are tested
without a network; the sockets only read, hand bytes on, and act on it.
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass

from bridge.logsafe import shown

LOGGER = logging.getLogger(__name__)

HEADER = 6  # PDU type, reserved, 4-byte length
PDV_HEADER = 6  # PDV item length (4), presentation context ID, message control header
# A-ASSOCIATE-RQ fixed fields after the PDU header (PS3.8 Table 9-11): protocol
# version (2), reserved (2), called AE title (16), calling AE title (16), reserved (32).
ASSOCIATE_RQ_FIXED = 68
A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_ABORT = 0x07
LAST_FRAGMENT = 0x02

# A-ASSOCIATE-RJ (PS3.8 Table 9-21) and A-ABORT (Table 9-26) parameters.
REJECTED_PERMANENT = 0x01
SOURCE_SERVICE_USER = 0x01
REASON_CALLING_AE = 0x03
REASON_CALLED_AE = 0x07
SOURCE_SERVICE_PROVIDER = 0x02
ABORT_NOT_SPECIFIED = 0x00
ABORT_INVALID_PARAMETER = 0x06

_READ_SIZE = 4096  # what pynetdicom reads at most per call as well


@dataclass(frozen=True, slots=True)
class PduLimits:
    """What one connection may send (bytes)."""

    associate_rq: int = 64 * 1024  # the first PDU, and every PDU but P-DATA-TF
    pdata: int = 4 * 1024 * 1024 + PDV_HEADER  # one P-DATA-TF, its length field
    message: int = 4 * 1024 * 1024  # one command set or data set, over its fragments

    @classmethod
    def of(cls, *, max_associate_rq_bytes: int, max_message_bytes: int,
           max_pdu: int) -> PduLimits:
        """The limits for these settings. ``max_pdu`` 0 (unlimited) leaves one
        P-DATA-TF as long as a whole message in one fragment."""
        pdata = max_pdu if max_pdu else max_message_bytes + PDV_HEADER
        return cls(max_associate_rq_bytes, pdata, max_message_bytes)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is ended, what the peer gets, and from where nothing
    more is handed on (the stream offset where the refused PDU starts)."""

    at: int
    why: str
    pdu: bytes  # the A-ABORT or A-ASSOCIATE-RJ to send
    rejected: bool = False  # an A-ASSOCIATE-RJ (else an A-ABORT)
    rest_of_pdu: int = 0  # bytes of the refused PDU still unread (read before an RJ)


def abort_pdu(reason: int = ABORT_INVALID_PARAMETER) -> bytes:
    return struct.pack(">BBLBBBB", A_ABORT, 0, 4, 0, 0, SOURCE_SERVICE_PROVIDER, reason)


def reject_pdu(reason: int) -> bytes:
    return struct.pack(">BBLBBBB", A_ASSOCIATE_RJ, 0, 4, 0, REJECTED_PERMANENT,
                       SOURCE_SERVICE_USER, reason)


def ae_title_fault(field: bytes) -> str | None:
    """Why a 16-byte AE title field is not a valid AE title, or None.

    VR AE (PS3.5 6.2): the default repertoire without backslash and control
    characters, leading and trailing spaces not significant, not all spaces.
    """
    if not field.strip(b" "):
        return "is empty"
    if any(byte < 0x20 or byte > 0x7E for byte in field):
        return "has a control character or a byte outside ASCII"
    if b"\\" in field:
        return "has a backslash"
    return None


class PduStream:
    """Follows the PDUs of one connection, byte by byte as they are read.

    ``feed`` takes whatever the socket returned; ``released`` then says how
    many bytes of the stream (from its start) may be handed to pynetdicom,
    and ``refusal`` whether the connection is to end. Bytes of the first PDU
    are held back until its AE titles have been checked (``hold_needs``).
    """

    def __init__(self, limits: PduLimits) -> None:
        self.limits = limits
        self.fed = 0
        self.released = 0
        self.refusal: Refusal | None = None
        self.first_pdu_end: int | None = None  # stream offset after the first PDU
        self._pdus = 0
        self._header = bytearray()
        self._type = 0
        self._start = 0  # stream offset of the current PDU's header
        self._body_left = 0  # bytes of the current PDU's body still to come
        # The first A-ASSOCIATE-RQ's fixed fields, while being collected.
        self._fixed: bytearray | None = None
        # P-DATA-TF: the PDV item being read, and the set it continues.
        self._pdv_header = bytearray()
        self._pdv_left = 0
        self._pdv_last = False
        self._set_bytes = 0

    @property
    def hold_needs(self) -> int:
        """Bytes still needed before the held first PDU can be checked (0: none held)."""
        if self._fixed is None:
            return 0
        return ASSOCIATE_RQ_FIXED - len(self._fixed)

    def feed(self, data: bytes) -> None:
        at = 0
        while at < len(data) and self.refusal is None:
            if not self._body_left and len(self._header) < HEADER:
                take = min(HEADER - len(self._header), len(data) - at)
                self._header += data[at:at + take]
                at += take
                if len(self._header) == HEADER:
                    self._begin(self.fed + at - HEADER)
                continue
            at += self._body(data, at)
        self.fed += len(data)
        release = self.fed if self.refusal is None else self.refusal.at
        if self._fixed is not None:
            release = min(release, self._start)
        self.released = max(self.released, release)

    def _begin(self, start: int) -> None:
        """A PDU header is complete: check its claimed length before its body is read."""
        pdu_type, _, length = struct.unpack(">BBL", bytes(self._header))
        first = self._pdus == 0
        self._pdus += 1
        self._type, self._start = pdu_type, start
        if first:
            self.first_pdu_end = start + HEADER + length
        limits = self.limits
        if pdu_type == P_DATA_TF and not first:
            if length > limits.pdata:
                return self._refuse(f"a P-DATA-TF PDU of {length} bytes, more than the "
                                    f"{limits.pdata} allowed (dicom.max_pdu)")
            if self._set_bytes + length - PDV_HEADER > limits.message:
                return self._refuse(f"a DIMSE message longer than {limits.message} bytes "
                                    f"(dicom.max_message_bytes)")
        elif length > limits.associate_rq:
            what = "an A-ASSOCIATE-RQ" if pdu_type == A_ASSOCIATE_RQ else (
                f"a PDU of type 0x{pdu_type:02X}")
            return self._refuse(f"{what} of {length} bytes, more than the "
                                f"{limits.associate_rq} allowed (dicom.max_associate_rq_bytes)")
        if first and pdu_type == A_ASSOCIATE_RQ:
            if length < ASSOCIATE_RQ_FIXED:
                return self._refuse(f"an A-ASSOCIATE-RQ of {length} bytes, shorter than "
                                    f"its fixed fields")
            self._fixed = bytearray()
        self._body_left = length
        if not length:
            self._end_pdu()
        return None

    def _body(self, data: bytes, at: int) -> int:
        """Consume body bytes of the current PDU from ``data[at:]``; how many were taken."""
        available = min(self._body_left, len(data) - at)
        if self._fixed is not None:
            take = min(available, self.hold_needs)
            self._fixed += data[at:at + take]
            self._taken(take)
            if not self.hold_needs:
                self._check_ae_titles()
            return take
        if self._type == P_DATA_TF:
            return self._pdv(data, at, available)
        self._taken(available)
        return available

    def _pdv(self, data: bytes, at: int, available: int) -> int:
        """PDV items of a P-DATA-TF: count each set's fragments, end a set at its last."""
        if not self._pdv_left:
            take = min(PDV_HEADER - len(self._pdv_header), available)
            self._pdv_header += data[at:at + take]
            if len(self._pdv_header) == PDV_HEADER:
                item_length, _, control = struct.unpack(">LBB", bytes(self._pdv_header))
                self._pdv_header.clear()
                fragment = item_length - 2
                if fragment < 0 or fragment > self._body_left - take:
                    self._refuse("a P-DATA-TF whose PDV item overruns the PDU")
                    return take
                self._set_bytes += fragment
                if self._set_bytes > self.limits.message:
                    self._refuse(f"a DIMSE message longer than {self.limits.message} bytes "
                                 f"(dicom.max_message_bytes)")
                    return take
                self._pdv_left = fragment
                self._pdv_last = bool(control & LAST_FRAGMENT)
                self._fragment_done()
            self._taken(take)
            return take
        take = min(available, self._pdv_left)
        self._pdv_left -= take
        self._fragment_done()
        self._taken(take)
        return take

    def _fragment_done(self) -> None:
        if not self._pdv_left and self._pdv_last:
            self._set_bytes = 0
            self._pdv_last = False

    def _taken(self, count: int) -> None:
        self._body_left -= count
        if not self._body_left and self.refusal is None:
            self._end_pdu()

    def _end_pdu(self) -> None:
        if self._type == P_DATA_TF and self._pdv_header:
            self._refuse("a P-DATA-TF that ends inside a PDV item header")
            return
        self._header.clear()

    def _check_ae_titles(self) -> None:
        fixed = self._fixed
        assert fixed is not None
        self._fixed = None
        called, calling = bytes(fixed[4:20]), bytes(fixed[20:36])
        for field, reason, name in ((calling, REASON_CALLING_AE, "calling"),
                                    (called, REASON_CALLED_AE, "called")):
            fault = ae_title_fault(field)
            if fault is not None:
                self.refusal = Refusal(
                    self._start, f"{name} AE '{shown(field.rstrip(b' '), 32)}' {fault}",
                    reject_pdu(reason), rejected=True, rest_of_pdu=self._body_left)
                return

    def _refuse(self, why: str) -> None:
        self.refusal = Refusal(self._start, why, abort_pdu())


class _Guarded(socket.socket):
    """``recv`` through a ``PduStream``; the base of the two socket classes below.

    It never reads past what the caller asked for, except the first PDU's AE
    titles (within that PDU): pynetdicom asks for whole PDUs, and only looks
    for the next one when select() says the socket has data, which it would
    not say for bytes kept here.
    """

    _stream: PduStream
    _peer: str
    _raw: bytearray  # read from the socket, not yet handed on
    _handed: int  # stream offset of the next byte to hand on
    _done: bool
    bytes_read: int  # everything read from the socket, for tests and logs
    # Called once if the connection ends before pynetdicom got the whole first PDU
    # (see scp.py: pynetdicom would otherwise wait dicom.acse_timeout_s for it).
    on_end_before_request: Callable[[], None] | None

    def guard(self, limits: PduLimits, peer: str, read_timeout_s: float) -> None:
        # Not __init__: ssl.SSLContext.wrap_socket makes SSLSockets without calling it.
        self._stream = PduStream(limits)
        self._peer = peer
        self._raw = bytearray()
        self._handed = 0
        self._done = False
        self.bytes_read = 0
        self.on_end_before_request = None
        # Bounds every wait for the rest of a PDU (and every send): pynetdicom's
        # ARTIM and idle timers do not run while it blocks in recv.
        self.settimeout(read_timeout_s)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if flags:
            raise ValueError("a guarded DICOM socket reads without flags")
        stream = self._stream
        while stream.released <= self._handed and not self._done:
            want = stream.hold_needs or bufsize
            chunk = self._read(min(max(want, 1), _READ_SIZE))
            if not chunk:
                self._done = True
                break
            self.bytes_read += len(chunk)
            self._raw += chunk
            stream.feed(chunk)
            if stream.refusal is not None:
                self._refuse(stream.refusal)
        count = min(bufsize, stream.released - self._handed)
        if count <= 0:
            self._ended()
            return b""
        out = bytes(self._raw[:count])
        del self._raw[:count]
        self._handed += count
        return out

    def _ended(self) -> None:
        first_end = self._stream.first_pdu_end
        hook, self.on_end_before_request = self.on_end_before_request, None
        if hook is not None and (first_end is None or self._handed < first_end):
            hook()

    def _read(self, size: int) -> bytes:
        try:
            return super().recv(size)
        except TimeoutError:
            timeout = self.gettimeout()
            self._refuse(Refusal(self._stream.fed, f"no data for {timeout:g} s in the "
                                 "middle of a PDU (dicom.network_timeout_s)",
                                 abort_pdu(ABORT_NOT_SPECIFIED)))
            return b""
        except (OSError, ValueError) as exc:
            # A reset or a closed socket: to pynetdicom, the connection has ended.
            LOGGER.debug("DICOM connection from %s: read failed: %s", self._peer,
                         type(exc).__name__)
            return b""

    def _refuse(self, refusal: Refusal) -> None:
        self._done = True
        if refusal.rejected:
            LOGGER.warning("association from %s rejected (result %d, source %d, reason %d): "
                           "%s", self._peer, refusal.pdu[7], refusal.pdu[8], refusal.pdu[9],
                           refusal.why)
            # Read the rest of the (bounded) A-ASSOCIATE-RQ first: closing with unread
            # data makes TCP send a reset, and the peer could lose the A-ASSOCIATE-RJ.
            self._discard(refusal.rest_of_pdu)
        else:
            LOGGER.warning("DICOM connection from %s closed: %s; A-ABORT sent", self._peer,
                           refusal.why)
        try:
            super().sendall(refusal.pdu)
            self.shutdown(socket.SHUT_RDWR)
        except (OSError, ValueError):
            pass  # the peer has gone already

    def _discard(self, count: int) -> None:
        while count > 0:
            try:
                chunk = super().recv(min(count, _READ_SIZE))
            except (OSError, ValueError):
                return
            if not chunk:
                return
            self.bytes_read += len(chunk)
            count -= len(chunk)


class GuardedSocket(_Guarded):
    """A plain TCP connection of the SCP (see ``adopt``)."""

    @classmethod
    def adopt(cls, client: socket.socket, limits: PduLimits, peer: str,
              read_timeout_s: float) -> GuardedSocket:
        """``client`` (just accepted) as a GuardedSocket; ``client`` is detached."""
        guarded = cls(client.family, client.type, client.proto, fileno=client.detach())
        guarded.guard(limits, peer, read_timeout_s)
        return guarded


class GuardedSSLSocket(_Guarded, ssl.SSLSocket):  # type: ignore[misc]
    """A TLS connection of the SCP: the server's SSL context makes these
    (``ssl.SSLContext.sslsocket_class``); ``guard`` is called after the wrap."""


def peer_text(address: object) -> str:
    """An accepted connection's address for a log line."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return shown(str(address))
