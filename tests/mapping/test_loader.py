"""Load-time validation: every kind of problem is reported with file, line and key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from bridge.mapping import MappingLoadError, load_mappings
from bridge.yamlsrc import SourceError

from .mapping_helpers import DEFAULT_MAPPING, MAPPINGS, minimal


def load_errors(path: Path | list[Path], station: str = "UNASSIGNED") -> list[SourceError]:
    with pytest.raises(MappingLoadError) as info:
        load_mappings(path if isinstance(path, list) else [path], default_station_aet=station)
    assert str(info.value) == "\n".join(str(e) for e in info.value.errors)
    return info.value.errors


def line_of(path: Path, needle: str) -> int:
    for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if needle in line:
            return no
    raise AssertionError(f"{needle!r} not in {path}")


def expect(errors: list[SourceError], path: Path, needle: str, key: str, problem: str) -> None:
    """One of the errors names this file, the line holding `needle`, the key and the problem."""
    line = line_of(path, needle)
    for err in errors:
        if err.path == str(path) and err.line == line and err.key == key and problem in err.problem:
            text = str(err)
            assert text.startswith(f"{path}:{line}: {key}: ")
            return
    raise AssertionError(f"no error at {path}:{line} {key}: {problem}\n"
                         + "\n".join(str(e) for e in errors))


def test_the_shipped_mappings_load() -> None:
    mappings = load_mappings([MAPPINGS], default_station_aet="UNASSIGNED")
    # Routing order: the no-extras profile's priority puts it first (it only takes an
    # ORM without OBR-18); the rest in file-name order.
    assert mappings.names == ["orm-no-ihe-extras", "ihe-swf-orm-v231", "ihe-swfb-omi-v251",
                              "omg-o19-v251", "siu-s12-v25"]


def test_invalid_yaml(write_mapping) -> None:
    path = write_mapping("name: x\nmatch: {message_type: ORM^O01\nattributes: {}\n")
    [err] = load_errors(path)
    assert err.path == str(path) and err.line == 3
    assert "invalid YAML" in err.problem


def test_file_that_is_not_a_mapping(write_mapping) -> None:
    path = write_mapping("- name: x\n")
    [err] = load_errors(path)
    assert (err.path, err.line) == (str(path), 1)
    assert "a mapping file is a YAML mapping" in err.problem


def test_unknown_keys_everywhere(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientName: {frm: PID-5, as: PN}
        OtherPatientIDsSequence:
          for_each: PID-3[2..]
          items: {}
    """).replace("group_by: ORC", "group_by: ORC\nmatchs: {}\nstudy_uid: {mising: reject}")
        .replace("message_type: ORM^O01", "message_type: ORM^O01\n  sender: RIS"))
    errors = load_errors(path)
    expect(errors, path, "matchs:", "matchs", "Extra inputs are not permitted")
    expect(errors, path, "mising", "study_uid.mising", "Extra inputs are not permitted")
    expect(errors, path, "sender:", "match.sender", "Extra inputs are not permitted")


def test_unknown_keys_in_values_and_for_each(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientName: {frm: PID-5, as: PN}
        OtherPatientIDsSequence:
          for_each: PID-3[2..]
          items: {}
    """))
    errors = load_errors(path)
    expect(errors, path, "frm:", "attributes.PatientName.frm", "Extra inputs are not permitted")
    expect(errors, path, "items:", "attributes.OtherPatientIDsSequence.items",
           "Extra inputs are not permitted")
    expect(errors, path, "OtherPatientIDsSequence:", "attributes.OtherPatientIDsSequence.item",
           "Field required")


def test_missing_and_malformed_top_level_fields(write_mapping) -> None:
    path = write_mapping("""
        name: "bad name!"
        match:
          message_type: ORM-O01
        group_by: orc
        attributes: {}
    """)
    errors = load_errors(path)
    expect(errors, path, "name:", "name", "should match pattern")
    expect(errors, path, "message_type:", "match.message_type", "not like ORM^O01")
    expect(errors, path, "group_by:", "group_by[0]", "should match pattern")


def test_match_needs_a_message_type_or_fallback(write_mapping) -> None:
    path = write_mapping(minimal().replace("message_type: ORM^O01", "versions: [2.3.1]"))
    expect(load_errors(path), path, "match:", "match", "give message_type")


def test_bad_path_syntax(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientName: {from: PID-5.x, as: PN}
        IssuerOfPatientID: PID-3[where .4.1 = ].4
    """))
    errors = load_errors(path)
    expect(errors, path, "PID-5.x", "attributes.PatientName.from", "bad path")
    expect(errors, path, "IssuerOfPatientID", "attributes.IssuerOfPatientID",
           "expected a field path, a value or a $variable at column 20")


