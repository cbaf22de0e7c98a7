"""Access control configured in the daemon's YAML: unknown AE, wrong host, wrong called AE,
too many associations; each refused with its A-ASSOCIATE-RJ, the daemon serving on."""

from __future__ import annotations

import subprocess
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from .conftest import DCMTK, dcmtk_env, start_daemon, stop_daemon, write_config

ACCESS = """\
  require_known_ae: true
  known_aes:
    CT01: {hosts: [127.0.0.1], max_associations: 1}
    MR01: {}
"""


@pytest.fixture(scope="module")
def guarded_daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("access")
    cfg = write_config(tmp)
    cfg.write_text(cfg.read_text().replace("  ae_title: MWLBRIDGE\n",
                                           "  ae_title: MWLBRIDGE\n" + ACCESS))
    d = start_daemon(cfg, tmp / "data")
    yield d
    assert stop_daemon(d) == 0


def echoscu(d, *args: str) -> str:
    done = subprocess.run([str(DCMTK / "echoscu"), "-v", *args, "127.0.0.1", str(d.dicom_port)],
                          capture_output=True, text=True, timeout=60, env=dcmtk_env())
    return done.stdout + done.stderr + f"\nexit {done.returncode}"


def test_known_ae_is_served(guarded_daemon):
    assert "exit 0" in echoscu(guarded_daemon, "-aet", "MR01", "-aec", "MWLBRIDGE")


def test_unknown_ae_is_rejected(guarded_daemon):
    out = echoscu(guarded_daemon, "-aet", "STRANGER", "-aec", "MWLBRIDGE")
    assert "Reason: Calling AE Title Not Recognized" in out


def test_wrong_called_ae_is_rejected(guarded_daemon):
    out = echoscu(guarded_daemon, "-aet", "MR01", "-aec", "PACS")
    assert "Reason: Called AE Title Not Recognized" in out


def associate(d, calling: str, source: str = "127.0.0.1"):
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", d.dicom_port, ae_title="MWLBRIDGE",
                        bind_address=(source, 0))


def test_known_ae_from_the_wrong_host_is_rejected(guarded_daemon):
    assoc = associate(guarded_daemon, "CT01", source="127.0.0.2")
    assert assoc.is_rejected
    rj = assoc.acceptor.primitive
    assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 3)


def test_too_many_associations_of_one_ae(guarded_daemon):
    first = associate(guarded_daemon, "CT01")
    try:
        assert first.is_established
        out = echoscu(guarded_daemon, "-aet", "CT01", "-aec", "MWLBRIDGE")
        assert "Rejected Transient" in out and "Local Limit Exceeded" in out
    finally:
        first.release()
    # release() returns on the A-RELEASE-RP, before the daemon's association thread has
    # ended: until then the daemon may still count it and refuse, for the limit only.
    deadline = time.monotonic() + 30
    while "exit 0" not in (out := echoscu(guarded_daemon, "-aet", "CT01", "-aec", "MWLBRIDGE")):
        assert "Local Limit Exceeded" in out, out
        assert time.monotonic() < deadline, "the released association still holds the slot"
        time.sleep(0.05)
    assert guarded_daemon.alive()
