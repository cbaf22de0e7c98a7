"""Value specs, routing, groups and Study Instance UID policies, with small ad-hoc mappings."""

from __future__ import annotations

import pytest

from bridge.mapping import MappingError, MappingResult, MappingSet, OrderControl, load_mappings
from bridge.mapping import engine as engine_module

from .mapping_helpers import MSH, er7, load_text, minimal

ORDER = (
    MSH,
    "PID|1||PAT1^^^HOSP^MR~OLD7^^^OLD^PI||doe^john^^^dr||19750312|F|||Main St 1^^Town^^12345",
    "PV1|1|O|||||||||||||B6",
    "ORC|NW|PLC1|FIL1||SC||^^^202611280930^^S|||||||||||CT01^CT Room 1",
    "OBR|1|PLC1|FIL1|CT-HEAD-001^Head CT^LOCAL||||||||||||||ACC1|RP1|SPS1||||CT",
    "ZDS|1.2.3.4^RIS^Application^DICOM",
)


def order(*replace: tuple[str, str]) -> list[str]:
    segments = list(ORDER)
    for old, new in replace:
        segments = [s.replace(old, new) for s in segments]
    return segments


def step(mappings: MappingSet, *segments: str):
    return mappings.map(er7(*(segments or ORDER))).items[0]


def test_result_names_the_routed_mapping(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal(name="site-a"))
    result = mappings.map(er7(*ORDER))
    assert isinstance(result, MappingResult)
    assert result.mapping == "site-a"
    assert mappings.names == ["site-a"]


def test_const_default_case_and_multi_valued_constants(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        InstitutionName: {const: St. Mary}
        PatientSex: {from: PID-8, default: O}
        PatientComments: {from: ZZZ-1, default: none given}
        StudyDescription: {from: OBR-4.2, case: lower}
        AdmissionID: {from: PID-5.1, case: upper}
        ScheduledStationAETitle: {const: [CT01, CT02]}
        ScheduledStationName: {const: $default_station_aet}
    """), station="STATION9")
    ds = step(mappings)
    assert ds.InstitutionName == "St. Mary"
    assert (ds.StudyDescription, ds.AdmissionID) == ("head ct", "DOE")
    assert ds.PatientComments == "none given"
    assert list(ds.ScheduledStationAETitle) == ["CT01", "CT02"]
    assert ds.ScheduledStationName == "STATION9"
    # A default is a DICOM value: it is used when the source is empty.
    assert step(mappings, *order(("|F|", "||"))).PatientSex == "O"


def test_case_makes_values_valid_for_cs(write_mapping) -> None:
    lower = order(("||||CT", "||||ct"))
    upper = minimal().replace("Modality: OBR-24", "Modality: {from: OBR-24, case: upper}")
    assert step(load_text(write_mapping, upper), *lower).ScheduledProcedureStepSequence[
        0].Modality == "CT"
    plain = load_text(write_mapping, minimal(name="plain"))
    with pytest.raises(MappingError) as info:
        step(plain, *lower)
    assert (info.value.code, info.value.attribute, info.value.location) == (
        102, "Modality", "OBR^1^24")


def test_value_map_with_and_without_catch_all(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        PatientSex: {from: PID-8, map: {M: M, F: F, "*": O}}
        RequestedProcedurePriority: {from: ORC-7.6, map: {S: STAT, R: ROUTINE}}
    """))
    assert step(mappings).PatientSex == "F"
    assert step(mappings, *order(("|F|", "|X|"))).PatientSex == "O"
    assert step(mappings).RequestedProcedurePriority == "STAT"
    with pytest.raises(MappingError) as info:
        step(mappings, *order(("^^S|", "^^Q|")))
    err = info.value
    assert (err.code, err.location, err.attribute, err.ack_code) == (
        103, "ORC^1^7^1^6", "RequestedProcedurePriority", "AE")
    # An empty value skips the map (no table lookup of "").
    assert step(mappings, *order(("^^S|", "^^|"))).RequestedProcedurePriority == ""