def test_paths_checked_against_hl7_structures(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientName: {from: PDI-5, as: PN}
        PatientComments: PID-45
        AdmissionID: PV1-19.12
        IssuerOfPatientID: PID-3.4.5
        StudyID: ZXY-99.7.3
        PatientWeight: OBX-5.2
    """).replace("message_type: ORM^O01", "message_type: ORM^O01\n  versions: ['2.3.1']"))
    errors = load_errors(path)
    expect(errors, path, "PDI-5", "attributes.PatientName.from",
           "segment PDI does not exist in HL7 2.3.1")
    expect(errors, path, "PID-45", "attributes.PatientComments", "PID has 30 fields in HL7 2.3.1")
    expect(errors, path, "PV1-19.12", "attributes.AdmissionID",
           "PV1-19 (CX) has 6 component(s) in HL7 2.3.1")
    expect(errors, path, "PID-3.4.5", "attributes.IssuerOfPatientID",
           "component 4 of PID-3 (CX) has 3 sub-component(s)")
    # Z-segments are free-form; OBX-5 is "varies": neither is flagged.
    assert not [e for e in errors if "ZXY" in e.problem or "OBX" in e.problem]
    assert len(errors) == 4


def test_versions_decide_which_fields_exist(write_mapping) -> None:
    text = minimal("PatientComments: PID-39")
    old = write_mapping(text.replace("message_type: ORM^O01",
                                     "message_type: ORM^O01\n  versions: ['2.3.1']"), "old.yaml")
    expect(load_errors(old), old, "PID-39", "attributes.PatientComments", "PID has 30 fields")
    new = write_mapping(text.replace("message_type: ORM^O01",
                                     "message_type: ORM^O01\n  versions: ['2.5']"), "new.yaml")
    assert load_mappings([new], default_station_aet="X").names == ["test"]


def test_unknown_dicom_keyword_and_forbidden_ones(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientsName: PID-5
        SpecificCharacterSet: {const: ISO_IR 192}
        PixelData: {const: x}
    """))
    errors = load_errors(path)
    expect(errors, path, "PatientsName", "attributes.PatientsName",
           "unknown DICOM keyword 'PatientsName'; did you mean PatientName?")
    expect(errors, path, "SpecificCharacterSet", "attributes.SpecificCharacterSet",
           "set by the worklist SCP")
    expect(errors, path, "PixelData", "attributes.PixelData", "cannot set")


def test_constants_defaults_and_map_values_are_checked_against_the_vr(write_mapping) -> None:
    path = write_mapping(minimal("""
        InstitutionName: {const: St. Mary}
        StudyID: {const: STUDY-2026-11-28-0001}
        PatientSex: {from: PID-8, map: {M: M, F: female}}
        PatientBirthDate: {from: PID-7, as: DA, default: 1975-03-12}
        RequestedProcedurePriority: {from: ORC-7.6, default: very urgent please}
        ScheduledStationAETitle: {const: [CT01, CT-ROOM-ONE-EAST-WING]}
        PatientSize: {const: [1.8, 1.9]}
    """))
    errors = load_errors(path)
    expect(errors, path, "StudyID", "attributes.StudyID.const",
           "'STUDY-2026-11-28-0001' is 21 characters; VR SH allows 16")
    expect(errors, path, "female", "attributes.PatientSex.map.F", "VR CS does not allow")
    expect(errors, path, "PatientBirthDate", "attributes.PatientBirthDate.default",
           "'1975-03-12' is not a date (VR DA is YYYYMMDD)")
    expect(errors, path, "very urgent", "attributes.RequestedProcedurePriority.default",
           "is 18 characters; VR SH allows 16")
    expect(errors, path, "CT-ROOM", "attributes.ScheduledStationAETitle.const[1]",
           "is 21 characters; VR AE allows 16")
    expect(errors, path, "PatientSize", "attributes.PatientSize.const",
           "2 values given; this attribute takes at most 1")
    assert len(errors) == 6


