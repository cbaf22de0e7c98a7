"""The SCU's order of transfer syntaxes decides which one is accepted (issue 14), with
pynetdicom as the SCU; DCMTK's findscu does the same in tests/e2e/test_strict_peers.py."""

from __future__ import annotations

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import ModalityWorklistInformationFind  # type: ignore[attr-defined]

from bridge.store.sqlite import SqliteStore


@pytest.mark.parametrize(("proposed", "accepted"), [
    ([ExplicitVRLittleEndian, ImplicitVRLittleEndian], ExplicitVRLittleEndian),
    ([ImplicitVRLittleEndian, ExplicitVRLittleEndian], ImplicitVRLittleEndian),
    ([ExplicitVRLittleEndian], ExplicitVRLittleEndian),
])
def test_the_first_proposed_transfer_syntax_is_accepted(tmp_path, start_scp, proposed,
                                                         accepted):
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    store.migrate()
    try:
        scp = start_scp(store)
        ae = AE(ae_title="CT01")
        ae.add_requested_context(ModalityWorklistInformationFind, proposed)
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="MWLBRIDGE")
        assert assoc.is_established
        try:
            (context,) = assoc.accepted_contexts
            assert context.transfer_syntax == [accepted]
        finally:
            assoc.release()
    finally:
        store.close()
