"""The asyncio MLLP listener.

Each connection is one task that reads, splits frames and awaits the handler
for one frame at a time, so ACKs leave in the order the frames came. Many
connections run side by side. The handler decides everything about content;
this module only guarantees the transport: one reply per frame, no unbounded
buffers, idle connections closed, and one connection's failure never
reaching another.

What one peer can make the listener hold is bounded (ConnectionLimits):

- connections: in all and per IP address, and the handler's AddressGate (the
  host allow-list), are checked at accept, before TLS and before any byte is
  read; a refused connection is closed with one WARNING line (repeats within
  REFUSAL_LOG_EVERY_S are counted into the next line, so a flood of connections
  is not a flood of log lines);
- time: a frame must be complete within ``frame_timeout_s`` of its first byte,
  and a connection that completes no frame for ``idle_timeout_s`` is closed;
  bytes outside frames do not count as activity, so neither a byte-a-minute
  frame nor a trickle of noise keeps a connection (and its buffer) for ever;
- memory: the bytes held for frames still arriving or being answered, over
  all connections, stay under ``max_buffered_bytes``; a connection that would
  push the total over it is closed. The first FREE_BYTES of each connection
  are not charged, so a crowd of huge unfinished frames can't turn away the
  small orders of other senders.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl as ssl_module
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from bridge.hl7.mllp import Frame, FrameDecoder, OversizeFrame, encode_frames
from bridge.hl7.settings import MllpSettings

log = logging.getLogger(__name__)

READ_CHUNK = 65536
FREE_BYTES = 65536  # held per connection without charge to max_buffered_bytes
REFUSAL_LOG_EVERY_S = 10.0


class FrameHandler(Protocol):
    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        """The reply payload (unframed), or None to close the connection without one."""
        ...

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        """Answer a frame larger than the limit, from its first bytes."""
        ...


@runtime_checkable
class AddressGate(Protocol):
    """A handler that also decides, at accept, whether an address may connect at all.

    The server asks it when the handler has an ``admits`` method (the allow-list
    wrapper, bridge.hl7.access), so a refused peer never gets a buffer.
    """

    def admits(self, address: str) -> bool:
        ...


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What all connections together may hold (the mllp settings of the same names)."""

    max_connections: int = 128
    max_connections_per_host: int = 32
    frame_timeout_s: float = 60.0
    max_buffered_bytes: int = 32 * 1024 * 1024

    @classmethod
    def of(cls, settings: MllpSettings) -> ConnectionLimits:
        return cls(max_connections=settings.max_connections,
                   max_connections_per_host=settings.max_connections_per_host,
                   frame_timeout_s=settings.frame_timeout_s,
                   max_buffered_bytes=settings.max_buffered_bytes)


