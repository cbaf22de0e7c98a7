import asyncio
import logging
import socket

import pytest

import bridge.hl7.server as server_module
from bridge.hl7.client import MllpClient
from bridge.hl7.mllp import FrameDecoder, encode_frame
from bridge.hl7.server import MllpServer


def message(tag: str) -> bytes:
    return f"MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|{tag}|P|2.5.1\rPID|1||Müller\r".encode()


def control_id(payload: bytes) -> str:
    return payload.split(b"\r", 1)[0].split(b"|")[9].decode()


class EchoHandler:
    """Replies "ACK <MSH-10>"; special control IDs drive the failure paths."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.calls = 0

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        self.calls += 1
        tag = control_id(payload)
        if tag.startswith("SLOW"):
            await asyncio.sleep(0.001 * (int(tag[4:]) % 3))  # shuffle connections
        if tag == "NONE":
            return None
        if tag == "BOOM":
            raise RuntimeError("patient Müller broke it")
        if tag == "BADREPLY":
            return b"contains \x1c"
        if tag == "WAIT":
            self.entered.set()
            await self.release.wait()
        return b"ACK " + tag.encode()

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        return b"TOO BIG"


async def start(handler: EchoHandler, *, idle: float = 30) -> MllpServer:
    return await MllpServer.start(handler, host="127.0.0.1", port=0,
                                  max_frame_bytes=4096, idle_timeout_s=idle)


@pytest.fixture
async def served():
    handler = EchoHandler()
    server = await start(handler)
    yield server, handler
    await server.close()


async def open_raw(server: MllpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", server.port)


async def read_replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    decoder, frames = FrameDecoder(1 << 16), []
    while len(frames) < count:
        data = await reader.read(65536)
        if not data:
            break
        frames += decoder.feed(data)
    return [f.payload for f in frames]


async def wait_for_count(server: MllpServer, count: int) -> None:
    while server.connection_count != count:
        await asyncio.sleep(0.01)


async def test_binds_a_free_port(served):
    server, _ = served
    assert server.port > 0
    assert server.connection_count == 0


async def test_concurrent_connections_get_their_acks_in_order(served):
    server, handler = served

    async def one_connection(n: int) -> list[bytes]:
        reader, writer = await open_raw(server)
        tags = [f"SLOW{n * 10 + i}" for i in range(10)]
        # Half pipeline all ten at once, half send one after another.
        if n % 2:
            writer.write(b"".join(encode_frame(message(t)) for t in tags))
            replies = await read_replies(reader, 10)
        else:
            replies = []
            for t in tags:
                writer.write(encode_frame(message(t)))
                replies += await read_replies(reader, 1)
        writer.close()
        assert replies == [b"ACK " + t.encode() for t in tags]
        return replies

    results = await asyncio.gather(*(one_connection(n) for n in range(20)))
    assert sum(len(r) for r in results) == 200
    assert handler.calls == 200


async def test_every_socket_gets_tcp_nodelay(served, monkeypatch):
    server, _ = served
    seen: list[int] = []
    real = server_module.set_nodelay

    def spy(writer: asyncio.StreamWriter) -> None:
        real(writer)
        seen.append(writer.get_extra_info("socket").getsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY))

    monkeypatch.setattr(server_module, "set_nodelay", spy)
    client = await MllpClient.connect("127.0.0.1", server.port)
    assert await client.send(message("X")) == b"ACK X"
    await client.close()
    assert seen and seen[0] != 0


async def test_idle_connection_is_closed():
    handler = EchoHandler()
    server = await start(handler, idle=0.2)
    try:
        reader, writer = await open_raw(server)
        writer.write(encode_frame(message("A")))
        assert await read_replies(reader, 1) == [b"ACK A"]
        assert await reader.read() == b""  # then idle: the server hangs up
        await wait_for_count(server, 0)
        writer.close()
    finally:
        await server.close()


async def test_none_closes_cleanly_while_others_go_on(served):
    server, _ = served
    other_reader, other_writer = await open_raw(server)
    reader, writer = await open_raw(server)
    writer.write(encode_frame(message("A")) + encode_frame(message("NONE"))
                 + encode_frame(message("NEVER")))
    assert await read_replies(reader, 3) == [b"ACK A"]
    assert await reader.read() == b""
    other_writer.write(encode_frame(message("B")))
    assert await read_replies(other_reader, 1) == [b"ACK B"]
    other_writer.close()
    writer.close()


async def test_handler_exception_is_logged_without_phi_and_server_survives(served, caplog):
    server, _ = served
    caplog.set_level(logging.DEBUG, logger="bridge.hl7")
    reader, writer = await open_raw(server)
    writer.write(encode_frame(message("BOOM")))
    assert await read_replies(reader, 1) == []
    writer.close()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "RuntimeError" in errors[0].getMessage()
    assert "Müller" not in caplog.text and "broke it" not in caplog.text
    client = await MllpClient.connect("127.0.0.1", server.port)
    assert await client.send(message("C")) == b"ACK C"
    await client.close()


async def test_unframeable_reply_closes_only_that_connection(served):
    server, _ = served
    reader, writer = await open_raw(server)
    writer.write(encode_frame(message("BADREPLY")))
    assert await read_replies(reader, 1) == []
    writer.close()
    client = await MllpClient.connect("127.0.0.1", server.port)
    assert await client.send(message("D")) == b"ACK D"
    await client.close()


async def test_peer_hanging_up_mid_frame(served):
    server, handler = served
    _, writer = await open_raw(server)
    await wait_for_count(server, 1)
    writer.write(b"\x0bMSH|^~\\&|half a frame")
    writer.close()
    await wait_for_count(server, 0)
    assert handler.calls == 0


async def test_close_answers_in_flight_frames_then_closes():
    handler = EchoHandler()
    server = await start(handler)
    busy_reader, busy_writer = await open_raw(server)
    idle_reader, idle_writer = await open_raw(server)
    await wait_for_count(server, 2)
    busy_writer.write(encode_frame(message("WAIT")) + encode_frame(message("LATER")))
    await handler.entered.wait()
    closing = asyncio.create_task(server.close())
    assert await idle_reader.read() == b""  # idle connections go at once
    with pytest.raises(OSError, match="Connect call failed"):
        await asyncio.open_connection("127.0.0.1", server.port)
    handler.release.set()
    await closing
    assert await read_replies(busy_reader, 2) == [b"ACK WAIT"]  # LATER is never taken on
    assert server.connection_count == 0
    busy_writer.close()
    idle_writer.close()


async def test_close_grace_cancels_a_stuck_handler():
    handler = EchoHandler()
    server = await start(handler)
    reader, writer = await open_raw(server)
    writer.write(encode_frame(message("WAIT")))
    await handler.entered.wait()
    await server.close(grace_s=0.05)
    assert await reader.read() == b""
    assert server.connection_count == 0
    writer.close()
