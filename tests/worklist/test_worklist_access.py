"""Association admission: the A-ASSOCIATE-RJ for each refusal, and the limits.

Peers connect from 127.0.0.1 or, to be a "wrong host", bind to 127.0.0.2
(Linux answers the whole 127/8 on loopback).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from pynetdicom import AE, Association
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification

from bridge.worklist.settings import DicomPeer, DicomSettings

from .conftest import DCMTK_ENV, ECHOSCU

OTHER_HOST = "127.0.0.2"


@pytest.fixture
def associate() -> Iterator[Callable[..., Association]]:
    opened: list[Association] = []

    def connect(port: int, calling: str = "CONSOLE", called: str = "MWLBRIDGE",
                source: str = "127.0.0.1") -> Association:
        ae = AE(ae_title=calling)
        ae.add_requested_context(Verification)
        ae.add_requested_context(ModalityWorklistInformationFind)
        ae.acse_timeout = 30
        assoc = ae.associate("127.0.0.1", port, ae_title=called, bind_address=(source, 0))
        opened.append(assoc)
        return assoc

    yield connect
    for assoc in opened:
        if assoc.is_established:
            assoc.release()


def rejection(assoc: Association) -> tuple[int, int, int]:
    assert assoc.is_rejected, "the association was not rejected"
    rj = assoc.acceptor.primitive
    return rj.result, rj.result_source, rj.diagnostic


def scp_with(new_store, start_scp, **dicom: object):
    return start_scp(new_store([]), dicom=DicomSettings(port=0, **dicom))


def test_unknown_calling_ae_is_rejected_calling_ae_not_recognised(
        new_store, start_scp, associate, caplog):
    scp = scp_with(new_store, start_scp, require_known_ae=True,
                   known_aes={"CT01": DicomPeer()})
    assert rejection(associate(scp.port, calling="STRANGER")) == (1, 1, 3)
    assert "calling AE 'STRANGER' is not in dicom.known_aes" in caplog.text
    known = associate(scp.port, calling="CT01")
    assert known.is_established
    assert known.send_c_echo().Status == 0x0000


def test_unknown_calling_ae_is_accepted_without_require_known_ae(
        new_store, start_scp, associate):
    scp = scp_with(new_store, start_scp, known_aes={"CT01": DicomPeer()})
    assert associate(scp.port, calling="STRANGER").is_established


def test_known_ae_from_the_wrong_host_is_rejected(new_store, start_scp, associate, caplog):
    scp = scp_with(new_store, start_scp, known_aes={"CT01": DicomPeer(hosts=["127.0.0.1/32"])})
    assert rejection(associate(scp.port, calling="CT01", source=OTHER_HOST)) == (1, 1, 3)
    assert f"calling AE 'CT01' is not allowed from {OTHER_HOST}" in caplog.text
    assert associate(scp.port, calling="CT01").is_established


def closed_at_accept(port: int, source: str) -> bytes:
    """Connect from ``source``, offer an A-ASSOCIATE-RQ header; what comes back."""
    with socket.create_connection(("127.0.0.1", port), timeout=10,
                                  source_address=(source, 0)) as peer:
        try:
            peer.sendall(b"\x01\x00\x00\x00\x00\x44" + b"\x00" * 0x44)
            return peer.recv(1024)
        except ConnectionResetError:
            return b""


def test_address_outside_allowed_hosts_is_closed_at_accept(
        new_store, start_scp, associate, caplog):
    # Closed before a byte is read (issue 10): no A-ASSOCIATE-RJ, the connection ends.
    scp = scp_with(new_store, start_scp, allowed_hosts=["127.0.0.1"])
    refused = associate(scp.port, source=OTHER_HOST)
    assert not refused.is_established and not refused.is_rejected
    assert closed_at_accept(scp.port, OTHER_HOST) == b""
    lines = [r for r in caplog.records if "closed at accept" in r.getMessage()]
    assert len(lines) == 2 and all(r.levelname == "WARNING" for r in lines)
    assert f"address {OTHER_HOST} is not in dicom.allowed_hosts" in lines[0].getMessage()
    assert associate(scp.port).is_established


def test_with_require_known_ae_only_the_known_aes_hosts_get_past_accept(
        new_store, start_scp, associate, caplog):
    scp = scp_with(new_store, start_scp, require_known_ae=True,
                   known_aes={"CT01": DicomPeer(hosts=["127.0.0.1/32"])})
    assert closed_at_accept(scp.port, OTHER_HOST) == b""
    assert "is not in the hosts of any AE of dicom.known_aes" in caplog.text
    assert associate(scp.port, calling="CT01").is_established


def test_a_known_ae_without_hosts_keeps_every_allowed_address_open(
        new_store, start_scp, associate):
    # Any address may be that AE's, so the A-ASSOCIATE-RQ decides (with its RJ).
    scp = scp_with(new_store, start_scp, require_known_ae=True,
                   known_aes={"CT01": DicomPeer(hosts=["127.0.0.1/32"]), "MR01": DicomPeer()})
    assert rejection(associate(scp.port, calling="CT01", source=OTHER_HOST)) == (1, 1, 3)
    assert associate(scp.port, calling="MR01", source=OTHER_HOST).is_established


def test_wrong_called_ae_is_rejected_called_ae_not_recognised(
        new_store, start_scp, associate, caplog):
    scp = scp_with(new_store, start_scp)
    assert rejection(associate(scp.port, called="ANY-SCP")) == (1, 1, 7)
    assert "called AE 'ANY-SCP' is not 'MWLBRIDGE'" in caplog.text


def test_called_ae_check_can_be_turned_off(new_store, start_scp, associate):
    scp = scp_with(new_store, start_scp, require_called_ae=False)
    assert associate(scp.port, called="ANY-SCP").is_established


def test_too_many_associations_of_one_ae(new_store, start_scp, associate, caplog):
    scp = scp_with(new_store, start_scp, known_aes={"CT01": DicomPeer(max_associations=2)})
    first, second = associate(scp.port, calling="CT01"), associate(scp.port, calling="CT01")
    assert first.is_established and second.is_established
    assert rejection(associate(scp.port, calling="CT01")) == (2, 3, 2)
    assert "calling AE 'CT01' already has 2 association(s), its limit" in caplog.text
    # Other AEs are not affected; a released association frees its place.
    assert associate(scp.port, calling="MR01").is_established
    first.release()
    # release() returns on the A-RELEASE-RP; the SCP's association thread ends after it
    # sent it. Wait for the SCP to count it gone (second CT01 and MR01 stay open).
    deadline = time.monotonic() + 30
    while scp.open_associations != 2:
        assert time.monotonic() < deadline, f"{scp.open_associations} associations still open"
        time.sleep(0.02)
    assert associate(scp.port, calling="CT01").is_established


def test_default_per_ae_limit_applies_to_every_ae(new_store, start_scp, associate):
    scp = scp_with(new_store, start_scp, max_associations_per_ae=1)
    assert associate(scp.port, calling="A1").is_established
    assert rejection(associate(scp.port, calling="A1")) == (2, 3, 2)
    assert associate(scp.port, calling="A2").is_established


def test_too_many_associations_in_total(new_store, start_scp, associate):
    scp = scp_with(new_store, start_scp, max_associations=2)
    assert associate(scp.port, calling="A1").is_established
    assert associate(scp.port, calling="A2").is_established
    assert rejection(associate(scp.port, calling="A3")) == (2, 3, 2)


@pytest.mark.parametrize(("args", "reason"), [
    (["-aet", "STRANGER", "-aec", "MWLBRIDGE"], "Calling AE Title Not Recognized"),
    (["-aet", "CT01", "-aec", "OTHER"], "Called AE Title Not Recognized"),
])
def test_dcmtk_sees_the_rejection_reason(new_store, start_scp, args, reason):
    scp = scp_with(new_store, start_scp, require_known_ae=True, known_aes={"CT01": DicomPeer()})
    done = subprocess.run([ECHOSCU, "-v", *args, "127.0.0.1", str(scp.port)], env=DCMTK_ENV,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "Association Rejected" in done.stdout + done.stderr
    assert reason in done.stdout + done.stderr
