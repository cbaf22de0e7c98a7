import asyncio
import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import pytest

from bridge.hl7.client import MllpClient, ack_code_of, acked_control_id_of, split_messages
from bridge.hl7.mllp import FrameDecoder, encode_frame
from bridge.hl7.server import MllpServer

ACK = b"MSH|^~\\&|MWL|H|RIS|R|20261128||ACK^O01|A1|P|2.3.1\rMSA|AA|C1\r"


def message(tag: str) -> bytes:
    return f"MSH|^~\\&|RIS|R|MWL|H|20261128||ORM^O01|{tag}|P|2.3.1\rPID|1\r".encode()


class AckHandler:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        tag = payload.split(b"|")[9]
        if tag == b"HANG":
            await self.release.wait()
        if tag == b"CLOSE":
            return None
        if tag == b"HUGE":
            return b"x" * 500
        return ACK.replace(b"MSA|AA|C1", b"MSA|AA|" + tag)

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        return None


@pytest.fixture
async def served():
    handler = AckHandler()
    server = await MllpServer.start(handler, host="127.0.0.1", port=0,
                                    max_frame_bytes=1 << 16, idle_timeout_s=30)
    yield server, handler
    handler.release.set()
    await server.close()


async def raw_server(
        answer: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> asyncio.Server:
    return await asyncio.start_server(answer, "127.0.0.1", 0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_send_and_receive(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port)
    sock = client._writer.get_extra_info("socket")
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    for tag in ("C1", "C2", "C3"):
        reply = await client.send(message(tag))
        assert (ack_code_of(reply), acked_control_id_of(reply)) == ("AA", tag)
    await client.close()
    await client.close()  # idempotent
    with pytest.raises(ConnectionError, match="the MLLP connection is closed"):
        await client.send(message("C4"))


async def test_concurrent_sends_take_turns(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port)
    tags = [f"T{i}" for i in range(10)]
    replies = await asyncio.gather(*(client.send(message(t)) for t in tags))
    assert [acked_control_id_of(r) for r in replies] == tags
    await client.close()


async def test_timeout_closes_the_connection(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port)
    with pytest.raises(TimeoutError, match=r"no MLLP reply within 0\.1 s"):
        await client.send(message("HANG"), timeout=0.1)
    # A late ACK must never be taken for the next message's.
    with pytest.raises(ConnectionError, match="the MLLP connection is closed"):
        await client.send(message("C2"))


async def test_peer_closing_without_reply(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port)
    with pytest.raises(ConnectionError, match="closed"):
        await client.send(message("CLOSE"))
    with pytest.raises(ConnectionError, match="the MLLP connection is closed"):
        await client.send(message("C2"))


async def test_oversize_reply(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port, max_reply_bytes=100)
    with pytest.raises(ConnectionError, match="500-byte reply"):
        await client.send(message("HUGE"))


async def test_unframeable_payload_is_refused_before_sending(served):
    server, _ = served
    client = await MllpClient.connect("127.0.0.1", server.port)
    with pytest.raises(ValueError, match=r"must not contain VT \(0x0B\) or FS \(0x1C\)"):
        await client.send(b"MSH|\x1c")
    assert ack_code_of(await client.send(message("C1"))) == "AA"
    await client.close()


async def test_extra_replies_are_dropped(caplog):
    async def answer_twice(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(1 << 16)
        while data := await reader.read(65536):
            for _ in decoder.feed(data):
                writer.write(encode_frame(b"first") + encode_frame(b"second"))
        writer.close()

    server = await raw_server(answer_twice)
    async with server:
        client = await MllpClient.connect("127.0.0.1", server.sockets[0].getsockname()[1])
        with caplog.at_level(logging.WARNING, logger="bridge.hl7.client"):
            assert await client.send(message("C1")) == b"first"
        assert "2 replies" in caplog.text
        await client.close()


async def test_connection_refused():
    with pytest.raises(ConnectionError, match="Connect call failed"):
        await MllpClient.connect("127.0.0.1", free_port())


async def test_other_socket_errors_become_connection_errors(monkeypatch):
    async def unreachable(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EHOSTUNREACH, "No route to host")

    monkeypatch.setattr(asyncio, "open_connection", unreachable)  # failure injection
    with pytest.raises(ConnectionError, match=r"cannot connect to 192\.0\.2\.1:2575: No route"):
        await MllpClient.connect("192.0.2.1", 2575)


async def test_connect_timeout(monkeypatch):
    async def never(*args: object, **kwargs: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio, "open_connection", never)  # failure injection
    with pytest.raises(TimeoutError, match="connecting"):
        await MllpClient.connect("127.0.0.1", 1, timeout=0.05)


# --- files and replies ---------------------------------------------------------------

def test_split_messages_line_ends_blank_lines_and_charset():
    data = (b"\xef\xbb\xbfMSH|^~\\&|A|B|||||ORM^O01|1|P|2.3.1||||||8859/1\r\n"
            b"PID|1||1||M\xfcller\r\n\r\n\n"
            b"MSH|^~\\&|A|B|||||ORM^O01|2|P|2.3.1\n"
            b"PID|1||2\rORC|NW\r\r"
            b"\x0bMSH|^~\\&|A|B|||||ORM^O01|3|P|2.3.1\x1c\r \r\n")
    assert split_messages(data) == [
        b"MSH|^~\\&|A|B|||||ORM^O01|1|P|2.3.1||||||8859/1\rPID|1||1||M\xfcller\r",
        b"MSH|^~\\&|A|B|||||ORM^O01|2|P|2.3.1\rPID|1||2\rORC|NW\r",
        b"MSH|^~\\&|A|B|||||ORM^O01|3|P|2.3.1\r",
    ]


def test_split_messages_drops_batch_envelope():
    data = b"FHS|^~\\&\nBHS|^~\\&\nMSH|^~\\&|A\nPID|1\nBTS|1\nFTS|1\n"
    assert split_messages(data) == [b"MSH|^~\\&|A\rPID|1\r"]


def test_split_messages_rejects_content_before_msh():
    with pytest.raises(ValueError, match="line 2"):
        split_messages(b"\nPID|1\nMSH|^~\\&|A\n")
    assert split_messages(b"") == []


def test_ack_code_of():
    assert ack_code_of(ACK) == "AA"
    assert acked_control_id_of(ACK) == "C1"
    assert ack_code_of(b"\x0b\xef\xbb\xbfMSH#$%\\*#X\nMSA#AE#9\n") == "AE"
    assert ack_code_of(b"MSH|^~\\&|X\rERR|1\r") == ""
    assert acked_control_id_of(b"MSH|^~\\&|X\rMSA|AA\r") == ""
    assert ack_code_of(b"garbage") == ""
