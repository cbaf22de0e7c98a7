"""The MLLP source allow-list: which addresses and which senders may send HL7.

``guard_sources`` wraps the listener's FrameHandler. Each frame is checked
before anything else reads it, and a refused one is answered, never dropped
silently, so the sender's interface engine shows why:

==============================  ====  ==============================  =====================
refusal                         MSA   ERR-3 (table 0357) / ERR-2      setting
==============================  ====  ==============================  =====================
peer address not allowed        AR    204 Unknown key identifier / -  mllp.allow.hosts
MSH-3/MSH-4 not an allowed      AR    204 Unknown key identifier /    mllp.allow.senders
sender (from this address)            MSH^1^3^1^1
==============================  ====  ==============================  =====================

A refused frame without a readable MSH gets no ACK (there is nothing to
address it to): the connection is closed, as for any non-HL7 frame. Refused
messages are logged (address, MSH-3, MSH-4, MSH-10: no patient data, each
made safe and cut by bridge.logsafe.shown) and not stored, so an unknown peer
can't fill the message log.

``mllp.allow.hosts`` is checked twice: the listener asks ``admits`` at accept
(AllowListHandler is an AddressGate), so a refused address is closed before
it can send a byte; the per-frame check stays for servers without that gate.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from bridge.addresses import Network, address_in, networks
from bridge.hl7.ack import AckControlIds, ErrorDetail, build_ack, echo, read_header_bytes
from bridge.hl7.charset import encode_text
from bridge.hl7.message import Segment
from bridge.hl7.server import FrameHandler
from bridge.hl7.settings import MllpAllowSettings
from bridge.logsafe import shown

log = logging.getLogger(__name__)

UNKNOWN_KEY = 204


@dataclass(frozen=True, slots=True)
class _Sender:
    application: str
    facility: str
    hosts: tuple[Network, ...]


class SourceAllowList:
    """The decision part, without I/O: is this address, this sender allowed?"""

    def __init__(self, allow: MllpAllowSettings) -> None:
        self._hosts = networks(allow.hosts)
        self._senders = tuple(_Sender(s.application.strip(), s.facility.strip(), networks(s.hosts))
                              for s in allow.senders)

    @property
    def active(self) -> bool:
        return bool(self._hosts or self._senders)

    def host_allowed(self, address: str) -> bool:
        return not self._hosts or address_in(address, self._hosts)

    def sender_allowed(self, application: str, facility: str, address: str) -> bool:
        """MSH-3.1 and MSH-4.1 against mllp.allow.senders (empty: everyone)."""
        if not self._senders:
            return True
        return any(s.application == application.strip()
                   and (not s.facility or s.facility == facility.strip())
                   and (not s.hosts or address_in(address, s.hosts))
                   for s in self._senders)


def peer_address(peer: str) -> str:
    """The IP part of the listener's peer text ("10.0.0.5:4711", "[::1]:4711")."""
    if peer.startswith("["):
        return peer[1:].split("]", 1)[0]
    return peer.rsplit(":", 1)[0]


class AllowListHandler:
    """A FrameHandler that refuses frames from sources the allow-list doesn't name."""

    def __init__(self, inner: FrameHandler, allow: SourceAllowList,
                 ack_ids: AckControlIds | None = None,
                 on_refused: Callable[[str, str], None] | None = None) -> None:
        self._inner = inner
        self._allow = allow
        self._ack_ids = ack_ids or AckControlIds()
        # (peer, why) for each refusal: the audit trail's Security Alert.
        self._on_refused = on_refused or (lambda peer, why: None)

    def admits(self, address: str) -> bool:
        """The listener's check at accept (AddressGate): mllp.allow.hosts alone."""
        if self._allow.host_allowed(address):
            return True
        self._on_refused(address, "address not in mllp.allow.hosts")
        return False

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        refusal = self._refusal(payload, peer)
        if refusal is not None:
            return refusal[0]
        return await self._inner.handle_frame(payload, peer)

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        refusal = self._refusal(head, peer)
        if refusal is not None:
            return refusal[0]
        return await self._inner.handle_oversize(head, size, peer)

    def _refusal(self, payload: bytes, peer: str) -> tuple[bytes | None] | None:
        """None to let the frame through, else a 1-tuple with the reply (None: close)."""
        address = peer_address(peer)
        header = read_header_bytes(payload)
        application = header.value(3, 1) if header is not None else ""
        facility = header.value(4, 1) if header is not None else ""
        if not self._allow.host_allowed(address):
            error = ErrorDetail(code=UNKNOWN_KEY, location="",
                                text=f"messages from {address} are not accepted")
            why = "address not in mllp.allow.hosts"
        elif header is not None and not self._allow.sender_allowed(application, facility,
                                                                  address):
            error = ErrorDetail(code=UNKNOWN_KEY, location="MSH^1^3^1^1",
                                text=f"sending application {echo(application)} / facility "
                                     f"{echo(facility)} is not accepted from {address}")
            why = "sender not in mllp.allow.senders"
        else:
            return None
        control_id = header.value(10) if header is not None else ""
        log.warning("HL7 message %s from %s (MSH-3 %s, MSH-4 %s) refused: %s",
                    shown(control_id), peer, shown(application), shown(facility), why)
        self._on_refused(peer, why)
        if header is None:
            return (None,)
        return (self._ack(header, error),)

    def _ack(self, header: Segment, error: ErrorDetail) -> bytes:
        now = datetime.now()
        control_id = self._ack_ids.next(now)
        text = build_ack(header, "AR", errors=[error], control_id=control_id, now=now)
        # The header was read as Latin-1, so Latin-1 gives back the sender's own bytes.
        return encode_text(text, "latin-1")


def guard_sources(handler: FrameHandler, allow: MllpAllowSettings,
                  ack_ids: AckControlIds | None = None,
                  on_refused: Callable[[str, str], None] | None = None) -> FrameHandler:
    """``handler`` behind the allow-list; ``handler`` itself when nothing is restricted.

    Pass the ``ack_ids`` the handler uses, so refusals and ACKs never share an MSH-10;
    ``on_refused(peer, why)`` hears of every refusal (the audit trail).
    """
    allow_list = SourceAllowList(allow)
    return (AllowListHandler(handler, allow_list, ack_ids, on_refused) if allow_list.active
            else handler)
