"""Several called AE titles, each with its own worklist view (issue 14, item 7): one
daemon in place of several wlmscpfs instances. DCMTK's findscu calls each title."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread

from bridge.store.sqlite import SqliteStore
from bridge.worklist.access import AccessPolicy
from bridge.worklist.settings import CalledAeView, DicomPeer, DicomSettings
from tests.findstatus import check_status
from tests.worklist.conftest import DCMTK_ENV, FINDSCU
from tests.worklist.test_worklist_findscu import standard_items

DICOM = DicomSettings(port=0, called_aes={
    "MWL_CT": CalledAeView(modalities=["CT"]),
    "MWL_MR01": CalledAeView(stations=["MR01"]),
    "MWL_CT02": CalledAeView(stations=["CT02"], modalities=["CT"]),
})


def findscu(port: int, called: str, out: Path, calling: str = "CONSOLE") -> list[Dataset]:
    out.mkdir(parents=True)
    args = [FINDSCU, "-v", "-W", "-X", "-od", str(out), "-aet", calling, "-aec", called,
            "-k", "AccessionNumber", "127.0.0.1", str(port)]
    done = subprocess.run(args, env=DCMTK_ENV, capture_output=True, timeout=60, check=False)
    check_status((done.stdout + done.stderr).decode("utf-8", "replace"), "Success")
    return [dcmread(p, force=True) for p in sorted(out.glob("rsp*.dcm"))]


@pytest.mark.parametrize(("called", "accessions"), [
    ("MWLBRIDGE", {"A1", "A2", "A3", "A4", "A5", "A7"}),  # dicom.ae_title: everything
    ("MWL_CT", {"A1", "A2", "A4", "A5", "A7"}),
    ("MWL_MR01", {"A3"}),
    ("MWL_CT02", {"A5"}),
])
def test_each_called_ae_title_answers_its_own_view(tmp_path, start_scp,
                                                    item: Callable[..., Dataset], called,
                                                    accessions):
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    store.migrate()
    store.upsert_steps(standard_items(item))
    try:
        scp = start_scp(store, dicom=DICOM)
        answers = findscu(scp.port, called, tmp_path / "out")
        assert {str(a.AccessionNumber) for a in answers} == accessions
    finally:
        store.close()


def test_a_view_narrows_what_the_calling_ae_may_see():
    policy = AccessPolicy(DicomSettings(
        called_aes={"MWL_CT": CalledAeView(modalities=["CT"])},
        known_aes={"CT02": DicomPeer(stations=["CT02"])}))
    assert policy.view("MWL_CT") == CalledAeView(modalities=["CT"])
    assert policy.view("MWLBRIDGE") is None
    assert policy.check("CT02", "MWL_CT", "127.0.0.1", 0) is None
    rejection = policy.check("CT02", "OTHER", "127.0.0.1", 0)
    assert rejection is not None and "nor in dicom.called_aes" in rejection.why