def test_lookup_problems(write_mapping, tmp_path) -> None:
    (tmp_path / "procedures.csv").write_text(
        "code,modality,station\nCT1,CT,CT01\nMR1,MR,MR-STATION-NORTH-WING\nCT1,CT,CT02\n",
        encoding="utf-8")
    (tmp_path / "ok.csv").write_text("code,modality,station\nCT1,CT,CT01\n"
                                     "MR1,MR,MR-STATION-NORTH-WING\n", encoding="utf-8")
    path = write_mapping(minimal("""
        Modality: {from: OBR-4.1, lookup: missing.modality}
        StudyDescription: {from: OBR-4.1, lookup: ok.description}
        ScheduledStationAETitle: {from: OBR-4.1, lookup: ok.station}
    """).replace("attributes:", "lookups:\n  gone: {file: tables/gone.csv}\n"
                 "  dup: {file: procedures.csv}\n  ok: {file: ok.csv}\nattributes:"))
    errors = load_errors(path)
    expect(errors, path, "gone:", "lookups.gone.file", "lookup file not found")
    expect(errors, path, "missing.modality", "attributes.Modality.lookup",
           "no lookup table 'missing'")
    expect(errors, path, "ok.description", "attributes.StudyDescription.lookup",
           "has no column 'description'")
    dup = tmp_path / "procedures.csv"
    assert any(e.path == str(dup) and e.line == 4 and e.key == "code"
               and "duplicate key (first on line 2)" in e.problem for e in errors)
    # A table value that breaks the attribute's VR is located in the table file.
    ok = tmp_path / "ok.csv"
    assert any(e.path == str(ok) and e.line == 3 and e.key == "MR1.station"
               and "is 21 characters; VR AE allows 16 (used for ScheduledStationAETitle)"
               in e.problem for e in errors)


def test_yaml_lookup_problems(write_mapping, tmp_path) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    path = write_mapping(minimal("PatientSex: {from: PID-8, lookup: l}").replace(
        "attributes:", "lookups:\n  l: {file: t/list.yaml}\nattributes:"))
    errors = load_errors(path)
    assert any(e.path == str(tmp_path / "t" / "list.yaml") and e.line == 1
               and "a YAML lookup table is a mapping" in e.problem for e in errors)


def test_variables(write_mapping) -> None:
    path = write_mapping(minimal("""
        IssuerOfPatientID: PID-3[where .4.1 = $authority].4
        InstitutionName: {const: $site}
    """).replace("group_by: ORC", "group_by: ORC\nvars:\n  default_station_aet: CT01"))
    errors = load_errors(path)
    expect(errors, path, "default_station_aet: CT01", "vars.default_station_aet",
           "set by the bridge configuration")
    expect(errors, path, "$authority", "attributes.IssuerOfPatientID",
           "unknown variable $authority")
    expect(errors, path, "$site", "attributes.InstitutionName.const", "unknown variable $site")


def test_default_station_aet_is_checked_where_used(write_mapping) -> None:
    path = write_mapping(minimal("ScheduledStationAETitle: {const: $default_station_aet}"))
    expect(load_errors(path, station="A-STATION-NAME-TOO-LONG"), path,
           "$default_station_aet", "attributes.ScheduledStationAETitle.const",
           "VR AE allows 16")


