"""A real MLLP receiver over TLS for tests, on the test's own event loop.

``asyncio.start_server`` with an SSLContext built here from the ssl module (not
bridge.tls, so the bridge's client is checked against an independent server):
the receiver's certificate and key, and mutual TLS, a client certificate signed
by ``ca`` required. Every message is recorded with the common name of the
client certificate it came with, and answered AA.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bridge.hl7 import FrameDecoder, build_ack, encode_frame, read_header
from tests.tlscerts import Pair

from .mllp_receiver import Received


def receiver_context(pair: Pair, ca: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pair.cert, pair.key)
    ctx.load_verify_locations(cafile=ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _common_name(writer: asyncio.StreamWriter) -> str:
    cert = writer.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


@dataclass
class TlsMllpReceiver:
    pair: Pair  # the receiver's certificate and key
    ca: Path  # the CA a client certificate must come from
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    client_names: list[str] = field(default_factory=list)  # per message
    sessions: int = 0  # connections whose handshake succeeded

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=receiver_context(self.pair, self.ca))
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Called only after a successful handshake (with a client certificate from ca).
        self.sessions += 1
        decoder = FrameDecoder(16 * 1024 * 1024)
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    payload = getattr(frame, "payload", b"")
                    header = read_header(payload.decode("latin-1"))
                    if header is None:
                        return
                    self.messages.append(Received(payload, header.value(10), time.monotonic()))
                    self.client_names.append(_common_name(writer))
                    ack = build_ack(header, "AA", control_id=f"R{len(self.messages)}",
                                    now=datetime.now())
                    writer.write(encode_frame(ack.encode("latin-1")))
                    await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
