"""MLLP over TLS, both directions, with certificates generated here (bridge.tls contexts)."""

from __future__ import annotations

import asyncio

import pytest

from bridge.hl7.client import MllpClient
from bridge.hl7.server import MllpServer
from bridge.tls import TlsSettings, client_context, server_context
from tests.tlscerts import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


class Echo:
    def __init__(self) -> None:
        self.calls = 0

    async def handle_frame(self, payload: bytes, peer: str) -> bytes | None:
        self.calls += 1
        return b"MSA|AA|" + payload.split(b"|")[9]

    async def handle_oversize(self, head: bytes, size: int, peer: str) -> bytes | None:
        return None


MESSAGE = b"MSH|^~\\&|RIS|H|MWL|H|20261128||ORM^O01|TLS1|P|2.5.1\rPID|1||X\r"


def server_tls(pki: Pki, **extra: object) -> TlsSettings:
    return TlsSettings(**{"enabled": True, "cert_file": pki.server.cert,
                          "key_file": pki.server.key, "ca_file": pki.ca, **extra})


def client_tls(pki: Pki, pair: str | None = "client", **extra: object) -> TlsSettings:
    values: dict[str, object] = {"enabled": True, "ca_file": pki.ca}
    if pair is not None:
        chosen = getattr(pki, pair)
        values.update(cert_file=chosen.cert, key_file=chosen.key)
    return TlsSettings(**{**values, **extra})


@pytest.fixture
async def tls_server(pki):
    handler = Echo()
    server = await MllpServer.start(
        handler, host="127.0.0.1", port=0, max_frame_bytes=4096, idle_timeout_s=30,
        ssl=server_context(server_tls(pki), "mllp.tls"), ssl_handshake_timeout_s=5)
    yield server, handler
    await server.close()


async def test_message_and_ack_over_mutual_tls(tls_server, pki):
    server, handler = tls_server
    client = await MllpClient.connect("127.0.0.1", server.port,
                                      ssl=client_context(client_tls(pki), "outbound.tls"))
    try:
        assert await client.send(MESSAGE) == b"MSA|AA|TLS1"
        assert await client.send(MESSAGE) == b"MSA|AA|TLS1"  # the connection stays
    finally:
        await client.close()
    assert handler.calls == 2


async def test_plain_client_on_the_tls_port_gets_nothing(tls_server):
    server, handler = tls_server
    client = await MllpClient.connect("127.0.0.1", server.port)
    try:
        with pytest.raises(ConnectionError, match="the peer closed the connection before replying"):
            await client.send(MESSAGE, timeout=10)
    finally:
        await client.close()
    assert handler.calls == 0


@pytest.mark.parametrize("pair", [None, "outsider"])
async def test_client_without_a_trusted_certificate_is_refused(tls_server, pki, pair):
    server, handler = tls_server
    with pytest.raises(ConnectionError,
                       match=r"closed the connection before replying|reset by peer"):
        # TLS 1.3 reports the server's refusal of the client certificate only
        # on the first read, so the refusal may come from connect or from send.
        client = await MllpClient.connect("127.0.0.1", server.port,
                                          ssl=client_context(client_tls(pki, pair), "o.tls"))
        try:
            await client.send(MESSAGE, timeout=10)
        finally:
            await client.close()
    assert handler.calls == 0


async def test_client_refuses_a_server_it_does_not_trust(tls_server, pki):
    server, _ = tls_server
    tls = client_tls(pki, ca_file=pki.outsider_ca)
    with pytest.raises(ConnectionError, match=r"TLS with 127\.0\.0\.1:\d+ failed: "
                                              r"CERTIFICATE_VERIFY_FAILED"):
        await MllpClient.connect("127.0.0.1", server.port, ssl=client_context(tls, "o.tls"))


async def test_client_checks_the_server_name(tls_server, pki):
    server, _ = tls_server
    ctx = client_context(client_tls(pki), "o.tls")
    with pytest.raises(ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await MllpClient.connect("127.0.0.1", server.port, ssl=ctx,
                                 server_hostname="ris.example.org")


async def test_silent_tls_peer_does_not_block_others(tls_server, pki):
    server, _ = tls_server
    _, idle = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        client = await MllpClient.connect("127.0.0.1", server.port,
                                          ssl=client_context(client_tls(pki), "o.tls"))
        assert await client.send(MESSAGE) == b"MSA|AA|TLS1"
        await client.close()
    finally:
        idle.close()