def test_conversion_misuse(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientBirthDate: {from: PID-7, as: TM}
        PatientName: {from: PID-5, as: PN, case: upper}
        ReferringPhysicianName: {const: x, as: PN_XCN}
        RequestedProcedureCodeSequence: {from: OBR-4, as: PN}
        ReasonForTheRequestedProcedure: {from: OBR-31, as: CODE}
        PatientComments: {from: PID-5, as: SOUNDEX}
    """))
    errors = load_errors(path)
    expect(errors, path, "PatientBirthDate", "attributes.PatientBirthDate.as",
           "as: TM makes a TM value but PatientBirthDate has VR DA")
    expect(errors, path, "PatientName", "attributes.PatientName.case",
           "case works on text and cannot be combined with as: PN")
    expect(errors, path, "ReferringPhysicianName", "attributes.ReferringPhysicianName.as",
           "reads the parts of a field; use it with from:")
    expect(errors, path, "RequestedProcedureCodeSequence",
           "attributes.RequestedProcedureCodeSequence",
           "is a sequence: give a list of items, a for_each, or a value with as: CODE")
    expect(errors, path, "ReasonForTheRequestedProcedure",
           "attributes.ReasonForTheRequestedProcedure.as", "makes a SQ value")
    expect(errors, path, "SOUNDEX", "attributes.PatientComments.as", "Input should be")


def test_value_shape_problems(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientComments: {from: PID-5, const: x}
        StudyID: {regex: '\\d+'}
        AdmissionID: {from: PV1-19, regex: '(a)(b)'}
        StudyDescription: {from: OBR-4.2, regex: '(unclosed'}
        InstitutionName: 42
        MedicalAlerts: [OBR-13]
        OtherPatientIDsSequence: PID-3
        ReferencedStudySequence: [PID-3]
        RequestedProcedureComments:
          first: [OBR-13, {from: NTE-3, required: true}]
        Modality: 0.1
    """))
    errors = load_errors(path)
    expect(errors, path, "PatientComments", "attributes.PatientComments",
           "give exactly one source: from, const, first, concat or hook (found from, const)")
    expect(errors, path, "StudyID", "attributes.StudyID", "give exactly one source")
    expect(errors, path, "AdmissionID", "attributes.AdmissionID.regex", "first group")
    expect(errors, path, "unclosed", "attributes.StudyDescription.regex",
           "bad regular expression")
    expect(errors, path, "InstitutionName", "attributes.InstitutionName",
           "for a constant write const: 42")
    expect(errors, path, "MedicalAlerts", "attributes.MedicalAlerts",
           "MedicalAlerts is not a sequence")
    expect(errors, path, "OtherPatientIDsSequence: PID-3", "attributes.OtherPatientIDsSequence",
           "is a sequence")
    expect(errors, path, "ReferencedStudySequence", "attributes.ReferencedStudySequence[0]",
           "a sequence item is a mapping")
    expect(errors, path, "first: [OBR-13", "attributes.RequestedProcedureComments.first[1]"
           ".required", "belongs on the attribute")
    expect(errors, path, "Modality: 0.1", "attributes.Modality",
           "YAML reads this as the number 0.1")


def test_conditions_and_for_each_paths(write_mapping) -> None:
    path = write_mapping(minimal("""
        PregnancyStatus: {const: 3, when: 'PV1-15 = = B6'}
        PatientComments: {from: PID-5, when: {PID-8: {a: b}}}
        OtherPatientIDsSequence:
          for_each: PID-3.1
          item: {PatientID: '.1'}
        ReferencedStudySequence:
          for_each: OBX(*)
          item:
            ReferencedSOPInstanceUID: .5
    """).replace("message_type: ORM^O01", "message_type: ORM^O01\n  when: 'MSH-9 ='"))
    errors = load_errors(path)
    expect(errors, path, "when: 'MSH-9", "match.when", "bad condition")
    expect(errors, path, "PV1-15 = = B6", "attributes.PregnancyStatus.when", "bad condition")
    expect(errors, path, "PatientComments", "attributes.PatientComments.when",
           "a condition value is a word")
    expect(errors, path, "for_each: PID-3.1", "attributes.OtherPatientIDsSequence.for_each",
           "not a component")
    expect(errors, path, "ReferencedSOPInstanceUID",
           "attributes.ReferencedStudySequence.item.ReferencedSOPInstanceUID",
           "YAML reads this as the number 0.5")


def test_record_shape(write_mapping) -> None:
    none = write_mapping(minimal().split("  ScheduledProcedureStepSequence:")[0], "none.yaml")
    expect(load_errors(none), none, "attributes:", "attributes",
           "needs ScheduledProcedureStepSequence with one item")
    two = write_mapping(minimal().replace(
        "      Modality: OBR-24", "      Modality: OBR-24\n    - Modality: OBR-24"), "two.yaml")
    expect(load_errors(two), two, "ScheduledProcedureStepSequence:",
           "attributes.ScheduledProcedureStepSequence", "give exactly one item")


def test_study_uid_policy_problems(write_mapping) -> None:
    path = write_mapping(minimal().replace(
        "group_by: ORC", "group_by: ORC\nstudy_uid:\n  missing: invent\n"))
    expect(load_errors(path), path, "missing: invent", "study_uid.missing", "Input should be")
    path = write_mapping(minimal().replace(
        "group_by: ORC", "group_by: ORC\nstudy_uid:\n  derive_from: [AccessionNumber, "
                         "PatientBirthDate]\n"), "derive.yaml")
    expect(load_errors(path), path, "derive_from", "study_uid.derive_from[1]",
           "PatientBirthDate is not an attribute this mapping sets")


