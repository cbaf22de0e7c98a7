"""docs/conformance-statement.md, sections 2 and 7 (MPPS), against the code."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_description, keyword_for_tag, tag_for_keyword
from pydicom.tag import Tag
from pynetdicom import AE, build_context
from pynetdicom.status import GENERAL_STATUS

import bridge.mpps.validate as validate
from bridge.mpps import linking
from bridge.mpps.service import SUCCESS
from bridge.mpps.settings import MppsSettings
from bridge.steps import rules
from tests.doctables import markdown_table, tag_of

from .conftest import create_ds, final_ds

DOC = Path(__file__).resolve().parents[2] / "docs" / "conformance-statement.md"
UID = "1.2.826.0.1.3680043.8.498.77099"
MPPS_RETRIEVE = "1.2.840.10008.3.1.2.3.4"  # not served


def table(header_start: str) -> list[list[str]]:
    return markdown_table(DOC, header_start)


def keyword_of(name: str, tag_text: str) -> str:
    """The keyword of a documented attribute, checked against its name and tag."""
    tag = tag_of(tag_text)
    keyword = keyword_for_tag(tag)
    assert keyword, tag_text
    assert name.lstrip("> ") == dictionary_description(tag), (name, tag_text)
    return keyword


# --- section 2: SOP classes and transfer syntaxes, negotiated for real ------------------


def documented_transfer_syntaxes() -> list[str]:
    text = DOC.read_text(encoding="utf-8")
    paragraph = text[text.index("Transfer syntaxes accepted"):].split("\n\n")[0]
    return re.findall(r"\((1\.2\.840\.10008\.1\.2[0-9.]*)\)", paragraph)


def test_every_documented_sop_class_and_transfer_syntax_is_accepted(env):
    sop_classes = [row[1] for row in table("| SOP class | UID | Role |")]
    syntaxes = documented_transfer_syntaxes()
    assert len(syntaxes) == 4
    ae = AE(ae_title="CT01")
    for uid in [*sop_classes, MPPS_RETRIEVE]:
        for syntax in syntaxes:
            ae.requested_contexts.append(build_context(uid, [syntax]))
    assoc = ae.associate("127.0.0.1", env.scp.port, ae_title="MWLBRIDGE")
    assert assoc.is_established
    try:
        accepted = {(cx.abstract_syntax, cx.transfer_syntax[0])
                    for cx in assoc.accepted_contexts}
        rejected = {cx.abstract_syntax for cx in assoc.rejected_contexts}
    finally:
        assoc.release()
    assert accepted == {(uid, ts) for uid in sop_classes for ts in syntaxes}
    assert rejected == {MPPS_RETRIEVE}


# --- section 7.1 / 7.2: the attributes checked ------------------------------------------


def test_n_create_table_lists_the_attributes_checked():
    documented = []
    for name, tag_text, _ in table("| N-CREATE attribute | Tag | Required |"):
        keyword = keyword_of(name, tag_text)
        documented.append(f"{validate.SSAS}>{keyword}" if name.startswith(">") else keyword)
    assert set(documented) == {validate.SSAS, f"{validate.SSAS}>StudyInstanceUID",
                               *validate.CREATE_TYPE1}
    assert len(documented) == len(set(documented))


def test_n_set_table_lists_the_attributes_n_set_may_not_change():
    documented = [keyword_of(name, tag_text)
                  for name, tag_text in table("| Not settable by N-SET | Tag |")]
    assert documented == list(validate.NOT_SETTABLE)


def test_final_state_attributes_in_the_text_are_the_checked_ones():
    text = DOC.read_text(encoding="utf-8")
    for keyword in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
                    "PerformedSeriesSequence"):
        tag = Tag(tag_for_keyword(keyword))
        assert f"({tag.group:04X},{tag.element:04X})" in text, keyword
    merged = validate.merge(create_ds(), final_ds())
    for keyword in ("PerformedProcedureStepEndDate", "PerformedSeriesSequence"):
        broken = validate.merge(merged, Dataset())
        del broken[keyword]
        with pytest.raises(validate.MppsFailure, match=f"missing {keyword}"):
            validate.check_final(broken, final_state_checks=True)


# --- section 7.3: statuses ---------------------------------------------------------------


def code_statuses() -> set[int]:
    """Every status constant of validate.py (error IDs aside), plus success."""
    return {v for k, v in vars(validate).items()
            if k.isupper() and isinstance(v, int) and not k.startswith("ERROR_ID")} | {SUCCESS}


def test_status_table_lists_every_status_the_mpps_scp_sends():
    rows = table("| Status | Error ID | Meaning | When |")
    documented = {(int(status, 16), int(error_id, 16) if error_id else None)
                  for status, error_id, _, _ in rows}
    assert len(documented) == len(rows)
    assert {status for status, _ in documented} == code_statuses()
    assert {e for _, e in documented if e is not None} == {validate.ERROR_ID_FINAL}
    assert (validate.PROCESSING_FAILURE, validate.ERROR_ID_FINAL) in documented


def test_status_meanings_are_the_standard_names():
    for status, _, meaning, _ in table("| Status | Error ID | Meaning | When |"):
        category, name = GENERAL_STATUS[int(status, 16)]
        expected = name or category  # pynetdicom has no name for success
        # pynetdicom spells 0x0111 "Duplication SOP Instance"; PS3.7 says Duplicate.
        assert meaning.lower() == expected.lower().replace("duplication", "duplicate")


def test_a_request_for_another_sop_class_is_0118(env):
    """Unreachable through pynetdicom's negotiation; the handler is called directly."""
    create = SimpleNamespace(
        request=SimpleNamespace(AffectedSOPInstanceUID=UID,
                                AffectedSOPClassUID=MPPS_RETRIEVE),
        assoc=None, attribute_list=create_ds(env.steps[0]))
    status, reply = env.service._on_create(create)
    assert (status.Status, status.ErrorComment, reply) == (
        validate.NO_SUCH_SOP_CLASS, "only MPPS is served here", None)
    update = SimpleNamespace(
        request=SimpleNamespace(RequestedSOPInstanceUID=UID,
                                RequestedSOPClassUID=MPPS_RETRIEVE),
        assoc=None, modification_list=final_ds())
    status, _ = env.service._on_set(update)
    assert (status.Status, status.ErrorComment) == (validate.NO_SUCH_SOP_CLASS,
                                                   "only MPPS is served here")