def test_regex_extract_and_replace(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        StudyID: {from: OBR-4.1, regex: '-(\\d+)$'}
        CodeValue: {from: OBR-4.1, regex: '^[A-Z]+'}
        AdmissionID: {from: OBR-4.1, replace: ['-', '']}
        PatientComments: {from: OBR-4.1, regex: '^CT(X)?', default: no X}
    """))
    ds = step(mappings)
    assert ds.StudyID == "001"
    assert ds.CodeValue == "CT"
    assert ds.AdmissionID == "CTHEAD001"
    assert ds.PatientComments == "no X"          # the group did not take part: empty


def test_first_and_concat(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        ScheduledStationAETitle:
          first:
            - ZZZ-1
            - {const: MR01, when: 'OBR-24 = MR'}
            - {const: CT09, when: 'OBR-24 = CT'}
            - {const: $default_station_aet}
        PatientAddress:
          concat: [PID-11.1, PID-11.2, PID-11.5, PID-11.3]
          separator: ", "
        StudyDescription:
          concat: [OBR-4.2, {const: "(planned)"}]
    """))
    ds = step(mappings)
    assert ds.ScheduledStationAETitle == "CT09"
    assert ds.PatientAddress == "Main St 1, 12345, Town"     # empty parts are skipped
    assert ds.StudyDescription == "Head CT (planned)"
    assert step(mappings, *order(("||||CT", "||||MG"))).ScheduledStationAETitle == "UNASSIGNED"


def test_when_on_an_attribute_and_on_a_field_condition_mapping(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        PregnancyStatus: {const: 3, when: 'PV1-15[*] = B6', omit_empty: true}
        PatientComments: {from: PID-5.2, when: {ORC-1: [NW, XO], PID-8: F}}
    """))
    ds = step(mappings)
    assert ds.PregnancyStatus == 3
    assert ds.PatientComments == "john"
    other = step(mappings, *order(("|B6", "|B1"), ("|F|", "|M|")))
    assert "PregnancyStatus" not in other                      # omit_empty
    assert other.PatientComments == ""                         # present, empty (Type 2)


def test_lookup_tables_csv_and_yaml(write_mapping, tmp_path) -> None:
    (tmp_path / "procedures.csv").write_text(
        "code,modality,station,description\n"
        "CT-HEAD-001,CT,CT02,CT Head plain\n"
        "MR-KNEE-001,MR,MR01,MR Knee\n", encoding="utf-8")
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "sex.yaml").write_text("F: F\nM: M\nU: O\n", encoding="utf-8")
    mappings = load_text(write_mapping, minimal("""
        Modality: {from: OBR-4.1, lookup: procedures.modality}
        ScheduledStationAETitle:
          first:
            - ORC-19
            - {from: OBR-4.1, lookup: procedures.station}
        StudyDescription: {from: OBR-4.1, lookup: procedures.description}
        PatientSex: {from: PID-8, lookup: sex}
        ScheduledStationName: {from: OBR-4.1, lookup: procedures.station, default: NONE}
    """).replace("attributes:", "lookups:\n  procedures: {file: procedures.csv}\n"
                 "  sex: {file: tables/sex.yaml}\nattributes:"))
    ds = step(mappings)
    assert (ds.Modality, ds.ScheduledStationAETitle, ds.StudyDescription, ds.PatientSex) == (
        "CT", "CT02", "CT Head plain", "F")
    unknown = step(mappings, *order(("CT-HEAD-001", "XX-999")))
    assert unknown.Modality == ""                               # not in the table: empty
    assert unknown.ScheduledStationName == "NONE"               # ... so the default applies


def test_multi_valued_attribute_from_every_repetition(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        OtherPatientIDs: PID-3[*].1
        MedicalAlerts: PID-3[2..].4
    """))
    ds = step(mappings)
    assert list(ds.OtherPatientIDs) == ["PAT1", "OLD7"]
    assert ds.MedicalAlerts == "OLD"


