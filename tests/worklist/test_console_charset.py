"""Which set a console is answered in (issue 14): its own per-AE setting, else the set
its query names, else dicom.character_set. End to end with findscu in
tests/e2e/test_strict_peers.py."""

from __future__ import annotations

import pytest
from pydicom import Dataset

from bridge.worklist.access import AccessPolicy
from bridge.worklist.scp import answer_character_set
from bridge.worklist.settings import DicomPeer, DicomSettings

POLICY = AccessPolicy(DicomSettings(known_aes={
    "OWNSET": DicomPeer(character_set="ISO_IR 101"), "NOSET": DicomPeer()}))


def query(character_set: str | list[str] | None) -> Dataset:
    ds = Dataset()
    if character_set is not None:
        ds.SpecificCharacterSet = character_set
    ds.PatientName = ""
    return ds


@pytest.mark.parametrize(("ae", "named", "expected"), [
    ("OWNSET", "ISO_IR 100", "ISO_IR 101"),  # the AE's own setting wins
    ("NOSET", "ISO_IR 100", "ISO_IR 100"),  # known AE without a set: the query's
    ("UNKNOWN", "ISO_IR 100", "ISO_IR 100"),  # unknown AE: the query's
    ("UNKNOWN", ["", "ISO 2022 IR 87"], "\\ISO 2022 IR 87"),
    ("UNKNOWN", None, "ISO_IR 192"),  # names none: dicom.character_set
    ("UNKNOWN", "", "ISO_IR 192"),
    ("UNKNOWN", "NOT A SET", "ISO_IR 192"),  # unknown term: dicom.character_set
])
def test_answer_character_set(ae, named, expected):
    assert answer_character_set(query(named), POLICY.profile(ae)) == expected
