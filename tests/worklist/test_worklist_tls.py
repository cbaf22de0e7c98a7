"""DICOM over TLS: real handshakes with certificates generated here, DCMTK and pynetdicom peers."""

from __future__ import annotations

import logging
import re
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from bridge.tls import TlsConfigError, TlsSettings
from bridge.worklist import WorklistSCP
from bridge.worklist.settings import DicomSettings, WorklistSettings
from tests.findstatus import check_status
from tests.tlscerts import Pki, make_pki

from .conftest import DCMTK_ENV, FINDSCU

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, **extra: object) -> TlsSettings:
    values: dict[str, object] = {"enabled": True, "cert_file": pki.server.cert,
                                 "key_file": pki.server.key, "ca_file": pki.ca}
    return TlsSettings(**{**values, **extra})


@pytest.fixture
def tls_scp(new_store, start_scp, item, pki):
    store = new_store([item("Doe^John", "P1", "A1", "1.2.3.1", "CT01", "CT", "20261128",
                            "080000")])
    return start_scp(store, dicom=DicomSettings(port=0, tls=tls_settings(pki)))


def findscu(port: int, out: Path, *tls: str) -> subprocess.CompletedProcess[str]:
    out.mkdir()
    return subprocess.run(
        [FINDSCU, "-v", "-W", "-X", "-od", str(out), "-aet", "CT01", "-aec", "MWLBRIDGE",
         *tls, "-k", "PatientName", "-k", "PatientID", "127.0.0.1", str(port)],
        env=DCMTK_ENV, capture_output=True, text=True, timeout=60, check=False)


def handshake_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The reasons of the SCP's "TLS handshake with <peer> failed" warnings."""
    found = []
    for record in caplog.records:
        m = re.fullmatch(r"TLS handshake with 127\.0\.0\.1:\d+ failed: (.*)",
                         record.getMessage())
        if m and record.name == "bridge.worklist.scp" and record.levelno == logging.WARNING:
            found.append(m[1])
    return found


def test_findscu_over_mutual_tls(tls_scp, pki, tmp_path):
    done = findscu(tls_scp.port, tmp_path / "out", "+tls", str(pki.client.key),
                   str(pki.client.cert), "+cf", str(pki.ca))
    assert done.returncode == 0, done.stdout + done.stderr
    check_status(done.stdout + done.stderr)
    assert len(list((tmp_path / "out").glob("rsp*.dcm"))) == 1


def test_plain_findscu_on_the_tls_port_is_refused(tls_scp, tmp_path, caplog):
    done = findscu(tls_scp.port, tmp_path / "out")
    assert done.returncode != 0
    assert not list((tmp_path / "out").glob("rsp*.dcm"))
    assert "TLS handshake with 127.0.0.1" in caplog.text


def test_client_without_certificate_is_refused(tls_scp, pki, tmp_path, caplog):
    done = findscu(tls_scp.port, tmp_path / "out", "+tla", "+cf", str(pki.ca))
    assert not list((tmp_path / "out").glob("rsp*.dcm")), done.stdout  # see below
    assert handshake_failures(caplog) == ["PEER_DID_NOT_RETURN_A_CERTIFICATE"]


def test_client_certificate_from_another_ca_is_refused(tls_scp, pki, tmp_path, caplog):
    done = findscu(tls_scp.port, tmp_path / "out", "+tls", str(pki.outsider.key),
                   str(pki.outsider.cert), "+cf", str(pki.ca))
    # With TLS 1.3 the client learns of the rejected certificate only after it
    # considers the handshake done, so findscu's exit status depends on timing
    # (seen 0 under load); what must hold is that no answer came back.
    assert not list((tmp_path / "out").glob("rsp*.dcm")), done.stdout
    # The SCP refused it for the reason that matters: the chain did not verify.
    assert handshake_failures(caplog) == ["CERTIFICATE_VERIFY_FAILED"]


def client_context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    if with_cert:
        ctx.load_cert_chain(pki.client.cert, pki.client.key)
    return ctx


def test_pynetdicom_scu_over_tls_while_a_silent_peer_waits(tls_scp, pki):
    # A connection that never starts its handshake must not hold up others.
    with socket.create_connection(("127.0.0.1", tls_scp.port), timeout=30):
        ae = AE(ae_title="CT01")
        ae.add_requested_context(ModalityWorklistInformationFind)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", tls_scp.port, ae_title="MWLBRIDGE",
                             tls_args=(client_context(pki), "localhost"))
        assert assoc.is_established
        query = Dataset()
        query.PatientID = ""
        statuses = [s.Status for s, _ in assoc.send_c_find(query, ModalityWorklistInformationFind)]
        assoc.release()
    assert statuses == [0xFF00, 0x0000]


def test_pynetdicom_scu_without_tls_is_not_associated(tls_scp):
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", tls_scp.port, ae_title="MWLBRIDGE")
    assert not assoc.is_established


def test_tls_without_client_certificates_when_not_required(new_store, start_scp, pki):
    scp = start_scp(new_store([]), dicom=DicomSettings(
        port=0, tls=tls_settings(pki, require_peer_cert=False, ca_file=None)))
    ae = AE(ae_title="CT01")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE",
                         tls_args=(client_context(pki, with_cert=False), "localhost"))
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


@pytest.mark.parametrize(("change", "message"), [
    ({"cert_file": None}, "dicom.tls: a TLS listener needs cert_file and key_file"),
    ({"ca_file": None}, "dicom.tls: require_peer_cert (mutual TLS) needs ca_file"),
    ({"ca_file": Path("/nonexistent/ca.pem")},
     "dicom.tls.ca_file: /nonexistent/ca.pem is not a readable file"),
    ({"key_file": "OUTSIDER"}, "dicom.tls: cannot load cert_file"),
])
def test_bad_tls_settings_fail_at_construction(new_store, pki, change, message):
    if change.get("key_file") == "OUTSIDER":
        change = {"key_file": pki.outsider.key}  # a key that doesn't fit the certificate
    tls = tls_settings(pki).model_copy(update=change)
    with pytest.raises(TlsConfigError, match=re.escape(message)):
        WorklistSCP(new_store([]), DicomSettings(port=0, tls=tls), WorklistSettings())


def test_the_pdu_guard_reads_tls_connections_too(tls_scp, pki, caplog):
    # issue 10: the guard sits under TLS as well (GuardedSSLSocket): a bad calling AE
    # title gets its A-ASSOCIATE-RJ, a 4 GiB header is refused before its body.
    from . import pdus

    ctx = client_context(pki)
    for opening, expected in ((pdus.associate_rq(calling=b"EVIL\n"), b"\x03"),
                              (pdus.header(0x01, 0xFFFFFFFF) + b"\x00" * 65536, b"\x07")):
        raw = socket.create_connection(("127.0.0.1", tls_scp.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="localhost") as peer:
            peer.sendall(opening)
            assert pdus.read_pdu(peer)[:1] == expected
    assert "calling AE 'EVIL\\x0a' has a control character" in caplog.text
    assert "an A-ASSOCIATE-RQ of 4294967295 bytes" in caplog.text