def test_too_many_values_for_the_vm(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("ScheduledStationName: PID-3[*].1"))
    ds = step(mappings)
    assert list(ds.ScheduledStationName) == ["PAT1", "OLD7"]
    bounded = load_text(write_mapping, minimal("ShutterShape: PID-3[*].1", name="bounded"))
    assert list(step(bounded, *order(("OLD7^^^OLD^PI", "OLD7~CIRCULAR")))
                .ShutterShape) == ["PAT1", "OLD7", "CIRCULAR"]
    with pytest.raises(MappingError) as info:
        step(bounded, *order(("OLD7^^^OLD^PI", "A~B~C")))
    assert (info.value.code, info.value.attribute, info.value.location) == (
        102, "ShutterShape", "PID^1^3^1^1")
    assert "has 4 values; it takes at most 3" in info.value.text


def test_single_valued_attribute_takes_the_first_value(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("IssuerOfPatientID: PID-3[*].4"))
    assert step(mappings).IssuerOfPatientID == "HOSP"


def test_for_each_over_segments_and_code_items(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        PatientWeight: OBX(where -3.1 = 29463-7)-5
        ReferencedStudySequence:
          for_each: OBX(*)
          item:
            ReferencedSOPInstanceUID: '-5'
        RequestedProcedureCodeSequence:
          from: OBR-44[*] | OBR-4
          as: CODE
    """))
    ds = step(mappings, *ORDER, "OBX|1|NM|29463-7^Body weight^LN||81.5|kg",
               "OBX|2|ST|1.2^x^LN||1.2.3")
    assert ds.PatientWeight == 81.5
    assert [i.ReferencedSOPInstanceUID for i in ds.ReferencedStudySequence] == ["81.5", "1.2.3"]
    assert [c.CodeValue for c in ds.RequestedProcedureCodeSequence] == ["CT-HEAD-001"]
    two = step(mappings, *order(("||||CT", "||||CT" + "|" * 20 + "A1^One^L~B2^Two^L")))
    assert [c.CodeValue for c in two.RequestedProcedureCodeSequence] == ["A1", "B2"]


def test_truncate_only_when_asked(write_mapping) -> None:
    long_name = "Very Long Institution Name " * 3
    segs = order(("CT01^CT Room 1", f"CT01^{long_name}"))
    strict = load_text(write_mapping, minimal("InstitutionName: ORC-18.2"))
    with pytest.raises(MappingError) as info:
        step(strict, *segs)
    assert (info.value.code, info.value.location) == (102, "ORC^1^18^1^2")
    assert "is 80 characters; VR LO allows 64" in info.value.text
    cut = load_text(write_mapping, minimal("InstitutionName: {from: ORC-18.2, truncate: true}",
                                           name="cut"))
    assert step(cut, *segs).InstitutionName == long_name[:64].rstrip()


def test_required_from_a_first_reports_its_first_path(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        StudyID:
          first: [ZZZ-3.2, ZZY-1]
          required: true
    """))
    with pytest.raises(MappingError) as info:
        step(mappings)
    assert (info.value.code, info.value.location, info.value.attribute) == (
        101, "ZZZ^1^3^1^2", "StudyID")


def test_escaped_backslash_breaks_a_single_valued_vr(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("StudyDescription: OBR-4.2"))
    with pytest.raises(MappingError, match="backslash"):
        step(mappings, *order(("Head CT", "Head\\E\\CT")))


def test_no_group_by_makes_one_record(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace("group_by: ORC\n", ""))
    result = mappings.map(er7(*ORDER))
    assert len(result.steps) == 1
    assert result.items[0].AccessionNumber == "ACC1"


def test_no_group_by_rejects_a_second_order_instead_of_dropping_it(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace("group_by: ORC\n", ""))
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*ORDER, "ORC|NW|PLC2", "OBR|2||||||||||||||||||ACC2"))
    assert (info.value.code, info.value.location, info.value.ack_code) == (100, "ORC^2", "AE")
    assert info.value.text == (
        "the message has 2 ORC segments; mapping test reads one ORC per worklist item "
        "(one item per message), so the 2nd ORC of the message would be lost; send one ORC "
        "per message")