# --- sections 7.4 / 7.5: linking and status ---------------------------------------------


def test_match_key_table_lists_every_key_and_the_default_order():
    rows = table("| Match key | Looks for | Default order |")
    assert [row[0].strip("`") for row in rows] == list(linking.MATCH_KEYS)
    default = sorted((int(row[2]), row[0].strip("`")) for row in rows if row[2])
    assert [key for _, key in default] == list(MppsSettings().match_keys) \
        == list(linking.DEFAULT_MATCH_KEYS)


def test_mpps_to_sps_to_orc5_table_is_the_code_s():
    rows = table("| MPPS status | SPS status | HL7 ORC-5 |")
    assert {mpps: (sps, orc5) for mpps, sps, orc5 in rows} == {
        mpps: (sps, rules.ORC5_FOR_SPS[sps]) for mpps, sps in rules.SPS_FOR_MPPS.items()}


def test_conflict_table_is_what_the_rule_decides():
    rows = table("| Item status before | IN PROGRESS | COMPLETED | DISCONTINUED |")
    assert {row[0] for row in rows} >= {rules.SCHEDULED, rules.STARTED, *rules.TERMINAL}
    for before, *cells in rows:
        for mpps_status, cell in zip(rules.MPPS_STATUSES, cells, strict=True):
            decision = rules.next_status_from_mpps(before, mpps_status)
            kept = cell.endswith("(kept)")
            assert (decision.status, decision.changed) == (cell.split()[0], not kept), \
                (before, mpps_status)
