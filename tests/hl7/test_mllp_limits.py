"""What one peer can make the MLLP listener hold, over real sockets (issue 10).

Connections in all and per address, the host allow-list at accept, the time a
frame may take, idle time that bytes outside frames don't reset, the buffer
budget over all connections, and a peer that takes no ACKs. Each refusal is
one WARNING line, and the listener keeps serving everyone else. Every wait is
bounded (asyncio.wait_for, or a deadline loop).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bridge.hl7.access import guard_sources
from bridge.hl7.client import MllpClient
from bridge.hl7.mllp import FrameDecoder, encode_frame
from bridge.hl7.server import FREE_BYTES, ConnectionLimits, MllpServer
from bridge.hl7.settings import MllpAllowSettings
from bridge.tls import TlsSettings, client_context, server_context
from tests.tlscerts import Pki, make_pki

WAIT_S = 10.0  # the most any step here waits for the server to act


def message(tag: str) -> bytes:
    return f"MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|{tag}|P|2.5.1\rPID|1||X\r".encode()


class Echo:
    """Answers "ACK <MSH-10>"; ``reply_size`` pads the reply (for a peer that reads none)."""

    def __init__(self, reply_size: int = 0) -> None:
        self.calls = 0
        self.reply_size = reply_size

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        self.calls += 1
        tag = payload.split(b"\r", 1)[0].split(b"|")[9]
        return b"ACK " + tag + b" " * self.reply_size

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        return b"TOO BIG"


Start = Callable[..., Awaitable[tuple[MllpServer, Echo]]]


@pytest.fixture
async def listen() -> AsyncIterator[Start]:
    servers: list[MllpServer] = []

    async def start(*, idle: float = 30, frame_bytes: int = 1 << 20, handler: Echo | None = None,
                    allow: MllpAllowSettings | None = None, **limits: float) -> tuple[
                        MllpServer, Echo]:
        echo = handler or Echo()
        guarded = guard_sources(echo, allow or MllpAllowSettings())
        server = await MllpServer.start(guarded, host="127.0.0.1", port=0,
                                        max_frame_bytes=frame_bytes, idle_timeout_s=idle,
                                        limits=ConnectionLimits(**limits))  # type: ignore[arg-type]
        servers.append(server)
        return server, echo

    yield start
    for server in servers:
        await server.close(grace_s=5)


async def connect(server: MllpServer, source: str = "127.0.0.1"
                  ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port, local_addr=(source, 0))


async def closed_by_server(reader: asyncio.StreamReader) -> bool:
    """True when the server hangs up (EOF or reset) within WAIT_S."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(65536), WAIT_S)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


async def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the server did not get there in time"
        await asyncio.sleep(0.01)


async def ack(server: MllpServer, tag: str) -> bytes:
    """The reply to one message from 127.0.0.1 over a new connection."""
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        return await client.send(message(tag), timeout=WAIT_S)
    finally:
        await client.close()


def warnings(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and text in r.getMessage()]


# --- connections at accept -------------------------------------------------------------