# -- Study Instance UID ------------------------------------------------------------

def uid_mapping(write_mapping, policy: str, extra: str = "StudyInstanceUID: ZDS-1.1") -> MappingSet:
    text = minimal(extra).replace(
        "group_by: ORC\n", f"group_by: ORC\nstudy_uid: {{missing: {policy}}}\n")
    return load_text(write_mapping, text)


def without_zds() -> list[str]:
    return [s for s in ORDER if not s.startswith("ZDS")]


def test_study_uid_from_the_message_wins(write_mapping) -> None:
    assert step(uid_mapping(write_mapping, "reject")).StudyInstanceUID == "1.2.3.4"


def test_study_uid_derive_is_deterministic_and_keyed(write_mapping) -> None:
    mappings = uid_mapping(write_mapping, "derive")
    a = step(mappings, *without_zds()).StudyInstanceUID
    assert a == step(mappings, *without_zds()).StudyInstanceUID
    assert a == engine_module.derive_uid("", ["ACC1", "RP1"])
    other = [s.replace("ACC1", "ACC2") for s in without_zds()]
    assert step(mappings, *other).StudyInstanceUID != a


def test_study_uid_namespace_separates_sites(write_mapping) -> None:
    text = minimal().replace(
        "group_by: ORC\n", "group_by: ORC\nstudy_uid: {namespace: site-b}\n")
    mappings = load_text(write_mapping, text)
    assert step(mappings, *without_zds()).StudyInstanceUID == engine_module.derive_uid(
        "site-b", ["ACC1", "RP1"])


def test_study_uid_generate_is_random(write_mapping) -> None:
    mappings = uid_mapping(write_mapping, "generate")
    a = step(mappings, *without_zds()).StudyInstanceUID
    b = step(mappings, *without_zds()).StudyInstanceUID
    assert a.startswith("2.25.") and b.startswith("2.25.") and a != b


def test_study_uid_reject(write_mapping) -> None:
    mappings = uid_mapping(write_mapping, "reject")
    with pytest.raises(MappingError) as info:
        step(mappings, *without_zds())
    assert (info.value.code, info.value.location, info.value.attribute) == (
        101, "ZDS^1^1^1^1", "StudyInstanceUID")


def test_study_uid_cannot_be_derived_without_keys(write_mapping) -> None:
    mappings = uid_mapping(write_mapping, "derive")
    segs = [s.replace("ACC1|RP1", "|") for s in without_zds()]
    with pytest.raises(MappingError) as info:
        step(mappings, *segs)
    assert (info.value.code, info.value.attribute) == (101, "StudyInstanceUID")
    assert "cannot be derived" in info.value.text


def test_bad_study_uid_in_the_message(write_mapping) -> None:
    mappings = uid_mapping(write_mapping, "derive")
    with pytest.raises(MappingError) as info:
        step(mappings, *order(("1.2.3.4^RIS", "1.2.03.4^RIS")))
    assert (info.value.code, info.value.location, info.value.attribute) == (
        102, "ZDS^1^1^1^1", "StudyInstanceUID")


# -- routing -----------------------------------------------------------------------

def routed(mappings: MappingSet, *segments: str) -> str:
    return mappings.map(er7(*segments)).mapping


