"""The daemon with TLS on both listeners: HL7 in over mutual TLS, found by findscu over TLS."""

from __future__ import annotations

import asyncio
import subprocess

import pytest

from bridge.hl7.client import MllpClient, ack_code_of
from bridge.tls import TlsSettings, client_context
from tests.findstatus import check_status
from tests.tlscerts import make_pki

from .conftest import DCMTK, FIXTURES, dcmtk_env, start_daemon, stop_daemon, write_config


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    pki = make_pki(tmp / "pki")
    tls = (f"    enabled: true\n    cert_file: {pki.server.cert}\n    key_file: {pki.server.key}\n"
           f"    ca_file: {pki.ca}\n")
    cfg = write_config(tmp)
    text = cfg.read_text()
    text = text.replace("mllp:\n  host: 127.0.0.1\n  port: 0\n",
                        "mllp:\n  host: 127.0.0.1\n  port: 0\n  tls:\n" + tls)
    text = text.replace("  ae_title: MWLBRIDGE\n", "  ae_title: MWLBRIDGE\n  tls:\n" + tls)
    cfg.write_text(text)
    d = start_daemon(cfg, tmp / "data")
    yield d, pki
    assert stop_daemon(d) == 0


async def send_tls(port: int, payload: bytes, tls: TlsSettings) -> bytes:
    client = await MllpClient.connect("127.0.0.1", port, ssl=client_context(tls, "test"))
    try:
        return await client.send(payload)
    finally:
        await client.close()


def findscu(d, out, *tls: str) -> subprocess.CompletedProcess[bytes]:
    out.mkdir()
    return subprocess.run(
        [str(DCMTK / "findscu"), "-v", "-W", "-X", "-od", str(out), "-aec", d.ae_title, *tls,
         "-k", "AccessionNumber=ACC20261128001", "-k", "PatientName",
         "127.0.0.1", str(d.dicom_port)], capture_output=True, timeout=60, env=dcmtk_env())


def test_order_over_tls_is_found_over_tls(tls_daemon, tmp_path):
    d, pki = tls_daemon
    payload = (FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes().replace(b"\r\n", b"\r")
    client_tls = TlsSettings(enabled=True, cert_file=pki.client.cert, key_file=pki.client.key,
                             ca_file=pki.ca)
    ack = asyncio.run(send_tls(d.mllp_port, payload, client_tls))
    assert ack_code_of(ack) == "AA"
    done = findscu(d, tmp_path / "out", "+tls", str(pki.client.key), str(pki.client.cert),
                   "+cf", str(pki.ca))
    assert done.returncode == 0, done.stderr
    check_status((done.stdout + done.stderr).decode("utf-8", "replace"))
    assert len(list((tmp_path / "out").glob("rsp*.dcm"))) == 1


def test_plain_connections_to_tls_ports_are_refused(tls_daemon, tmp_path):
    d, _ = tls_daemon
    done = findscu(d, tmp_path / "out")
    assert done.returncode != 0
    assert not list((tmp_path / "out").glob("rsp*.dcm"))
    sent = d.send(FIXTURES / "orm-o01-ihe-ct.hl7")  # plain MLLP
    assert sent.returncode != 0
    assert ": AA" not in sent.stdout
    assert d.alive()
    assert any("TLS handshake with 127.0.0.1" in line for line in d.log)
