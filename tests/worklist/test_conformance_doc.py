"""docs/conformance-statement.md against the code: its tables must say what the SCP does."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydicom.datadict import dictionary_VR, keyword_for_tag

from bridge.worklist import scp
from bridge.worklist.access import AccessPolicy
from bridge.worklist.charset import python_codecs
from bridge.worklist.guard import PduLimits, PduStream
from bridge.worklist.query import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    SPS_SEQUENCE,
    UNABLE_TO_PROCESS,
    indexed_keys,
    matching_kinds,
)
from bridge.worklist.settings import DicomPeer, DicomSettings, WorklistSettings
from tests.doctables import markdown_table, tag_of

from . import pdus

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance-statement.md"


def table(header_start: str) -> list[list[str]]:
    return markdown_table(DOC, header_start)


def test_matching_key_table_matches_the_planner():
    rows = table("| Attribute | Tag | VR | Matching | Evaluated |")
    indexed = indexed_keys()
    seen = set()
    for name, tag_text, vr, matching, evaluated in rows:
        tag = tag_of(tag_text)
        path = (SPS_SEQUENCE, tag) if name.startswith(">") else (tag,)
        seen.add(path)
        assert vr == dictionary_VR(tag), name
        assert keyword_for_tag(tag), name
        assert tuple(m.strip() for m in matching.split(",")) == matching_kinds(vr), name
        if vr != "SQ":
            assert (evaluated == "index") == (path in indexed), name
    assert set(indexed) <= seen, "every indexed key is documented"


def test_status_table_lists_every_status_the_scp_sends():
    documented = {int(row[0], 16) for row in table("| Status | Meaning | When |")}
    sent = {scp.PENDING, scp.PENDING_UNSUPPORTED_KEYS, scp.SUCCESS, scp.CANCELLED,
            scp.STORE_FAILED, scp.ANSWER_FAILED, IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
            UNABLE_TO_PROCESS}
    assert documented == sent


def _number(cell: str) -> int:
    return int(cell.split()[0])


def test_rejection_table_matches_the_access_policy():
    rows = {row[0]: tuple(_number(c) for c in row[1:4])
            for row in table("| Situation | Result | Source | Reason | Setting |")}
    policy = AccessPolicy(DicomSettings(
        allowed_hosts=["10.0.0.0/8"], require_known_ae=True,
        known_aes={"CT01": DicomPeer(hosts=["10.0.0.1"], max_associations=1)}))

    def check(calling: str, called: str, address: str, active: int = 0) -> tuple[int, ...]:
        rj = policy.check(calling, called, address, active)
        assert rj is not None
        return rj.result, rj.source, rj.reason

    assert rows["calling AE title not a valid AE title"] == guard_rejection(b"CT\n01", b"MWLBRIDGE")
    assert rows["called AE title not a valid AE title"] == guard_rejection(b"CT01", b"MWL\\B")
    assert rows["calling AE title not a known AE"] == check("X", "MWLBRIDGE", "10.0.0.1")
    assert rows["known AE from an address not in its list"] == check("CT01", "MWLBRIDGE",
                                                                     "10.0.0.2")
    assert rows["called AE title is not ours"] == check("CT01", "PACS", "10.0.0.1")
    assert rows["too many associations of this calling AE"] == check("CT01", "MWLBRIDGE",
                                                                     "10.0.0.1", 1)
    # pynetdicom's own check for the total (acse.py: rejected transient, provider, limit).
    assert rows["too many associations in total"] == (2, 3, 2)
    assert policy.check("CT01", "MWLBRIDGE", "10.0.0.1", 0) is None


def guard_rejection(calling: bytes, called: bytes) -> tuple[int, ...]:
    """The A-ASSOCIATE-RJ guard.py sends for these AE title fields."""
    stream = PduStream(PduLimits())
    stream.feed(pdus.associate_rq(calling=calling, called=called))
    assert stream.refusal is not None and stream.refusal.rejected
    return tuple(stream.refusal.pdu[7:10])


def test_accept_table_matches_the_access_policy():
    rows = {row[0]: row[1] for row in table("| Closed at accept | Setting |")}
    assert set(rows) == {
        "peer address not in the allow-list",
        "peer address in no known AE's hosts, while every known AE has a hosts list",
        "any address, while no AE is known"}
    allow = AccessPolicy(DicomSettings(allowed_hosts=["10.0.0.0/8"]))
    assert allow.refuse_address("192.0.2.1") and allow.refuse_address("10.0.0.1") is None
    hosts = AccessPolicy(DicomSettings(require_known_ae=True,
                                       known_aes={"CT01": DicomPeer(hosts=["10.0.0.1"])}))
    assert hosts.refuse_address("10.0.0.2") and hosts.refuse_address("10.0.0.1") is None
    open_ae = AccessPolicy(DicomSettings(require_known_ae=True, known_aes={
        "CT01": DicomPeer(hosts=["10.0.0.1"]), "MR01": DicomPeer()}))
    assert open_ae.refuse_address("10.0.0.2") is None
    assert AccessPolicy(DicomSettings(require_known_ae=True)).refuse_address("10.0.0.1")
    assert AccessPolicy(DicomSettings()).refuse_address("192.0.2.1") is None


def _setting_default(name: str) -> object:
    section, _, key = name.strip("`").partition(".")
    model = {"dicom": DicomSettings, "worklist": WorklistSettings}[section]
    return model.model_fields[key].default


def test_limits_table_gives_the_settings_and_their_defaults():
    rows = table("| Limit | Setting | Default | What the peer gets |")
    assert len(rows) == 6
    for limit, setting, default, _ in rows:
        first = re.findall(r"`([\w.<>]+)`", setting)[0]
        value = _setting_default(first)
        expected = int(default.split()[0]) if default.split()[0].isdigit() else default
        if default.endswith(" s"):
            expected = float(default.split()[0])
        assert value == expected, (limit, first, value, default)


@pytest.mark.parametrize("row", table("| Defined term | Character set |"), ids=lambda r: r[0])
def test_every_documented_character_set_can_be_configured(row):
    term = row[0]
    assert python_codecs(term)
    DicomSettings(character_set=term)  # the config accepts it too
