"""Golden-case machinery: discovery, expected files (YAML and DICOM JSON), diffs, updates."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bridge.mapping import MappingSet, load_mappings
from bridge.mapping.cases import (
    Case,
    CaseError,
    HandWrittenCase,
    default_case_paths,
    discover,
    is_hand_written,
    load_expected,
    read_message,
    run_case,
    write_expected,
)
from bridge.yamlsrc import SourceError

from .mapping_helpers import DEFAULT_MAPPING, FIXTURES, MAPPINGS


@pytest.fixture(scope="module")
def ihe() -> MappingSet:
    return load_mappings([DEFAULT_MAPPING], default_station_aet="UNASSIGNED")


def case_from(tmp_path: Path, fixture: str, expected: str | None = None,
              suffix: str = ".expected.yaml") -> Case:
    message = tmp_path / "c.hl7"
    shutil.copy(FIXTURES / fixture, message)
    if expected is not None:
        (tmp_path / f"c{suffix}").write_text(expected, encoding="utf-8")
    return Case(message)


def run(mappings: MappingSet, case: Case):
    return run_case(mappings, case, default_charset="ascii", aliases={})


def test_discovery_finds_cases_beside_the_mappings(tmp_path) -> None:
    assert default_case_paths([MAPPINGS]) == [MAPPINGS / "cases"]
    assert default_case_paths([DEFAULT_MAPPING]) == [MAPPINGS / "cases"]
    assert default_case_paths([tmp_path]) == []
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "one.hl7").write_bytes(b"MSH|")
    (tmp_path / "a" / "two.hl7").write_bytes(b"MSH|")
    (tmp_path / "a" / "two.expected.yaml").write_text("items: []")
    found = discover([tmp_path / "a", tmp_path / "a" / "two.expected.yaml"])
    assert [c.message.name for c in found] == ["one.hl7", "two.hl7"]   # no duplicates
    with pytest.raises(CaseError, match="no such case file or folder"):
        discover([tmp_path / "missing"])


def test_a_matching_case_passes_and_ignore_skips_keywords(tmp_path, ihe) -> None:
    case = case_from(tmp_path, "orm-o01-no-zds-tz.hl7")
    first = run(ihe, case)
    assert (first.status, first.mapping, first.items) == ("new", "ihe-swf-orm-v231", 1)
    assert "run with --update" in first.detail
    assert first.actual is not None
    write_expected(case, first.actual)
    assert run(ihe, case).status == "pass"
    text = case.yaml_path.read_text(encoding="utf-8")
    assert text.startswith("# Golden case for c.hl7")
    # A wrong value for an ignored keyword does not count.
    edited = text.replace("mapping: ihe-swf-orm-v231",
                          "mapping: ihe-swf-orm-v231\nignore: [StudyInstanceUID]")
    edited = edited.replace("StudyInstanceUID: 2.25.", "StudyInstanceUID: 9.25.")
    case.yaml_path.write_text(edited, encoding="utf-8")
    assert run(ihe, case).status == "pass"


def test_a_difference_is_shown_as_a_unified_diff(tmp_path, ihe) -> None:
    case = case_from(tmp_path, "orm-o01-ihe-ct.hl7")
    write_expected(case, run(ihe, case).actual or {})
    text = case.yaml_path.read_text(encoding="utf-8")
    case.yaml_path.write_text(text.replace("Modality: CT", "Modality: MR")
                              .replace("  PatientSex: M\n", ""), encoding="utf-8")
    outcome = run(ihe, case)
    assert outcome.status == "fail"
    lines = outcome.detail.splitlines()
    assert lines[:2] == ["--- expected (c.expected.yaml)", "+++ actual"]
    assert "-  - Modality: MR" in lines and "+  - Modality: CT" in lines
    assert "+  PatientSex: M" in lines                 # an attribute the file lacks


def test_the_routed_mapping_is_compared(tmp_path, ihe) -> None:
    case = case_from(tmp_path, "orm-o01-ihe-ct.hl7")
    actual = dict(run(ihe, case).actual or {})
    write_expected(case, {**actual, "mapping": "site-ct"})
    outcome = run(ihe, case)
    assert outcome.status == "fail"
    assert outcome.detail == "routed to mapping 'ihe-swf-orm-v231', expected 'site-ct'"


def test_expected_rejections(tmp_path, ihe) -> None:
    case = case_from(tmp_path, "orm-long-accession.hl7",
                     "error: {ack: AE, code: 102, location: OBR^1^18}\n")
    assert run(ihe, case).status == "pass"
    case.yaml_path.write_text("error: {code: 101, attribute: PatientID}\n", encoding="utf-8")
    outcome = run(ihe, case)
    assert outcome.status == "fail"
    assert outcome.detail.splitlines() == ["error code: got 102, expected 101",
                                           "error attribute: got 'AccessionNumber', expected "
                                           "'PatientID'"]
    accepted = case_from(tmp_path, "orm-o01-ihe-ct.hl7", "error: {code: 101}\n")
    outcome = run(ihe, accepted)
    assert (outcome.status, outcome.detail) == (
        "fail", "accepted (1 item(s)), expected a rejection: code 101")
    rejected = case_from(tmp_path, "orm-missing-pid3.hl7", "items: []\n")
    outcome = run(ihe, rejected)
    assert outcome.status == "fail"
    assert outcome.detail.startswith("rejected: AE 101 at PID^1^3^1^1: Patient ID missing (PID-3)")


def test_dicom_json_expected_files(tmp_path, ihe) -> None:
    case = case_from(tmp_path, "orm-o01-ihe-ct.hl7")
    result = ihe.map(read_message(case.message, default_charset="ascii", aliases={}))
    items = [ds.to_json_dict() for ds in result.items]
    case.json_path.write_text(json.dumps({"mapping": "ihe-swf-orm-v231", "items": items}),
                              encoding="utf-8")
    assert run(ihe, case).status == "pass"
    items[0]["00080050"]["Value"] = ["OTHER"]
    case.json_path.write_text(json.dumps(items), encoding="utf-8")   # a bare list works too
    outcome = run(ihe, case)
    assert outcome.status == "fail"
    assert "-- AccessionNumber: OTHER" in outcome.detail.splitlines()


@pytest.mark.parametrize(("text", "line", "key", "problem"), [
    ("mapping: x\nitems:\n  - AccessionNumbr: A\n", 3, "items[0].AccessionNumbr",
     "unknown DICOM keyword 'AccessionNumbr'; did you mean AccessionNumber?"),
    ("items: []\nerror: {code: 101}\n", 1, "", "give items: (the expected worklist items) or "
     "error: (the expected rejection), not both"),
    ("items:\n  - ScheduledProcedureStepSequence: CT\n", 2,
     "items[0].ScheduledProcedureStepSequence", "is a sequence: give a list of items"),
    ("mapping: x\nitem: []\n", 2, "item", "Extra inputs are not permitted"),
    ("ignore: [Foo]\nitems: []\n", 1, "ignore[0]", "unknown DICOM keyword 'Foo'"),
    ("error: {code: wrong}\n", 1, "error.code", "valid integer"),
])
def test_malformed_expected_files_name_file_line_and_key(tmp_path, text, line, key,
                                                         problem) -> None:
    path = tmp_path / "c.expected.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SourceError) as info:
        load_expected(path)
    assert (info.value.path, info.value.line, info.value.key) == (str(path), line, key)
    assert problem in info.value.problem


def test_unreadable_cases_are_broken_not_failed(tmp_path, ihe) -> None:
    message = tmp_path / "two.hl7"
    message.write_bytes((FIXTURES / "orm-o01-ihe-ct.hl7").read_bytes() * 2)
    outcome = run(ihe, Case(message))
    assert outcome.status == "broken"
    assert outcome.detail == f"{message}: holds 2 messages; a case holds exactly one"
    junk = tmp_path / "junk.hl7"
    junk.write_bytes(b"GET / HTTP/1.1\r\n")
    assert run(ihe, Case(junk)).detail.startswith(f"{junk}: not an HL7 message")
    bad = case_from(tmp_path, "orm-o01-ihe-ct.hl7", "items: [1\n")
    outcome = run(ihe, bad)
    assert outcome.status == "broken" and "invalid YAML" in outcome.detail


@pytest.mark.parametrize("suffix", [".expected.yaml", ".expected.json"])
def test_update_refuses_to_overwrite_a_hand_written_case(tmp_path, ihe, suffix) -> None:
    """A regeneration cannot bless a regression: a failing hand-written case stays failing,
    its file untouched."""
    if suffix.endswith(".json"):
        text = json.dumps({"hand-written": True, "mapping": "ihe-swf-orm-v231", "items": []})
    else:
        text = "hand-written: true\nmapping: ihe-swf-orm-v231\nitems: []\n"
    case = case_from(tmp_path, "orm-o01-no-zds-tz.hl7", text, suffix=suffix)
    outcome = run(ihe, case)
    assert outcome.status == "fail" and outcome.actual is not None
    assert load_expected(case.expected_path()).hand_written is True
    with pytest.raises(HandWrittenCase, match=r"c\.expected\.(yaml|json): written by hand "
                                              r"\(hand-written: true\); --update does not "
                                              r"overwrite it"):
        write_expected(case, outcome.actual)
    assert (tmp_path / f"c{suffix}").read_text(encoding="utf-8") == text
    assert not (suffix.endswith(".json") and case.yaml_path.exists())  # no YAML beside it
    assert run(ihe, case).status == "fail"


def test_hand_written_is_a_boolean_and_generated_files_are_not_hand_written(tmp_path,
                                                                             ihe) -> None:
    case = case_from(tmp_path, "orm-o01-no-zds-tz.hl7")
    outcome = run(ihe, case)
    assert outcome.actual is not None
    write_expected(case, outcome.actual)
    assert not is_hand_written(case.yaml_path)
    assert load_expected(case.yaml_path).hand_written is False
    write_expected(case, outcome.actual)  # a generated file may be regenerated
    case.yaml_path.write_text("hand-written: yes please\nitems: []\n", encoding="utf-8")
    with pytest.raises(SourceError, match="hand-written: Input should be a valid boolean"):
        load_expected(case.yaml_path)
