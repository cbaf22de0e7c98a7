"""TLS private keys other users may read stop start-up (as OpenSSH does); the
certificate's expiry is logged, with a WARNING within 30 days (bridge/tls.py)."""

from __future__ import annotations

import logging
import os
import time

import pytest

from bridge.tls import (
    TlsConfigError,
    TlsSettings,
    certificate_expiry,
    check_key_private,
    client_context,
    log_expiry,
    server_context,
)
from tests.tlscerts import make_pki


@pytest.fixture
def pki(tmp_path):
    return make_pki(tmp_path / "pki")


def _server(pki) -> TlsSettings:
    return TlsSettings(enabled=True, cert_file=pki.server.cert, key_file=pki.server.key,
                       ca_file=pki.ca)


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o660, 0o600 | 0o020])
def test_a_key_others_may_read_stops_the_listener(pki, mode):
    pki.server.key.chmod(mode)
    with pytest.raises(TlsConfigError, match=(
            rf"^mllp.tls.key_file: the private key {pki.server.key} is readable by other "
            rf"users \(mode {mode:04o}\); fix: chmod 600 {pki.server.key}$")):
        server_context(_server(pki), "mllp.tls")


def test_a_client_key_others_may_read_stops_the_destination(pki):
    pki.client.key.chmod(0o644)
    tls = TlsSettings(enabled=True, cert_file=pki.client.cert, key_file=pki.client.key,
                      ca_file=pki.ca)
    with pytest.raises(TlsConfigError, match=r"^outbound.tls.key_file: .* \(mode 0644\)"):
        client_context(tls, "outbound.tls")


def test_a_private_key_loads(pki):
    pki.server.key.chmod(0o400)
    assert server_context(_server(pki), "dicom.tls") is not None


def test_group_read_is_allowed_only_for_a_key_root_owns(pki):
    key = pki.server.key
    key.chmod(0o640)
    if os.stat(key).st_uid == 0:
        check_key_private(key, "x")  # root:ssl-cert 0640, as Debian ships keys
        if os.getuid() == 0:
            os.chown(key, 1000, -1)
            with pytest.raises(TlsConfigError, match="mode 0640"):
                check_key_private(key, "x")
    else:
        with pytest.raises(TlsConfigError, match="mode 0640"):
            check_key_private(key, "x")


def test_expiry_is_read_from_the_certificate(pki):
    not_after = certificate_expiry(pki.server.cert)
    assert not_after is not None
    assert 364 * 86400 < not_after - time.time() <= 365 * 86400 + 60  # tests/tlscerts.py
    assert certificate_expiry(pki.server.key) is None  # not a certificate


def test_expiry_is_logged_and_warned_30_days_ahead(pki, caplog):
    caplog.set_level(logging.INFO, logger="bridge.tls")
    not_after = certificate_expiry(pki.server.cert)
    assert not_after is not None
    day = 86400.0
    for now, level, text in [
        (not_after - 31 * day, logging.INFO, "valid until"),
        (not_after - 29.5 * day, logging.WARNING, "in 29 day(s): renew cert_file"),
        (not_after + day, logging.WARNING, "EXPIRED on"),
    ]:
        caplog.clear()
        log_expiry(pki.server.cert, "dicom.tls", now=now)
        [record] = caplog.records
        assert record.levelno == level and text in record.getMessage(), record.getMessage()
        assert record.getMessage().startswith(f"dicom.tls: certificate {pki.server.cert}"
                                              if level == logging.INFO else "dicom.tls: the")


def test_the_listener_logs_its_certificate_at_start(pki, caplog):
    caplog.set_level(logging.INFO, logger="bridge.tls")
    server_context(_server(pki), "mllp.tls")
    [record] = caplog.records
    assert record.levelno == logging.INFO  # the test certificate lives a year
    assert record.getMessage().startswith(f"mllp.tls: certificate {pki.server.cert} valid "
                                          "until ")
    assert record.getMessage().endswith("(364 days)")
