"""The MLLP listener tells its ``on_tls_failed`` hook of each failed TLS handshake (the
daemon makes it a Security Alert), and a failing hook does not stop the listener."""

from __future__ import annotations

import asyncio

import pytest

from bridge.hl7.client import MllpClient
from bridge.hl7.server import MllpServer
from bridge.tls import client_context, server_context
from tests.tlscerts import Pki, make_pki

from .test_mllp_tls import MESSAGE, Echo, client_tls, server_tls


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def start(pki: Pki, hook) -> MllpServer:
    return await MllpServer.start(
        Echo(), host="127.0.0.1", port=0, max_frame_bytes=4096, idle_timeout_s=30,
        ssl=server_context(server_tls(pki), "mllp.tls"), ssl_handshake_timeout_s=5,
        on_tls_failed=hook)


async def plain_hello(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x0bMSH|^~\\&|not TLS\r\x1c\r")
    await writer.drain()
    try:
        return await reader.read()  # the server closes: EOF
    finally:
        writer.close()


async def test_a_plain_client_on_the_tls_port_is_reported_with_its_reason(pki):
    failures: list[tuple[str, str]] = []
    got = asyncio.Event()

    def hook(peer: str, why: str) -> None:
        failures.append((peer, why))
        got.set()

    server = await start(pki, hook)
    try:
        assert await plain_hello(server.port) == b""
        await asyncio.wait_for(got.wait(), 30)
    finally:
        await server.close()
    ((peer, why),) = failures
    assert peer.startswith("127.0.0.1:")
    assert why == "WRONG_VERSION_NUMBER" or why.isupper(), why  # OpenSSL's reason


async def test_a_good_handshake_is_not_reported(pki):
    failures: list[tuple[str, str]] = []
    server = await start(pki, lambda peer, why: failures.append((peer, why)))
    try:
        client = await MllpClient.connect("127.0.0.1", server.port,
                                          ssl=client_context(client_tls(pki), "o.tls"))
        try:
            assert await client.send(MESSAGE) == b"MSA|AA|TLS1"
        finally:
            await client.close()
    finally:
        await server.close()
    assert failures == []


async def test_a_failing_hook_does_not_stop_the_listener(pki, caplog):
    def hook(peer: str, why: str) -> None:
        raise RuntimeError("audit broken")

    server = await start(pki, hook)
    try:
        await plain_hello(server.port)
        client = await MllpClient.connect("127.0.0.1", server.port,
                                          ssl=client_context(client_tls(pki), "o.tls"))
        try:
            assert await client.send(MESSAGE) == b"MSA|AA|TLS1"
        finally:
            await client.close()
    finally:
        await server.close()
    assert "TLS failure hook failed" in caplog.text