async def test_connections_over_the_total_are_closed_at_accept(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, _ = await listen(max_connections=3, max_connections_per_host=3)
    held = [await connect(server) for _ in range(3)]
    await until(lambda: server.connection_count == 3)
    with caplog.at_level(logging.WARNING):
        reader, writer = await connect(server)
        assert await closed_by_server(reader)
        writer.close()
    assert server.connection_count == 3
    (line,) = warnings(caplog, "refused")
    assert line.endswith("refused: 3 connections open (mllp.max_connections)")
    held[0][1].close()
    await until(lambda: server.connection_count == 2)
    assert await ack(server, "AFTER") == b"ACK AFTER"  # a place freed is a place taken
    for _, w in held[1:]:
        w.close()


async def test_connections_over_the_per_host_limit_are_closed_others_still_come_in(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, _ = await listen(max_connections=10, max_connections_per_host=2)
    held = [await connect(server, "127.0.0.2") for _ in range(2)]
    await until(lambda: server.connection_count == 2)
    with caplog.at_level(logging.WARNING):
        reader, writer = await connect(server, "127.0.0.2")
        assert await closed_by_server(reader)
        writer.close()
    (line,) = warnings(caplog, "refused")
    assert "127.0.0.2" in line and line.endswith(
        "refused: 2 connections open from this address (mllp.max_connections_per_host)")
    assert await ack(server, "OTHER") == b"ACK OTHER"  # 127.0.0.1 has its own count
    for _, w in held:
        w.close()


async def test_a_flood_of_refused_connections_is_one_log_line(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, _ = await listen(max_connections=1, max_connections_per_host=1)
    _, keeper = await connect(server)
    await until(lambda: server.connection_count == 1)
    with caplog.at_level(logging.WARNING):
        for _ in range(25):
            reader, writer = await connect(server)
            assert await closed_by_server(reader)
            writer.close()
    assert len(warnings(caplog, "refused")) == 1  # the next one comes after 10 s, counted
    keeper.close()


async def test_host_allow_list_is_checked_at_accept_before_any_byte(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, echo = await listen(allow=MllpAllowSettings(hosts=["127.0.0.1"]))
    with caplog.at_level(logging.WARNING):
        reader, writer = await connect(server, "127.0.0.2")
        try:
            writer.write(b"\x0b" + b"x" * 500_000)  # an unfinished frame, never held
            await writer.drain()
        except ConnectionError:
            pass
        assert await closed_by_server(reader)
        writer.close()
    assert echo.calls == 0 and server.buffered_bytes == 0
    (line,) = warnings(caplog, "refused")
    assert line.endswith("refused: address not in mllp.allow.hosts")
    assert await ack(server, "ALLOWED") == b"ACK ALLOWED"


# --- time ------------------------------------------------------------------------------


async def test_a_frame_must_be_whole_within_the_frame_timeout(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    server, echo = await listen(idle=60, frame_timeout_s=0.5)
    reader, writer = await connect(server)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        writer.write(b"\x0bMSH|^~\\&|")

        async def trickle() -> None:  # a byte every 0.1 s: never idle, never done
            for _ in range(int(WAIT_S / 0.1)):
                await asyncio.sleep(0.1)
                writer.write(b"x")

        dripping = asyncio.create_task(trickle())
        try:
            assert await closed_by_server(reader)
        finally:
            dripping.cancel()
    assert time.monotonic() - started < 5  # not the 60 s idle timeout
    (line,) = warnings(caplog, "not complete")
    assert line.endswith("is not complete (mllp.frame_timeout_s)")
    writer.close()
    await until(lambda: server.connection_count == 0)
    assert server.buffered_bytes == 0 and echo.calls == 0


async def test_a_slow_but_whole_frame_in_time_is_answered(listen: Start) -> None:
    server, _ = await listen(frame_timeout_s=5)
    reader, writer = await connect(server)
    frame = encode_frame(message("SLOW"))
    for i in range(0, len(frame), 16):  # arrives in pieces, well within the deadline
        writer.write(frame[i:i + 16])
        await asyncio.sleep(0.01)
    decoder = FrameDecoder(1 << 16)
    frames = decoder.feed(await asyncio.wait_for(reader.read(65536), WAIT_S))
    assert [f.payload for f in frames] == [b"ACK SLOW"]  # type: ignore[union-attr]
    writer.close()


async def test_bytes_outside_frames_do_not_keep_a_connection_open(listen: Start) -> None:
    server, _ = await listen(idle=0.5)
    reader, writer = await connect(server)
    started = time.monotonic()

    async def noise() -> None:
        for _ in range(int(WAIT_S / 0.1)):
            writer.write(b"\r\n")  # stray bytes: dropped, and no sign of life
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(noise())
    try:
        assert await closed_by_server(reader)
    finally:
        sending.cancel()
    assert time.monotonic() - started < 5
    writer.close()


async def test_a_peer_that_takes_no_acks_is_closed(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    # Each reply is 1 MB; the peer sends frames and never reads: once the socket
    # buffers are full, the listener gives up on it instead of waiting for ever.
    server, _ = await listen(frame_timeout_s=0.5, handler=Echo(reply_size=1 << 20))
    _, writer = await connect(server)
    with caplog.at_level(logging.WARNING):
        try:
            for i in range(64):
                writer.write(encode_frame(message(f"N{i}")))
                await asyncio.wait_for(writer.drain(), WAIT_S)
        except (ConnectionError, TimeoutError):
            pass
        await until(lambda: server.connection_count == 0)
    assert warnings(caplog, "takes no ACKs")
    writer.close()
    assert (await ack(server, "READER")).startswith(b"ACK READER")


# --- memory ----------------------------------------------------------------------------


async def test_buffer_budget_closes_the_connection_that_would_exceed_it(
        listen: Start, caplog: pytest.LogCaptureFixture) -> None:
    part = 150_000  # each unfinished frame: charged 150_000 - FREE_BYTES
    charge = part - FREE_BYTES
    server, _ = await listen(frame_bytes=1 << 20, max_buffered_bytes=2 * charge + 1000)
    first, second = await connect(server), await connect(server)
    first[1].write(b"\x0b" + message("FIRST") + b"x" * (part - len(message("FIRST"))))
    await until(lambda: server.buffered_bytes >= charge)
    second[1].write(b"\x0b" + message("SECOND") + b"x" * (part - len(message("SECOND"))))
    await until(lambda: server.buffered_bytes >= 2 * charge)
    with caplog.at_level(logging.WARNING):
        third = await connect(server)
        third[1].write(b"\x0b" + b"y" * part)
        assert await closed_by_server(third[0])
    (line,) = warnings(caplog, "max_buffered_bytes")
    assert "unfinished frames would take the listener over mllp.max_buffered_bytes" in line
    # Small orders still fit: each connection's first FREE_BYTES are not charged.
    assert await ack(server, "SMALL") == b"ACK SMALL"
    # The others were not harmed: their frames complete and are answered.
    first[1].write(b"\x1c\r")
    decoder = FrameDecoder(1 << 20)
    frames = decoder.feed(await asyncio.wait_for(first[0].read(65536), WAIT_S))
    assert [f.payload for f in frames] == [b"ACK FIRST"]  # type: ignore[union-attr]
    for _, w in (first, second, third):
        w.close()
    await until(lambda: server.connection_count == 0)
    assert server.buffered_bytes == 0


async def test_whole_frames_are_answered_before_an_over_budget_connection_is_closed(
        listen: Start) -> None:
    server, echo = await listen(frame_bytes=1 << 20, max_buffered_bytes=100_000)
    holder = await connect(server)
    holder[1].write(b"\x0b" + b"h" * 150_000)  # charged 150_000 - FREE_BYTES: most of it
    await until(lambda: server.buffered_bytes > 80_000)
    reader, writer = await connect(server)
    whole = encode_frame(message("WHOLE"))
    writer.write(whole[:-2] + b"x" * 60_000)  # one frame, not yet ended: within FREE_BYTES
    await asyncio.sleep(0.2)
    # Its end and, in the same bytes, the start of a frame the budget can't take.
    writer.write(whole[-2:] + b"\x0b" + b"y" * 60_000)
    decoder, replies = FrameDecoder(1 << 16), []
    while True:
        data = await asyncio.wait_for(reader.read(65536), WAIT_S)
        if not data:
            break
        replies += [f.payload for f in decoder.feed(data)]  # type: ignore[union-attr]
    assert replies == [b"ACK WHOLE"]  # answered, then closed
    assert echo.calls == 1
    for w in (holder[1], writer):
        w.close()


async def test_oversize_frames_cost_only_their_head(listen: Start) -> None:
    server, _ = await listen(frame_bytes=64 * 1024, max_buffered_bytes=64 * 1024)
    readers = [await connect(server) for _ in range(4)]
    for _, w in readers:
        w.write(b"\x0b" + message("BIG") + b"z" * 1_000_000)  # over the frame limit
    await asyncio.sleep(0.2)
    assert server.buffered_bytes == 0  # heads of at most 8 KiB: within FREE_BYTES
    for r, w in readers:
        w.write(b"\x1c\r")
        decoder = FrameDecoder(1 << 16)
        frames = decoder.feed(await asyncio.wait_for(r.read(65536), WAIT_S))
        assert [f.payload for f in frames] == [b"TOO BIG"]  # type: ignore[union-attr]
        w.close()


# --- TLS -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_pair(pki: Pki) -> tuple[TlsSettings, TlsSettings]:
    server = TlsSettings(enabled=True, cert_file=pki.server.cert, key_file=pki.server.key,
                         ca_file=pki.ca)
    client = TlsSettings(enabled=True, ca_file=pki.ca, cert_file=pki.client.cert,
                         key_file=pki.client.key)
    return server, client


async def test_tls_connection_over_the_limit_is_refused_before_the_handshake(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    server_tls, client_tls = tls_pair(pki)
    server = await MllpServer.start(
        Echo(), host="127.0.0.1", port=0, max_frame_bytes=4096, idle_timeout_s=30,
        ssl=server_context(server_tls, "mllp.tls"), ssl_handshake_timeout_s=5,
        limits=ConnectionLimits(max_connections=1, max_connections_per_host=1))
    try:
        first = await MllpClient.connect("127.0.0.1", server.port,
                                         ssl=client_context(client_tls, "o.tls"))
        assert await first.send(message("TLS1"), timeout=WAIT_S) == b"ACK TLS1"
        # Closed before TLS: the client's handshake itself fails (no TLS work spent).
        with caplog.at_level(logging.WARNING), \
                pytest.raises(ConnectionError, match=r"reset by peer|closed"):
            await MllpClient.connect("127.0.0.1", server.port,
                                     ssl=client_context(client_tls, "o.tls"))
        assert warnings(caplog, "refused: 1 connections open (mllp.max_connections)")
        assert not warnings(caplog, "TLS handshake")  # refused, not a failed handshake
        await first.close()
    finally:
        await server.close(grace_s=5)


async def test_failed_tls_handshake_is_one_warning(
        pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    server_tls, _ = tls_pair(pki)
    server = await MllpServer.start(
        Echo(), host="127.0.0.1", port=0, max_frame_bytes=4096, idle_timeout_s=30,
        ssl=server_context(server_tls, "mllp.tls"), ssl_handshake_timeout_s=5)
    try:
        with caplog.at_level(logging.WARNING):
            reader, writer = await connect(server)
            writer.write(encode_frame(message("PLAIN")))  # MLLP without TLS
            assert await closed_by_server(reader)
            writer.close()
            await until(lambda: server.connection_count == 0)
        (line,) = warnings(caplog, "TLS handshake")
        assert line.startswith("TLS handshake with 127.0.0.1:") and " failed: " in line
    finally:
        await server.close(grace_s=5)