def test_group_by_segment_is_checked(write_mapping) -> None:
    path = write_mapping(minimal().replace("group_by: ORC", "group_by: ORX"))
    expect(load_errors(path), path, "group_by", "group_by", "segment ORX does not exist")
    ok = write_mapping(minimal().replace("group_by: ORC", "group_by: ZGR"), "z.yaml")
    assert load_mappings([ok], default_station_aet="X").names == ["test"]


def test_files_folders_and_duplicate_names(tmp_path) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "a.yaml").write_text(minimal(name="same"), encoding="utf-8")
    (folder / "b.yml").write_text(minimal(name="same"), encoding="utf-8")
    (folder / "notes.txt").write_text("not a mapping", encoding="utf-8")
    (folder / "sub").mkdir()
    (folder / "sub" / "c.yaml").write_text("garbage: [", encoding="utf-8")  # sub-folders ignored
    errors = load_errors(folder)
    [dup] = errors
    assert (dup.path, dup.line, dup.key) == (str(folder / "b.yml"),
                                             line_of(folder / "b.yml", "name:"), "name")
    assert f"already used by {folder / 'a.yaml'}" in dup.problem

    empty = tmp_path / "empty"
    empty.mkdir()
    [err] = load_errors(empty)
    assert (err.path, err.problem) == (str(empty), "no *.yaml mapping files in folder")
    [err] = load_errors(tmp_path / "nope.yaml")
    assert err.problem == "no such mapping file or folder"
    [err] = load_errors([])
    assert err.problem == "no mapping files given"


def test_every_problem_of_every_file_is_reported(tmp_path) -> None:
    bad1 = tmp_path / "1.yaml"
    bad1.write_text(textwrap.dedent(minimal("""
        PatientsName: PID-5
        StudyID: {const: STUDY-2026-11-28-0001}
    """)), encoding="utf-8")
    bad2 = tmp_path / "2.yaml"
    bad2.write_text(minimal("AdmissionID: PV1-99", name="other"), encoding="utf-8")
    errors = load_errors([bad1, bad2])
    assert [(Path(e.path).name, e.key) for e in errors] == [
        ("1.yaml", "attributes.PatientsName"), ("1.yaml", "attributes.StudyID.const"),
        ("2.yaml", "attributes.AdmissionID")]


def test_attribute_errors_are_found_even_when_the_header_is_broken(write_mapping) -> None:
    path = write_mapping(minimal("PatientsName: PID-5").replace("name: test", "name: 'a b'"))
    errors = load_errors(path)
    assert {e.key for e in errors} == {"name", "attributes.PatientsName"}


def test_the_default_mapping_file_is_what_the_docs_describe() -> None:
    text = DEFAULT_MAPPING.read_text(encoding="utf-8")
    assert "name: ihe-swf-orm-v231" in text
    assert "group_by: ORC" in text


# -- station rules, join, lookups for several values, priorities -----------------------

STATION_MAPPING = minimal().replace("attributes:", """stations:
  rules:
    - name: ris
      priority: high
      aet: ORC-18.1
    - name: ris
      aet: CT01
    - name: ct
      when: 'OBR-24 = '
      aet: {const: CT01, required: true}
      station_name: {const: A VERY LONG STATION NAME}
      colour: blue
  default:
    aet: {from: OBR-99}
attributes:""").replace("      Modality: OBR-24", """      Modality: OBR-24
      ScheduledStationAETitle: ORC-18.1""")


def test_station_rule_problems(write_mapping) -> None:
    path = write_mapping(STATION_MAPPING)
    errors = load_errors(path)
    expect(errors, path, "priority: high", "stations.rules[0].priority",
           "Input should be a valid integer")
    expect(errors, path, "colour: blue", "stations.rules[2].colour",
           "Extra inputs are not permitted")
    # The model problems above stop the file before the rules are compiled; fix them.
    path = write_mapping(STATION_MAPPING.replace("priority: high", "priority: 9")
                         .replace("      colour: blue\n", ""), "fixed.yaml")
    errors = load_errors(path)
    expect(errors, path, "aet: CT01", "stations.rules[1].aet",
           "for a constant write {const: CT01}")
    expect(errors, path, "when: 'OBR-24 = '", "stations.rules[2].when", "bad condition")
    expect(errors, path, "required: true", "stations.rules[2].aet.required",
           "required does not apply to a station rule")
    expect(errors, path, "A VERY LONG STATION NAME", "stations.rules[2].station_name.const",
           "is 24 characters; VR SH allows 16")
    expect(errors, path, "OBR-99", "stations.default.aet.from", "OBR has 50 fields")
    expect(errors, path, "ScheduledStationAETitle: ORC-18.1",
           "attributes.ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
           "is set by stations: rules; remove it here or there")


