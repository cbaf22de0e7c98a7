"""`mapping explain`: routing verdicts, and each attribute's value, field and rule."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingSet, load_mappings
from bridge.mapping.explain import Row, explain, render

from .mapping_helpers import MAPPINGS, read_fixture


@pytest.fixture(scope="module")
def shipped() -> MappingSet:
    return load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")


def rows(shipped: MappingSet, fixture: str, item: int = 0) -> dict[str, Row]:
    exp = explain(shipped, read_fixture(fixture))
    out: dict[str, Row] = {}
    for r in exp.items[item].rows:  # the first row of each (indented) name
        out.setdefault(("  " * r.depth) + r.attribute, r)
    return out


def line(keyword: str, profile: str = "ihe-swf-orm-v231.yaml") -> int:
    text = (MAPPINGS / profile).read_text(encoding="utf-8").splitlines()
    return next(i for i, ln in enumerate(text, 1) if ln.lstrip().startswith(keyword))


def test_routing_says_why_each_mapping_did_or_did_not_take_the_message(shipped) -> None:
    exp = explain(shipped, read_fixture("orm-o01-ihe-ct.hl7"))
    assert [(r.mapping, r.verdict) for r in exp.routes] == [
        ("orm-no-ihe-extras", "no: match.when 'not OBR-18' is false"),
        ("ihe-swf-orm-v231", "takes it"),
        ("ihe-swfb-omi-v251", "not tried"),
        ("omg-o19-v251", "not tried"),
        ("siu-s12-v25", "not tried")]
    assert exp.mapping is not None and exp.mapping.name == "ihe-swf-orm-v231"
    assert exp.result is not None and exp.error is None
    adt = explain(shipped, read_fixture("adt-a01.hl7"))
    assert adt.routes[2].verdict == "no: message type ADT^A01 is not OMI^O23"
    assert adt.mapping is None and adt.items == []
    assert adt.error is not None and adt.error.code == 200


def test_each_attribute_names_its_field_and_rule(shipped) -> None:
    r = rows(shipped, "orm-o01-ihe-ct.hl7")
    patient_id = r["PatientID"]
    assert (patient_id.value, patient_id.field) == ("PAT10001", "PID-3.1")
    assert patient_id.rule == (f"line {line('PatientID:')}: from PID-3[where .4.1 = "
                               "$primary_authority].1 | PID-3.1 (2nd path)")
    priority = r["RequestedProcedurePriority"]
    assert (priority.value, priority.field) == ("STAT", "ORC-7.6")
    assert priority.rule.endswith("(1st path), map, 'S' -> 'STAT'")
    assert r["PregnancyStatus"].value == "(left out: empty)"
    assert r["PregnancyStatus"].rule.endswith("when: 'PV1-15[*] = B6' is false")
    assert r["OtherPatientIDsSequence"].value == "2 items"
    assert r["  PatientID"].field == "PID-3[2].1"           # relative path of the item
    aet = r["  ScheduledStationAETitle"]
    assert (aet.value, aet.field) == ("CT01", "ORC-18.1")
    assert aet.rule.endswith("station rule 'order' (priority 100): from ORC-18.1")
    assert r["  ScheduledStationName"].value == "CT Room 1"


def test_defaults_lookups_and_derived_uids_are_named(shipped) -> None:
    r = rows(shipped, "orm-noextras-two-procedures.hl7", item=1)
    modality = r["  Modality"]
    assert modality.value == "US"
    assert modality.rule.endswith("first: 2nd of 2 (from OBR-4.1, lookup procedures.modality, "
                                  "'US-ABD' -> 'US')")
    aet = r["  ScheduledStationAETitle"]
    assert aet.value == "US01\\US02"
    assert "station rule 'modality-table' (priority 10)" in aet.rule
    uid = r["StudyInstanceUID"]
    assert uid.value.startswith("2.25.")
    assert uid.rule.endswith("study_uid: derived from AccessionNumber")
    station = rows(shipped, "orm-o01-latin1-mr.hl7")["  ScheduledStationAETitle"]
    assert (station.value, station.field) == ("UNASSIGNED", "")
    assert "station default: const" in station.rule


def test_every_failing_attribute_is_shown_not_just_the_first(shipped) -> None:
    exp = explain(shipped, read_fixture("orm-long-accession.hl7"))
    [failed] = [r for r in exp.items[0].rows if r.error is not None]
    assert failed.attribute == "AccessionNumber"
    assert (failed.error.code, failed.error.location) == (102, "OBR^1^18")
    assert exp.error is not None and exp.error.code == 102
    text = render(exp)
    assert "AccessionNumber (OBR-18) is 20 characters; VR SH allows 16" in text
    assert text.rstrip().endswith("result   rejected: AE, error 102 at OBR^1^18: AccessionNumber "
                                  "(OBR-18) is 20 characters; VR SH allows 16; got "
                                  "'ACC-2026112800000902'")


def test_render_shows_one_table_per_item(shipped) -> None:
    text = render(explain(shipped, read_fixture("omi-o23-three-ipc.hl7")))
    assert "item 1 of 3 (ORC^1 > IPC^1)" in text and "item 3 of 3 (ORC^1 > IPC^3)" in text
    assert "result   accepted: 3 worklist items by mapping ihe-swfb-omi-v251" in text
    # Line breaks inside values are shown, not printed.
    assert "Fasting since midnight\\nGlucose below 11 mmol..." in text  # long ones are cut