def test_first_match_wins_and_fallback_comes_last(write_mapping, tmp_path) -> None:
    (tmp_path / "maps").mkdir()
    folder = tmp_path / "maps"
    (folder / "00-fallback.yaml").write_text(minimal(name="any").replace(
        "message_type: ORM^O01", "fallback: true"), encoding="utf-8")
    (folder / "10-careris.yaml").write_text(minimal(name="careris").replace(
        "message_type: ORM^O01", "message_type: ORM^O01\n  sending_application: CARERIS\n"
        "  sending_facility: [WEST, EAST]"), encoding="utf-8")
    (folder / "20-mr.yaml").write_text(minimal(name="mr-only").replace(
        "message_type: ORM^O01", "message_type: [ORM^*]\n  when: 'OBR-24 = MR'"),
        encoding="utf-8")
    (folder / "30-orm.yml").write_text(minimal(name="orm").replace(
        "message_type: ORM^O01", "message_type: ORM"), encoding="utf-8")
    mappings = load_mappings([folder], default_station_aet="UNASSIGNED")
    assert mappings.names == ["any", "careris", "mr-only", "orm"]
    assert routed(mappings, *ORDER) == "orm"
    west = MSH.replace("|RIS|HOSP|", "|CARERIS|WEST|")
    assert routed(mappings, west, *ORDER[1:]) == "careris"
    north = MSH.replace("|RIS|HOSP|", "|CARERIS|NORTH|")
    assert routed(mappings, north, *ORDER[1:]) == "orm"
    assert routed(mappings, *order(("||||CT", "||||MR"))) == "mr-only"
    adt = MSH.replace("ORM^O01", "ADT^A08")
    assert routed(mappings, adt, *ORDER[1:]) == "any"


def test_routing_error_for_a_sender_no_mapping_accepts(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace(
        "message_type: ORM^O01", "message_type: ORM^O01\n  sending_application: CARERIS"))
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*ORDER))
    assert (info.value.code, info.value.location, info.value.ack_code) == (200, "MSH^1^9", "AR")
    assert "sender" in info.value.text


def test_version_prefix_matching(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal().replace(
        "message_type: ORM^O01", "message_type: ORM^O01\n  versions: [2.5]"))
    assert routed(mappings, MSH.replace("|2.3.1", "|2.5.1"), *ORDER[1:]) == "test"
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*ORDER))
    assert info.value.code == 203


def test_an_internal_error_becomes_a_207_reject(write_mapping, monkeypatch) -> None:
    mappings = load_text(write_mapping, minimal())

    def broken(self, ctx, anchor):  # failure injection: a bug inside the engine
        raise RuntimeError("boom")

    monkeypatch.setattr(engine_module.ItemRule, "build", broken)
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*ORDER))
    err = info.value
    assert (err.code, err.ack_code) == (207, "AR")
    assert "RuntimeError" in err.log_text
    assert isinstance(err.__cause__, RuntimeError)


def test_mapping_is_pure_and_repeatable(default_set: MappingSet) -> None:
    msg = er7(*ORDER)
    first = default_set.map(msg).items[0]
    second = default_set.map(msg).items[0]
    assert first == second
    assert first is not second


# -- nested groups (OMI: one item per IPC inside each order) ------------------------

OMI = (
    "MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RAD|20261128083015||OMI^O23^OMI_O23|CTRL9|P|2.5.1",
    "PID|1||PAT9^^^HOSP^MR||ROE^ANNA||19800101|F",
    "ORC|NW|PLC1|FIL1",
    "TQ1|1||||||202611281000",
    "OBR|1|PLC1|FIL1|CTA^CT Angio^L",
    "IPC|ACC1|RP1|1.2.3.1|SPS1a|CT",
    "IPC|ACC1|RP1|1.2.3.1|SPS1b|CT",
    "ORC|NW|PLC2|FIL2",
    "TQ1|1||||||202611281100",
    "OBR|2|PLC2|FIL2|MRK^MR Knee^L",
    "IPC|ACC2|RP2|1.2.3.2|SPS2|MR",
)
OMI_MAPPING = """
name: omi
match:
  message_type: OMI^O23
  versions: ["2.5.1"]
group_by: [ORC, IPC]
attributes:
  PatientID: PID-3.1
  PlacerOrderNumberImagingServiceRequest: ORC-2.1
  AccessionNumber: IPC-1.1
  RequestedProcedureID: IPC-2.1
  StudyInstanceUID: IPC-3.1
  ScheduledProcedureStepSequence:
    - ScheduledProcedureStepID: IPC-4.1
      Modality: IPC-5.1
      ScheduledProcedureStepStartDate: {from: TQ1-7, as: DA}
      ScheduledProcedureStepStartTime: {from: TQ1-7, as: TM}
"""