class _RefusalLog:
    """One WARNING per refusal, but at most one line per reason every few seconds."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._quiet: Counter[str] = Counter()

    def refused(self, peer: str, reason: str) -> None:
        now = time.monotonic()
        if now - self._last.get(reason, -REFUSAL_LOG_EVERY_S) < REFUSAL_LOG_EVERY_S:
            self._quiet[reason] += 1
            return
        self._last[reason] = now
        more = self._quiet.pop(reason, 0)
        log.warning("MLLP connection from %s refused: %s%s", peer, reason,
                    f" (and {more} more refused for this since the last such line)"
                    if more else "")


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
    __slots__ = ("busy", "held", "task")

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task
        self.busy = False  # inside the handler or writing its reply
        self.held = 0  # bytes charged to the shared buffer budget


def _address(peername: object) -> str:
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return str(peername)


class MllpServer:
    def __init__(self, handler: FrameHandler, *, max_frame_bytes: int,
                 idle_timeout_s: float, limits: ConnectionLimits | None = None,
                 ssl: ssl_module.SSLContext | None = None,
                 ssl_handshake_timeout_s: float = 10.0,
                 on_tls_failed: Callable[[str, str], None] | None = None) -> None:
        self._handler = handler
        # (peer, why) for each failed TLS handshake: the audit trail's Security Alert,
        # passed in by bridge.app (this layer does not import bridge.audit).
        self._on_tls_failed = on_tls_failed
        self._gate = handler if isinstance(handler, AddressGate) else None
        self._max_frame_bytes = max_frame_bytes
        self._idle_timeout_s = idle_timeout_s
        self._limits = limits or ConnectionLimits()
        self._ssl = ssl
        self._ssl_handshake_timeout_s = ssl_handshake_timeout_s
        self._server: asyncio.Server | None = None
        self._port = 0
        self._connections: set[_Connection] = set()
        self._per_host: Counter[str] = Counter()
        self._buffered = 0
        self._refusals = _RefusalLog()
        self._closing = False

    @classmethod
    async def start(cls, handler: FrameHandler, *, host: str, port: int,
                    max_frame_bytes: int, idle_timeout_s: float,
                    ssl: ssl_module.SSLContext | None = None,
                    ssl_handshake_timeout_s: float = 10.0,
                    limits: ConnectionLimits | None = None,
                    on_tls_failed: Callable[[str, str], None] | None = None) -> MllpServer:
        """Listen; with ``ssl`` (bridge.tls.server_context) every connection is TLS.

        TLS starts on each connection after the accept checks (StreamWriter.start_tls),
        so a refused or surplus peer costs no handshake. ``on_tls_failed(peer, why)`` is
        called for each failed handshake (it must not block).
        """
        self = cls(handler, max_frame_bytes=max_frame_bytes, idle_timeout_s=idle_timeout_s,
                   limits=limits, ssl=ssl, ssl_handshake_timeout_s=ssl_handshake_timeout_s,
                   on_tls_failed=on_tls_failed)
        self._server = await asyncio.start_server(self._serve, host, port)
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

    @property
    def buffered_bytes(self) -> int:
        """Bytes charged to max_buffered_bytes right now, over all connections."""
        return self._buffered

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

    def _refusal(self, address: str) -> str | None:
        if self._gate is not None and not self._gate.admits(address):
            return "address not in mllp.allow.hosts"
        limits = self._limits
        if len(self._connections) >= limits.max_connections:
            return f"{len(self._connections)} connections open (mllp.max_connections)"
        if self._per_host[address] >= limits.max_connections_per_host:
            return (f"{self._per_host[address]} connections open from this address "
                    "(mllp.max_connections_per_host)")
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peername = writer.get_extra_info("peername")
        peer = format_peer(peername)
        address = _address(peername)
        refusal = "the listener is closing" if self._closing else self._refusal(address)
        if refusal is not None:
            self._refusals.refused(peer, refusal)
            writer.close()  # nothing was read, nothing is owed
            return
        conn = _Connection(task)
        self._connections.add(conn)
        self._per_host[address] += 1
        log.debug("MLLP connection from %s", peer)
        try:
            set_nodelay(writer)
            if self._ssl is None or await self._start_tls(writer, peer):
                await self._converse(conn, reader, writer, peer)
        except OSError as exc:
            log.debug("MLLP connection from %s lost: %s", peer, type(exc).__name__)
        except asyncio.CancelledError:
            # close() (or loop shutdown) ended this connection. Not re-raised:
            # asyncio would report a cancelled connection task as unhandled.
            log.debug("MLLP connection from %s cancelled", peer)
        finally:
            self._connections.discard(conn)
            self._per_host[address] -= 1
            if self._per_host[address] <= 0:
                del self._per_host[address]
            self._buffered -= conn.held
            conn.held = 0
            writer.close()
            try:
                async with asyncio.timeout(5):
                    await writer.wait_closed()
            except (OSError, TimeoutError):
                pass
            log.debug("MLLP connection from %s closed", peer)

    async def _start_tls(self, writer: asyncio.StreamWriter, peer: str) -> bool:
        assert self._ssl is not None
        try:
            await writer.start_tls(self._ssl,
                                   ssl_handshake_timeout=self._ssl_handshake_timeout_s)
        except OSError as exc:  # ssl.SSLError, a reset, the handshake timeout
            reason = exc.reason if isinstance(exc, ssl_module.SSLError) else None
            why = reason or type(exc).__name__  # OpenSSL's reason, as for DICOM
            log.warning("TLS handshake with %s failed: %s", peer, why)
            if self._on_tls_failed is not None:
                try:
                    self._on_tls_failed(peer, why)
                except Exception as hook_exc:  # noqa: BLE001 - never fails the listener
                    log.error("TLS failure hook failed for %s (%s)", peer, _where(hook_exc))
            return False
        return True

    def _charge(self, conn: _Connection, held: int, *, force: bool = False) -> bool:
        """Set what ``conn`` holds; False (nothing changed) when the budget can't take it
        (``force``: bytes already read, charged whatever the budget says)."""
        charge = max(0, held - FREE_BYTES)
        if not force and charge > conn.held and self._buffered - conn.held + charge > \
                self._limits.max_buffered_bytes:
            return False
        self._buffered += charge - conn.held
        conn.held = charge
        return True

    async def _converse(self, conn: _Connection, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter, peer: str) -> None:
        decoder = FrameDecoder(self._max_frame_bytes)
        loop = asyncio.get_running_loop()
        idle_since = frame_since = loop.time()
        limits = self._limits
        while not self._closing:
            in_frame = decoder.in_frame
            deadline = (frame_since + limits.frame_timeout_s if in_frame
                        else idle_since + self._idle_timeout_s)
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if in_frame:
                    log.warning("closing MLLP connection from %s: a frame begun %.0f s ago "
                                "is not complete (mllp.frame_timeout_s)", peer,
                                loop.time() - frame_since)
                else:
                    log.info("closing MLLP connection from %s after %g s without a frame",
                             peer, self._idle_timeout_s)
                return
            if not data:
                return
            discarded = decoder.discarded
            frames = decoder.feed(data)
            if decoder.discarded != discarded:
                log.debug("MLLP %s: %d stray bytes dropped", peer, decoder.discarded - discarded)
            now = loop.time()
            if decoder.in_frame and (frames or not in_frame):
                frame_since = now  # a new frame began in this chunk
            sizes = [len(f.payload) if isinstance(f, Frame) else len(f.head) for f in frames]
            held = decoder.buffered + sum(sizes)
            over_budget = not self._charge(conn, held)
            if over_budget:
                log.warning("closing MLLP connection from %s: its %d bytes of unfinished "
                            "frames would take the listener over mllp.max_buffered_bytes (%d)",
                            peer, held, limits.max_buffered_bytes)
                if not frames:
                    return
                # Whole frames that came with the last bytes are answered first: their
                # bytes are read already, and the sender gets its ACKs; only the
                # unfinished frame goes with the connection.
                self._charge(conn, sum(sizes), force=True)
            unfinished = 0 if over_budget else decoder.buffered
            pending = sum(sizes)
            for frame, size in zip(frames, sizes, strict=True):
                conn.busy = True
                if not await self._answer(frame, writer, peer):
                    return
                try:
                    # A peer that never reads its ACKs must not park this task for ever.
                    async with asyncio.timeout(limits.frame_timeout_s):
                        await writer.drain()
                except TimeoutError:
                    log.warning("closing MLLP connection from %s: it takes no ACKs "
                                "(nothing read for %g s)", peer, limits.frame_timeout_s)
                    return
                conn.busy = False
                pending -= size
                self._charge(conn, unfinished + pending)  # less than before: fits
                if self._closing:
                    return
            if over_budget:
                return
            if frames:
                idle_since = loop.time()

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
            writer.write(encode_frames(reply))  # two in enhanced mode (accept, application)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the listener
            log.error("MLLP handler failed for a frame from %s (%s); closing the connection",
                      peer, _where(exc))
            return False
        return True
