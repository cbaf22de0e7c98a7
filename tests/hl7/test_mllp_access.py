"""The MLLP source allow-list over real sockets: an AR for each refusal, in the sender's terms."""

from __future__ import annotations

import asyncio
import logging

import pytest

from bridge.hl7.access import SourceAllowList, guard_sources, peer_address
from bridge.hl7.client import ack_code_of
from bridge.hl7.mllp import Frame, FrameDecoder, encode_frame
from bridge.hl7.server import MllpServer
from bridge.hl7.settings import MllpAllowSettings, MllpSender

OTHER_HOST = "127.0.0.2"  # Linux answers the whole 127/8 on loopback


def message(app: str, facility: str, control_id: str = "MSG1") -> bytes:
    return (f"MSH|^~\\&|{app}|{facility}|MWL|H|20261128||ORM^O01|{control_id}|P|2.5.1\r"
            "PID|1||X\r").encode()


class Accepting:
    """The handler behind the guard: says AA, counts what got through."""

    def __init__(self) -> None:
        self.calls = 0

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        self.calls += 1
        return b"MSH|^~\\&|MWL|H|||20261128||ACK|1|P|2.5.1\rMSA|AA|MSG1\r"

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        self.calls += 1
        return b"MSA|AR|BIG\r"


async def exchange(port: int, payload: bytes, source: str = "127.0.0.1") -> bytes | None:
    """The reply to one frame; None when the server closed the connection instead."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(encode_frame(payload))
        await writer.drain()
        decoder = FrameDecoder(1 << 20)
        while True:
            data = await asyncio.wait_for(reader.read(65536), 30)
            if not data:
                return None
            frames = decoder.feed(data)
            if frames:
                assert isinstance(frames[0], Frame)
                return frames[0].payload
    except ConnectionResetError:  # closed with our frame unread: the kernel says RST
        return None
    finally:
        writer.close()


@pytest.fixture
async def guarded():
    servers: list[MllpServer] = []

    async def start(allow: MllpAllowSettings) -> tuple[MllpServer, Accepting]:
        inner = Accepting()
        server = await MllpServer.start(guard_sources(inner, allow), host="127.0.0.1", port=0,
                                        max_frame_bytes=4096, idle_timeout_s=30)
        servers.append(server)
        return server, inner

    yield start
    for server in servers:
        await server.close()


async def test_address_outside_the_allow_list_is_closed_at_accept(guarded, caplog):
    # Refused before a byte is read: a refused peer can't make the listener hold a
    # buffer (an unfinished 4 MB frame) while it waits for the frame to end.
    server, inner = await guarded(MllpAllowSettings(hosts=["127.0.0.1/32"]))
    with caplog.at_level(logging.WARNING):
        assert await exchange(server.port, message("RIS", "HOSP", "C42"),
                              source=OTHER_HOST) is None
    assert inner.calls == 0
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].startswith(f"MLLP connection from {OTHER_HOST}:")
    assert refused[0].endswith("refused: address not in mllp.allow.hosts")
    assert ack_code_of(await exchange(server.port, message("RIS", "HOSP"))) == "AA"


async def test_refused_address_holds_no_connection(guarded):
    server, _ = await guarded(MllpAllowSettings(hosts=["127.0.0.1/32"]))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port,
                                                   local_addr=(OTHER_HOST, 0))
    try:
        writer.write(b"\x0bMSH|" + b"x" * 60000)  # a frame begun, never ended
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed by the server
    except ConnectionResetError:
        pass
    finally:
        writer.close()
    assert server.connection_count == 0 and server.buffered_bytes == 0


async def test_unknown_sender_gets_ar_204_at_msh_3(guarded):
    server, inner = await guarded(MllpAllowSettings(senders=[
        MllpSender(application="RIS", facility="HOSP")]))
    ack = await exchange(server.port, message("OTHERRIS", "HOSP", "C7"))
    assert ack is not None
    assert ack_code_of(ack) == "AR"
    assert b"|MSH^1^3^1^1|204^Unknown key identifier^HL70357|E" in ack
    assert b"sending application 'OTHERRIS' / facility 'HOSP' is not accepted" in ack
    # The ACK goes back to the sender: MSH-5/6 are its MSH-3/4.
    assert ack.startswith(b"MSH|^~\\&|MWL|H|OTHERRIS|HOSP|")
    ack = await exchange(server.port, message("RIS", "ELSEWHERE"))
    assert ack is not None and ack_code_of(ack) == "AR"
    assert ack_code_of(await exchange(server.port, message("RIS", "HOSP"))) == "AA"
    assert inner.calls == 1


async def test_sender_bound_to_an_address(guarded):
    server, _ = await guarded(MllpAllowSettings(senders=[
        MllpSender(application="RIS", hosts=["127.0.0.1"]), MllpSender(application="LAB")]))
    assert ack_code_of(await exchange(server.port, message("RIS", "ANY"))) == "AA"
    refused = await exchange(server.port, message("RIS", "ANY"), source=OTHER_HOST)
    assert refused is not None and ack_code_of(refused) == "AR"
    assert ack_code_of(await exchange(server.port, message("LAB", "X"),
                                      source=OTHER_HOST)) == "AA"


async def test_refused_address_is_closed_whatever_it_sends(guarded):
    server, inner = await guarded(MllpAllowSettings(hosts=["127.0.0.1"]))
    assert await exchange(server.port, b"not hl7 at all", source=OTHER_HOST) is None
    big = message("RIS", "HOSP", "BIG1") + b"OBX|" + b"x" * 8000 + b"\r"
    assert await exchange(server.port, big, source=OTHER_HOST) is None
    assert inner.calls == 0


def test_empty_allow_list_adds_no_guard():
    inner = Accepting()
    assert guard_sources(inner, MllpAllowSettings()) is inner


@pytest.mark.parametrize(("peer", "address"), [
    ("10.0.0.5:4711", "10.0.0.5"), ("[::1]:4711", "::1"), ("[fe80::1%eth0]:1", "fe80::1%eth0")])
def test_peer_address(peer, address):
    assert peer_address(peer) == address


def test_ipv4_mapped_ipv6_peer_matches_an_ipv4_entry():
    allow = SourceAllowList(MllpAllowSettings(hosts=["10.0.0.0/8"]))
    assert allow.host_allowed("::ffff:10.1.2.3")
    assert not allow.host_allowed("::ffff:11.1.2.3")