def test_nested_groups_make_one_item_per_ipc(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    steps = mappings.map(er7(*OMI)).items
    assert [(s.PlacerOrderNumberImagingServiceRequest, s.AccessionNumber,
             s.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID,
             s.ScheduledProcedureStepSequence[0].Modality,
             s.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime)
            for s in steps] == [("PLC1", "ACC1", "SPS1a", "CT", "100000"),
                                ("PLC1", "ACC1", "SPS1b", "CT", "100000"),
                                ("PLC2", "ACC2", "SPS2", "MR", "110000")]
    assert {s.PatientID for s in steps} == {"PAT9"}


def test_an_order_without_ipc_is_a_segment_error(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    with pytest.raises(MappingError) as info:
        mappings.map(er7(*OMI[:-1]))
    assert (info.value.code, info.value.location) == (100, "ORC^2")
    assert "ORC group 2 has no IPC segment" in info.value.text


# -- provenance: each step says which mapping and group made it, and from which fields ---

def test_steps_name_their_mapping_group_and_order(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    result = mappings.map(er7(*OMI))
    assert result.items == [s.item for s in result.steps]
    assert [s.group for s in result.steps] == ["ORC^1 > IPC^1", "ORC^1 > IPC^2",
                                               "ORC^2 > IPC^3"]
    assert [s.order_control for s in result.steps] == [
        OrderControl("NW", "", 1), OrderControl("NW", "", 1), OrderControl("NW", "", 2)]
    assert result.steps[2].order_control.location == "ORC^2^1"
    assert {(s.mapping, s.mapping_path) for s in result.steps} == {
        ("omi", result.mapping_path)}
    assert result.mapping_path.name == "m.yaml"  # the file write_mapping wrote
    # The context the engine built the item in, not a copy of it.
    assert [s.context.scope["IPC"][0].seq for s in result.steps] == [1, 2, 3]


def test_steps_locate_their_values_in_their_own_group(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    steps = mappings.map(er7(*OMI)).steps
    assert [s.locate("AccessionNumber") for s in steps] == [
        "IPC^1^1^1^1", "IPC^2^1^1^1", "IPC^3^1^1^1"]
    # Inside the Scheduled Procedure Step item too, and outside the group (PID).
    assert steps[2].locate("ScheduledProcedureStepID") == "IPC^3^4^1^1"
    assert steps[2].locate("PatientID") == "PID^1^3^1^1"
    assert steps[0].locate("StudyDescription") == ""  # not mapped: no position to name
    assert all(s.from_message("StudyInstanceUID") for s in steps)


def test_a_value_the_message_left_empty_is_located_where_it_belongs(write_mapping) -> None:
    mappings = load_text(write_mapping, OMI_MAPPING)
    omi = [s.replace("IPC|ACC1|RP1|1.2.3.1|SPS1b", "IPC||RP1||SPS1b") for s in OMI]
    second = mappings.map(er7(*omi)).steps[1]
    assert second.locate("AccessionNumber") == "IPC^2^1^1^1"
    # Derived from the keys, not sent: the lifecycle treats a difference as expected.
    assert second.item.StudyInstanceUID.startswith("2.25.")
    assert not second.from_message("StudyInstanceUID")
    assert second.locate("StudyInstanceUID") == "IPC^2^3^1^1"


def test_a_message_without_groups_is_one_step_in_the_whole_message(write_mapping) -> None:
    # take_first: the author says a second ORC is expected and only the first counts.
    mappings = load_text(write_mapping, minimal().replace("group_by: ORC\n",
                                                          "take_first: [ORC]\n"))
    [only] = mappings.map(er7(*ORDER, "ORC|XO|PLC2||||CM")).steps
    assert only.group == ""
    assert only.order_control == OrderControl("NW", "SC", 1)  # the first ORC
    assert only.locate("AccessionNumber") == "OBR^1^18"


# -- join, lookup misses, priorities, several values -------------------------------

def test_join_makes_one_text_of_every_value(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("""
        RequestedProcedureComments: {from: 'NTE(after OBR)-3', join: "\\n", omit_empty: true}
        PatientComments: {from: 'PID-3[*].1', case: lower, join: ", "}
        OtherPatientIDs: {from: 'PID-3[*].4', join: "+"}
        StudyComments: {from: 'NTE(*)-3', join: " / ", default: none, when: 'ORC-1 = NW'}
    """))
    # The NTEs follow the OBR (ZDS comes last).
    notes = (*ORDER[:-1], "NTE|1||first note", "NTE|2||second \\T\\ last", ORDER[-1])
    ds = step(mappings, *notes)
    assert ds.RequestedProcedureComments == "first note\nsecond & last"
    assert ds.PatientComments == "pat1, old7"          # steps apply to each value
    assert ds.OtherPatientIDs == "HOSP+OLD"            # one value, though VM is 1-n
    assert ds.StudyComments == "first note / second & last"
    bare = step(mappings)
    assert "RequestedProcedureComments" not in bare     # nothing to join: omitted
    assert bare.StudyComments == "none"                 # ... or the default
    changed = step(mappings, *(s.replace("ORC|NW", "ORC|XO") for s in notes))
    assert changed.StudyComments == "none"              # when: false


def test_lookup_miss_error_names_the_table_and_field(write_mapping, tmp_path) -> None:
    (tmp_path / "procedures.csv").write_text("code,modality\nCT-HEAD-001,CT\n",
                                             encoding="utf-8")
    mappings = load_text(write_mapping, minimal("""
        Modality: {from: OBR-4.1, lookup: procedures.modality, lookup_miss: error}
    """).replace("attributes:", "lookups:\n  procedures: {file: procedures.csv}\nattributes:"))
    assert step(mappings).Modality == "CT"
    with pytest.raises(MappingError) as info:
        step(mappings, *order(("CT-HEAD-001", "PET-1")))
    err = info.value
    assert (err.code, err.location, err.attribute, err.ack_code) == (
        103, "OBR^1^4^1^1", "Modality", "AE")
    assert err.log_text == ("Modality (OBR-4.1) is not a key of lookup table procedures "
                            "(procedures.csv)")
    assert err.text.endswith("; got 'PET-1'")


def test_a_backslash_separates_values_of_a_multi_valued_attribute(write_mapping,
                                                                   tmp_path) -> None:
    (tmp_path / "stations.yaml").write_text("CT: CT01\\CT02\n", encoding="utf-8")
    mappings = load_text(write_mapping, minimal("""
        ScheduledStationAETitle: {from: OBR-24, lookup: stations}
        OtherPatientIDs: PID-11.5
    """).replace("attributes:", "lookups:\n  stations: {file: stations.yaml}\nattributes:"))
    ds = step(mappings, *order(("12345", "A\\E\\B")))
    assert list(ds.ScheduledStationAETitle) == ["CT01", "CT02"]
    assert list(ds.OtherPatientIDs) == ["A", "B"]


def test_a_variable_alone_is_a_constant(write_mapping) -> None:
    mappings = load_text(write_mapping, minimal("ScheduledStationName: $default_station_aet"),
                         station="ST9")
    assert step(mappings).ScheduledStationName == "ST9"


def test_priority_comes_before_file_order(tmp_path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "a-general.yaml").write_text(minimal(name="general"), encoding="utf-8")
    (folder / "b-special.yaml").write_text(minimal(name="special").replace(
        "message_type: ORM^O01", "message_type: ORM^O01\n  priority: 5\n"
        "  when: 'OBR-24 = MR'"), encoding="utf-8")
    (folder / "c-fallback.yaml").write_text(minimal(name="last").replace(
        "message_type: ORM^O01", "fallback: true\n  priority: 99"), encoding="utf-8")
    mappings = load_mappings([folder], default_station_aet="UNASSIGNED")
    # Priority orders the set; a fallback stays last whatever its priority.
    assert mappings.names == ["last", "special", "general"]
    assert routed(mappings, *order(("||||CT", "||||MR"))) == "special"
    assert routed(mappings, *ORDER) == "general"
    assert routed(mappings, MSH.replace("ORM^O01", "ADT^A08"), *ORDER[1:]) == "last"
