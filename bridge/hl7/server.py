"""The asyncio MLLP listener.

Each connection is one task that reads, splits frames and awaits the handler
for one frame at a time, so ACKs leave in the order the frames came. Many
connections run side by side. The handler decides everything about content;
this module only guarantees the transport: one reply per frame, no unbounded
buffers, idle connections closed, and one connection's failure never
reaching another.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import traceback
from typing import Protocol

from bridge.hl7.mllp import Frame, FrameDecoder, OversizeFrame, encode_frame

log = logging.getLogger(__name__)

READ_CHUNK = 65536


class FrameHandler(Protocol):
    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        """The reply payload (unframed), or None to close the connection without one."""
        ...

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        """Answer a frame larger than the limit, from its first bytes."""
        ...


def set_nodelay(writer: asyncio.StreamWriter) -> None:
    # Nagle holds back the small ACK until the peer's delayed ACK: ~40 ms a message.
    sock = writer.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def format_peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def _where(exc: BaseException) -> str:
    """Where an exception was raised, without its message (which may hold PHI)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {last.filename}:{last.lineno} in {last.name}"


class _Connection:
    __slots__ = ("busy", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.busy = False  # inside the handler or writing its reply


class MllpServer:
    def __init__(self, handler: FrameHandler, *, max_frame_bytes: int,
                 idle_timeout_s: float) -> None:
        self._handler = handler
        self._max_frame_bytes = max_frame_bytes
        self._idle_timeout_s = idle_timeout_s
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: set[_Connection] = set()
        self._closing = False

    @classmethod
    async def start(cls, handler: FrameHandler, *, host: str, port: int,
                    max_frame_bytes: int, idle_timeout_s: float,
                    ssl: ssl_module.SSLContext | None = None,
                    ssl_handshake_timeout_s: float = 10.0) -> MllpServer:
        """Listen; with ``ssl`` (bridge.tls.server_context) every connection is TLS."""
        self = cls(handler, max_frame_bytes=max_frame_bytes, idle_timeout_s=idle_timeout_s)
        self._server = await asyncio.start_server(
            self._serve, host, port, ssl=ssl,
            ssl_handshake_timeout=ssl_handshake_timeout_s if ssl is not None else None)
        address = self._server.sockets[0].getsockname()
        self._port = int(address[1])
        log.info("MLLP listening on %s%s", format_peer(address), " (TLS)" if ssl else "")
        return self

    @property
    def port(self) -> int:
        """The bound port (the real one when started with port 0).

        With a host name that resolves to several addresses and port 0, each
        socket gets its own port; this is the first one's.
        """
        return self._port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def close(self, *, grace_s: float | None = None) -> None:
        """Stop accepting; let in-flight frames be answered; then close every connection.

        Handlers still running after ``grace_s`` seconds (None: no limit) are cancelled.
        """
        if self._server is None:
            return
        self._closing = True
        self._server.close()
        for conn in list(self._connections):
            if not conn.busy:
                conn.task.cancel()
        tasks = [conn.task for conn in self._connections]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await self._server.wait_closed()
        log.info("MLLP listener closed")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Connection(task)
        self._connections.add(conn)
        peer = format_peer(writer.get_extra_info("peername"))
        log.debug("MLLP connection from %s", peer)
        try:
            set_nodelay(writer)
            await self._converse(conn, reader, writer, peer)
        except OSError as exc:
            log.debug("MLLP connection from %s lost: %s", peer, type(exc).__name__)
        except asyncio.CancelledError:
            # close() (or loop shutdown) ended this connection. Not re-raised:
            # asyncio would report a cancelled connection task as unhandled.
            log.debug("MLLP connection from %s cancelled", peer)
        finally:
            self._connections.discard(conn)
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
            log.debug("MLLP connection from %s closed", peer)

    async def _converse(self, conn: _Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, peer: str) -> None:
        decoder = FrameDecoder(self._max_frame_bytes)
        while not self._closing:
            try:
                async with asyncio.timeout(self._idle_timeout_s):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                log.info("closing MLLP connection from %s after %g s idle",
                         peer, self._idle_timeout_s)
                return
            if not data:
                return
            discarded = decoder.discarded
            frames = decoder.feed(data)
            if decoder.discarded != discarded:
                log.debug("MLLP %s: %d stray bytes dropped", peer, decoder.discarded - discarded)
            for frame in frames:
                conn.busy = True
                if not await self._answer(frame, writer, peer):
                    return
                await writer.drain()
                conn.busy = False
                if self._closing:
                    return

    async def _answer(self, frame: Frame | OversizeFrame, writer: asyncio.StreamWriter,
                      peer: str) -> bool:
        """Run the handler and queue its reply; False when the connection must close."""
        try:
            if isinstance(frame, OversizeFrame):
                log.warning("MLLP %s sent a %d-byte frame (limit %d)",
                            peer, frame.size, self._max_frame_bytes)
                reply = await self._handler.handle_oversize(frame.head, frame.size, peer)
            else:
                reply = await self._handler.handle_frame(frame.payload, peer)
            if reply is None:
                log.info("closing MLLP connection from %s without a reply, as the handler asked",
                         peer)
                return False
            writer.write(encode_frame(reply))
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the listener
            log.error("MLLP handler failed for a frame from %s (%s); closing the connection",
                      peer, _where(exc))
            return False
        return True