def test_station_rule_names_are_unique(write_mapping) -> None:
    path = write_mapping(minimal().replace("attributes:", """stations:
  rules:
    - {name: ris, aet: ORC-18.1}
    - {name: ris, aet: ORC-19.1}
attributes:"""))
    errors = load_errors(path)
    expect(errors, path, "aet: ORC-19.1", "stations.rules[1].name",
           "rule name 'ris' is used twice")


def test_join_and_lookup_miss_misuse(write_mapping) -> None:
    path = write_mapping(minimal("""
        PatientName: {from: PID-5, as: PN, join: " "}
        RequestedProcedureCodeSequence: {from: OBR-4, as: CODE, join: ","}
        StudyID: {from: OBR-4.1, lookup_miss: error}
        PatientComments: {from: 'NTE(after PID)-99', join: " "}
    """))
    errors = load_errors(path)
    expect(errors, path, "PatientName:", "attributes.PatientName.join",
           "join: makes one text of several values; it does not combine with a sequence "
           "or with as: PN")
    expect(errors, path, "RequestedProcedureCodeSequence",
           "attributes.RequestedProcedureCodeSequence.join", "does not combine")
    expect(errors, path, "lookup_miss", "attributes.StudyID.lookup_miss",
           "lookup_miss: belongs with a lookup:")
    expect(errors, path, "NTE(after PID)-99", "attributes.PatientComments.from",
           "NTE(after PID)-99: NTE has 8 fields")


def test_multi_valued_lookup_values_are_checked_one_by_one(write_mapping, tmp_path) -> None:
    table = tmp_path / "stations.csv"
    table.write_text("code,aet\nCT,CT01\\CT02\nMR,MR01\\MR-STATION-NORTH-WING\n",
                     encoding="utf-8")
    path = write_mapping(minimal("""
        ScheduledStationAETitle: {from: OBR-24, lookup: stations.aet}
    """).replace("attributes:", "lookups:\n  stations: {file: stations.csv}\nattributes:"))
    [err] = load_errors(path)
    assert (err.path, err.line, err.key) == (str(table), 3, "MR.aet")
    assert err.problem == ("'MR-STATION-NORTH-WING' is 21 characters; VR AE allows 16 "
                           "(used for ScheduledStationAETitle)")


def test_match_priority_must_be_a_number(write_mapping) -> None:
    path = write_mapping(minimal().replace("message_type: ORM^O01",
                                           "message_type: ORM^O01\n  priority: first"))
    errors = load_errors(path)
    expect(errors, path, "priority: first", "match.priority", "valid integer")


def test_the_remaining_value_problems(write_mapping, tmp_path) -> None:
    (tmp_path / "sex.yaml").write_text("F: F\n", encoding="utf-8")
    path = write_mapping(minimal("""
        StudyDescription: {from: OBR-4.2, replace: ['(a)', '\\2']}
        RequestedProcedureCodeSequence:
          first: [OBR-4]
          as: CODE
        ReferencedStudySequence: {const: x, as: CODE}
        PatientSex: {from: PID-8, lookup: sex}
    """).replace("group_by: ORC", "group_by: ORC\nvars:\n  bad name: x\n"
                 "lookups:\n  sex: {file: sex.yaml, key: code}"))
    errors = load_errors(path)
    expect(errors, path, "bad name", "vars.bad name", "a variable name is letters, digits and _")
    expect(errors, path, "replace:", "attributes.StudyDescription.replace",
           "bad replacement: invalid group reference 2 at position 1")
    expect(errors, path, "    as: CODE", "attributes.RequestedProcedureCodeSequence.as",
           "as: CODE reads the parts of a field; use it with from:")
    expect(errors, path, "first: [OBR-4]", "attributes.RequestedProcedureCodeSequence.first[0]",
           "RequestedProcedureCodeSequence is a sequence: a value for it needs as: CODE or "
           "CODE_ALT")
    expect(errors, path, "ReferencedStudySequence", "attributes.ReferencedStudySequence.as",
           "use it with from:")
    [table] = [e for e in errors if e.path == str(tmp_path / "sex.yaml")]
    assert (table.line, table.key, table.problem) == (
        None, "", "key: is for CSV tables; a YAML table is keyed by its own keys")
