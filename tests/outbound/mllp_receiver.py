"""A real MLLP receiver for tests: a threaded TCP server that records every message
and answers it as a ``respond`` function says (AA by default, or AE, a late ACK,
or a dropped connection)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from bridge.hl7 import (
    ErrorDetail,
    FrameDecoder,
    build_ack,
    encode_frame,
    parse_message,
    read_header,
)


@dataclass(frozen=True)
class Reply:
    code: str = "AA"  # MSA-1; "" sends nothing and closes the connection
    delay: float = 0.0  # seconds before the ACK is written
    error: str = ""  # ERR text (with code 207) for a negative ACK


@dataclass(frozen=True)
class Received:
    payload: bytes
    control_id: str
    arrived: float  # time.monotonic()

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", errors="replace")

    def field(self, segment: str, position: int, component: int = 1) -> str:
        msg = parse_message(self.payload.decode("latin-1"))
        seg = msg.first(segment)
        return seg.value(position, component) if seg is not None else ""


Respond = Callable[[Received, int], Reply]


def always_aa(_: Received, __: int) -> Reply:
    return Reply()


@dataclass
class MllpReceiver:
    respond: Respond = always_aa
    port: int = 0
    messages: list[Received] = field(default_factory=list)
    connections: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                receiver._serve(self.request)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self.port = int(server.server_address[1])
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections += 1
        decoder = FrameDecoder(16 * 1024 * 1024)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    return
                for frame in decoder.feed(data):
                    payload = getattr(frame, "payload", b"")
                    header = read_header(payload.decode("latin-1"))
                    got = Received(payload, header.value(10) if header else "", time.monotonic())
                    with self._lock:
                        self.messages.append(got)
                        index = len(self.messages)
                        self._lock.notify_all()
                    reply = self.respond(got, index)
                    if reply.delay:
                        time.sleep(reply.delay)
                    if not reply.code or header is None:
                        return
                    errors = [ErrorDetail(207, "", reply.error)] if reply.error else []
                    ack = build_ack(header, reply.code, errors=errors, control_id=f"R{index}",
                                    now=datetime.now())
                    sock.sendall(encode_frame(ack.encode("latin-1", errors="replace")))
        except OSError:
            return
        finally:
            sock.close()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Received]:
        """Wait until ``count`` messages arrived (all of them are returned)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the receiver got {len(self.messages)} message(s), "
                                         f"expected {count}")
                self._lock.wait(left)
            return list(self.messages)

    def distinct(self) -> list[Received]:
        """First arrival of each MSH-10 (what a receiver that drops duplicates keeps)."""
        seen: set[str] = set()
        out = []
        with self._lock:
            for m in self.messages:
                if m.control_id not in seen:
                    seen.add(m.control_id)
                    out.append(m)
        return out


def reserve_port() -> int:
    """A free loopback port for a receiver that starts later (the "down" phase)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
