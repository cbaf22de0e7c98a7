"""bridge/tls.py and the new config sections: every bad setting named, at start-up."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.settings import ConfigError, load_settings
from bridge.tls import TlsConfigError, TlsSettings, client_context, server_context
from tests.tlscerts import make_pki

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_disabled_tls_builds_no_context():
    assert server_context(TlsSettings(), "x") is None
    assert client_context(TlsSettings(), "x") is None


def test_client_cert_without_key_is_an_error(pki):
    tls = TlsSettings(enabled=True, cert_file=pki.client.cert, ca_file=pki.ca)
    with pytest.raises(TlsConfigError, match=r"outbound\.tls: cert_file and key_file go together"):
        client_context(tls, "outbound.tls")


def test_server_context_is_mutual_by_default(pki):
    import ssl
    ctx = server_context(TlsSettings(enabled=True, cert_file=pki.server.cert,
                                     key_file=pki.server.key, ca_file=pki.ca), "dicom.tls")
    assert ctx is not None
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(("yaml", "message"), [
    ("dicom:\n  allowed_hosts: [ct-room-1]\n",
     "dicom.allowed_hosts: Value error, 'ct-room-1' is not an IP address or CIDR network"),
    ("dicom:\n  character_set: ISO_IR 999\n",
     "dicom.character_set: Value error, unknown Specific Character Set term 'ISO_IR 999'"),
    ("dicom:\n  known_aes:\n    THIS_AE_TITLE_IS_TOO_LONG: {}\n",
     "dicom.known_aes: Value error, an AE title is 1-16 ASCII characters"),
    ("dicom:\n  known_aes:\n    CT01: {unencodable: drop}\n",
     "dicom.known_aes.CT01.unencodable"),
    ("mllp:\n  allow:\n    senders: [{facility: HOSP}]\n",
     "mllp.allow.senders[0].application: Field required"),
])
def test_bad_access_settings_are_located(tmp_path, yaml, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, {})
    assert message in str(info.value)


def test_tls_paths_resolve_against_the_config_folder(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dicom:\n  tls: {cert_file: tls/a.crt, key_file: /abs/a.key}\n")
    s = load_settings(cfg, {})
    assert s.dicom.tls.cert_file == tmp_path / "tls" / "a.crt"
    assert s.dicom.tls.key_file == Path("/abs/a.key")


def test_check_config_reports_a_missing_certificate(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"mapping:\n  paths: [{REPO / 'mappings'}]\n"
                   "mllp:\n  tls: {enabled: true, cert_file: nope.crt, key_file: nope.key,"
                   " require_peer_cert: false}\n")
    done = subprocess.run([sys.executable, "-m", "bridge", "--config", str(cfg), "check-config"],
                          capture_output=True, text=True, timeout=60, cwd=REPO)
    assert done.returncode == 2
    assert f"TLS configuration error: mllp.tls.cert_file: {tmp_path / 'nope.crt'} is not a " \
           "readable file" in done.stderr
