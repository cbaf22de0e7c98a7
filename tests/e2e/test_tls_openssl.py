"""The daemon's DICOM and MLLP TLS listeners as ``openssl s_client`` sees them (issue 19):
TLS 1.0 and 1.1 refused; on TLS 1.2 only forward-secret AEAD suites accepted, every
suite the local OpenSSL knows tried; TLS 1.3 works; each certificate's expiry is logged
at start."""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.tlscerts import make_pki

from .conftest import start_daemon, stop_daemon, write_config

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="needs the openssl command")


@pytest.fixture(scope="module")
def tls_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls-openssl")
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


def s_client(port: int, pki, *args: str) -> tuple[bool, str]:
    """Whether a handshake completes, and what s_client printed."""
    assert OPENSSL is not None
    done = subprocess.run(
        [OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", "-cert", str(pki.client.cert),
         "-key", str(pki.client.key), "-CAfile", str(pki.ca), "-verify_return_error",
         "-brief", *args],
        input=b"", capture_output=True, timeout=30)
    out = (done.stdout + done.stderr).decode("utf-8", "replace")
    return done.returncode == 0 and "Protocol version:" in out, out


def tls12_suites() -> list[str]:
    assert OPENSSL is not None
    listed = subprocess.run([OPENSSL, "ciphers", "-v", "ALL:COMPLEMENTOFALL:@SECLEVEL=0"],
                            capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[0] for line in listed.splitlines()
                   if line.split()[1] == "TLSv1.2"})


def forward_secret_aead(name: str) -> bool:
    return bool(re.match(r"^(ECDHE|DHE)-", name)) and ("GCM" in name or "CHACHA20" in name)


@pytest.mark.parametrize("listener", ["mllp", "dicom"])
@pytest.mark.parametrize("version", ["-tls1", "-tls1_1"])
def test_tls_1_0_and_1_1_are_refused(tls_daemon, listener, version):
    d, pki = tls_daemon
    port = d.mllp_port if listener == "mllp" else d.dicom_port
    ok, out = s_client(port, pki, version, "-cipher", "DEFAULT:@SECLEVEL=0")
    assert not ok, out
    # Refused by the server (a protocol_version alert from the DICOM listener; asyncio's
    # MLLP listener closes the connection), not by the local client's own policy.
    assert "no protocols available" not in out and "no ciphers available" not in out, out
    assert "alert protocol version" in out or "unexpected eof" in out, out


@pytest.mark.parametrize("listener", ["mllp", "dicom"])
def test_tls_1_2_accepts_only_forward_secret_aead_suites(tls_daemon, listener):
    d, pki = tls_daemon
    port = d.mllp_port if listener == "mllp" else d.dicom_port
    suites = tls12_suites()
    assert len(suites) > 20 and any(not forward_secret_aead(s) for s in suites)

    def attempt(suite: str) -> tuple[str, bool, str]:
        ok, out = s_client(port, pki, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")
        return suite, ok, out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, suites))
    accepted = {suite for suite, ok, _ in results if ok}
    assert accepted, results[:3]
    assert all(forward_secret_aead(s) for s in accepted), sorted(accepted)
    assert {"ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-RSA-CHACHA20-POLY1305"} <= accepted
    for refused in ("AES128-SHA256", "ECDHE-RSA-AES128-SHA256", "ECDHE-RSA-AES256-SHA"):
        assert refused not in accepted


@pytest.mark.parametrize("listener", ["mllp", "dicom"])
def test_tls_1_3_works(tls_daemon, listener):
    d, pki = tls_daemon
    ok, out = s_client(d.mllp_port if listener == "mllp" else d.dicom_port, pki, "-tls1_3")
    assert ok and "Protocol version: TLSv1.3" in out, out


def test_each_listener_logs_its_certificate_expiry_at_start(tls_daemon):
    d, pki = tls_daemon
    for section in ("mllp.tls", "dicom.tls"):
        lines = [line for line in d.log
                 if f"{section}: certificate {pki.server.cert} valid until " in line]
        assert lines and " INFO " in lines[0] and "(364 days)" in lines[0], d.log
