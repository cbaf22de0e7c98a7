"""build_query: C-FIND identifier -> indexed matches + post-filter."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import Tag

from bridge.store.names import normalise_name
from bridge.store.query import (
    AnyOf,
    Column,
    Exact,
    ItemPath,
    NamePath,
    NoneOf,
    Range,
    Wildcard,
)
from bridge.worklist import QueryError, build_query
from bridge.worklist.query import (
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    UNABLE_TO_PROCESS,
    QueryScope,
    wildcard,
)
from bridge.worklist.settings import WorklistSettings

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")

NO_HIDDEN = WorklistSettings(hidden_statuses=[])


def ident(sps: dict[str, object] | None = None, **top: object) -> Dataset:
    ds = Dataset()
    for keyword, value in top.items():
        setattr(ds, keyword, value)
    if sps is not None:
        item = Dataset()
        for keyword, value in sps.items():
            setattr(item, keyword, value)
        ds.ScheduledProcedureStepSequence = [item]
    return ds


def matches(identifier: Dataset, settings: WorklistSettings = NO_HIDDEN) -> set[object]:
    return set(build_query(identifier, settings).query.matches)


def sps_item(**keys: object) -> Dataset:
    item = Dataset()
    for keyword, value in keys.items():
        setattr(item, keyword, value)
    return item


# --- indexed keys ---

def test_universal_keys_give_no_match():
    identifier = ident({"ScheduledStationAETitle": "", "Modality": "",
                        "ScheduledProcedureStepStartDate": "",
                        "ScheduledProcedureStepStartTime": ""},
                       PatientName="", PatientID="", AccessionNumber="", StudyInstanceUID="")
    plan = build_query(identifier, NO_HIDDEN)
    assert plan.query.matches == ()
    assert plan.post_filter == ()


def test_single_values_top_level_and_in_sps_item():
    identifier = ident({"ScheduledStationAETitle": "CT01", "Modality": "CT",
                        "ScheduledProcedureStepID": "SPS1"},
                       PatientID="P1", IssuerOfPatientID="HOSP", AccessionNumber="A1",
                       RequestedProcedureID="RP1")
    assert matches(identifier) == {
        Exact(Column.STATION_AET, "CT01"), Exact(Column.MODALITY, "CT"),
        Exact(Column.SPS_ID, "SPS1"), Exact(Column.PATIENT_ID, "P1"),
        Exact(Column.ISSUER_OF_PATIENT_ID, "HOSP"), Exact(Column.ACCESSION_NUMBER, "A1"),
        Exact(Column.REQUESTED_PROCEDURE_ID, "RP1"),
    }


def test_patient_name_is_normalised_keeping_wildcards():
    # A one-group name in ASCII (after folding) is alphabetic, which starts the stored
    # "A=I=P": a prefix, so the name index serves it; the post-filter decides.
    assert matches(ident(PatientName="Mül*")) == {Wildcard(Column.PATIENT_NAME_NORM, "mul*")}
    assert matches(ident(PatientName="MÜLLER^H?NS")) == {
        Wildcard(Column.PATIENT_NAME_NORM, "muller^h?ns*")}
    assert matches(ident(PatientName="Müller^Hans")) == {
        Wildcard(Column.PATIENT_NAME_NORM, "muller^hans*")}
    # One group in kanji, kana or hangul may be any group: "*pattern*".
    assert matches(ident(PatientName="山田*")) == {Wildcard(Column.PATIENT_NAME_NORM, "*山田*")}
    assert matches(ident(PatientName="やまだ^たろう")) == {
        Wildcard(Column.PATIENT_NAME_NORM, "*やまだ^たろう*")}
    # With groups: the alphabetic group starts the stored name.
    assert matches(ident(PatientName="Yamada*=山田^太郎")) == {
        Wildcard(Column.PATIENT_NAME_NORM, "yamada*")}
    assert matches(ident(PatientName="=山田*")) == {
        Wildcard(Column.PATIENT_NAME_NORM, "*山田*")}


JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize(("query", "found"), [
    # one group: any group of the stored name, case-insensitive where case exists
    ("YAMADA^TAROU", True), ("yamada*", True), ("山田^太郎", True), ("山田*", True),
    ("やまだ*", True), ("*太郎", True), ("山本*", False), ("Tanaka*", False),
    # groups: each given group against the same group of the stored name
    ("Yamada*=山田^太郎", True), ("=山田^太郎", True), ("==やまだ^たろう", True),
    ("*=山田*=やま*", True), ("Yamada*=山本*", False), ("=やまだ^たろう", False),
    ("Tanaka*=山田^太郎", False),
])
def test_person_names_match_by_component_group(query: str, found: bool) -> None:
    plan = build_query(ident(PatientName=query), NO_HIDDEN)
    assert plan.accepts(stored(PatientName=JAPANESE)) is found
    # the store's pre-filter is a superset of the answer
    (pre,) = plan.query.matches
    assert isinstance(pre, Wildcard)
    if found:
        assert wildcard(pre.pattern).fullmatch(normalise_name(JAPANESE))


def test_a_query_group_the_stored_name_lacks_does_not_match() -> None:
    plan = build_query(ident(PatientName="Doe^John=山田^太郎"), NO_HIDDEN)
    assert not plan.accepts(stored(PatientName="Doe^John"))
    assert build_query(ident(PatientName="Doe*"), NO_HIDDEN).accepts(stored(PatientName="Doe^John"))


def test_exact_name_matching_keeps_case_in_every_group() -> None:
    exact = WorklistSettings(hidden_statuses=[], patient_name_matching="exact")
    assert build_query(ident(PatientName="Yamada*"), exact).accepts(stored(PatientName=JAPANESE))
    assert not build_query(ident(PatientName="YAMADA*"), exact).accepts(
        stored(PatientName=JAPANESE))
    assert build_query(ident(PatientName="=山田*"), exact).accepts(stored(PatientName=JAPANESE))


@pytest.mark.filterwarnings("ignore:The number of PN components")
def test_more_than_three_component_groups_is_refused() -> None:
    with pytest.raises(QueryError, match="more than three component groups"):
        build_query(ident(PatientName="a=b=c=d"), NO_HIDDEN)


def test_wildcards_on_string_keys_keep_case():
    identifier = ident({"ScheduledStationAETitle": "CT*", "Modality": "M?"}, PatientID="P1*")
    assert matches(identifier) == {
        Wildcard(Column.STATION_AET, "CT*"), Wildcard(Column.MODALITY, "M?"),
        Wildcard(Column.PATIENT_ID, "P1*")}


def test_a_lone_star_is_universal():
    assert matches(ident({"Modality": "*"}, PatientName="*", AccessionNumber="**")) == set()


@pytest.mark.parametrize(("value", "expected"), [
    ("20261128", Exact(Column.SPS_START_DATE, "20261128")),
    ("20261128-", Range(Column.SPS_START_DATE, "20261128", None)),
    ("-20261128", Range(Column.SPS_START_DATE, None, "20261128")),
    ("20261101-20261130", Range(Column.SPS_START_DATE, "20261101", "20261130")),
    ("2026.11.28", Exact(Column.SPS_START_DATE, "20261128")),
])
def test_date_matching(value, expected):
    assert matches(ident({"ScheduledProcedureStepStartDate": value})) == {expected}


# An upper bound of reduced precision ends at second 60 of its last minute: TM allows
# a leap second (PS3.5 table 6.2-1), and "0800" is the whole minute, 08:00:60 included.
@pytest.mark.parametrize(("value", "expected"), [
    ("080000", Exact(Column.SPS_START_TIME, "080000")),
    ("0800", Range(Column.SPS_START_TIME, "080000", "080060")),
    ("08", Range(Column.SPS_START_TIME, "080000", "085960")),
    ("0800-1000", Range(Column.SPS_START_TIME, "080000", "100060")),
    ("0800-", Range(Column.SPS_START_TIME, "080000", None)),
    ("-1000", Range(Column.SPS_START_TIME, None, "100060")),
    ("08:30:15.123", Exact(Column.SPS_START_TIME, "083015")),
])
def test_time_matching(value, expected):
    assert matches(ident({"ScheduledProcedureStepStartTime": value})) == {expected}


@pytest.mark.parametrize(("date", "time", "expected"), [
    ("20261101-20261130", "0800-1800",
     Range(Column.SPS_START, "20261101080000", "20261130180060")),
    ("20261128", "0800-1000", Range(Column.SPS_START, "20261128080000", "20261128100060")),
    ("20261128", "080000", Exact(Column.SPS_START, "20261128080000")),
    ("20261128-", "1000", Range(Column.SPS_START, "20261128100000", None)),
    ("-20261128", "-1000", Range(Column.SPS_START, None, "20261128100060")),
    ("20261128", "-1000", Range(Column.SPS_START, "20261128000000", "20261128100060")),
    ("20261128", "1000-", Range(Column.SPS_START, "20261128100000", "20261128235960")),
])
def test_date_and_time_combine_into_one_range(date, time, expected):
    identifier = ident({"ScheduledProcedureStepStartDate": date,
                        "ScheduledProcedureStepStartTime": time})
    assert matches(identifier) == {expected}


def test_open_range_on_both_sides_is_universal():
    assert matches(ident({"ScheduledProcedureStepStartDate": "-"})) == set()
    identifier = ident({"ScheduledProcedureStepStartDate": "-",
                        "ScheduledProcedureStepStartTime": "0800-1000"})
    assert matches(identifier) == {Range(Column.SPS_START_TIME, "080000", "100060")}
    identifier = ident({"ScheduledProcedureStepStartDate": "20261128",
                        "ScheduledProcedureStepStartTime": "-"})
    assert matches(identifier) == {Exact(Column.SPS_START_DATE, "20261128")}


def test_uid_list_matching():
    assert matches(ident(StudyInstanceUID="1.2.3")) == {
        Exact(Column.STUDY_INSTANCE_UID, "1.2.3")}
    assert matches(ident(StudyInstanceUID=["1.2.3", "1.2.4"])) == {
        AnyOf(Column.STUDY_INSTANCE_UID, ("1.2.3", "1.2.4"))}


# --- hidden statuses, cap ---

def test_hidden_statuses_apply_unless_a_status_is_asked():
    settings = WorklistSettings(hidden_statuses=["COMPLETED", "CANCELED"])
    assert matches(ident(PatientID="P1"), settings) == {
        Exact(Column.PATIENT_ID, "P1"), NoneOf(Column.SPS_STATUS, ("COMPLETED", "CANCELED"))}
    asked = ident({"ScheduledProcedureStepStatus": "COMPLETED"})
    assert matches(asked, settings) == {Exact(Column.SPS_STATUS, "COMPLETED")}
    universal = ident({"ScheduledProcedureStepStatus": ""})
    assert matches(universal, settings) == {NoneOf(Column.SPS_STATUS, ("COMPLETED", "CANCELED"))}


def test_cap_is_pushed_to_the_store_with_one_extra_row():
    plan = build_query(ident(PatientID="P1"), WorklistSettings(max_answers=5))
    assert plan.query.limit == 6
    assert plan.max_answers == 5
    # The default cap is 1,000 (issue 10); 0 turns it off.
    assert build_query(ident(PatientID="P1"), WorklistSettings()).query.limit == 1001
    assert build_query(ident(PatientID="P1"),
                       WorklistSettings(max_answers=0)).query.limit is None


def test_an_ae_cap_overrides_the_global_one():
    settings = WorklistSettings(max_answers=5)
    plan = build_query(ident(PatientID="P1"), settings, QueryScope(max_answers=2))
    assert (plan.query.limit, plan.max_answers) == (3, 2)
    unlimited = build_query(ident(PatientID="P1"), settings, QueryScope(max_answers=0))
    assert (unlimited.query.limit, unlimited.max_answers) == (None, 0)
    assert build_query(ident(PatientID="P1"), settings, QueryScope()).max_answers == 5


def test_cap_stays_out_of_the_store_when_a_post_filter_runs():
    plan = build_query(ident(PatientSex="F"), WorklistSettings(max_answers=5))
    assert plan.query.limit is None
    assert plan.max_answers == 5


# --- post-filter for keys without a column ---

def stored(**top: object) -> Dataset:
    sps = top.pop("sps", {})
    return ident(sps, **top)  # type: ignore[arg-type]


def test_non_indexed_keys_become_post_filter_conditions():
    plan = build_query(ident({"ScheduledPerformingPhysicianName": "jürg*"},
                             PatientSex="F", PatientBirthDate="19800101-19801231"), NO_HIDDEN)
    # The store pre-filters on the stored item (names on their normalised copy):
    # only candidate rows leave the database, and the post-filter stays exact.
    assert set(plan.query.matches) == {
        Exact(ItemPath((0x00100040,)), "F"),
        Range(ItemPath((0x00100030,)), "19800101", "19801231"),
        Wildcard(NamePath((0x00400100, 0x00400006)), "jurg*")}
    assert len(plan.post_filter) == 3
    good = stored(PatientSex="F", PatientBirthDate="19800615",
                  sps={"ScheduledPerformingPhysicianName": "Jürgen^Dr"})
    assert plan.accepts(good)
    assert not plan.accepts(stored(PatientSex="M", PatientBirthDate="19800615",
                                   sps={"ScheduledPerformingPhysicianName": "Jürgen^Dr"}))
    assert not plan.accepts(stored(PatientSex="F", PatientBirthDate="19810101",
                                   sps={"ScheduledPerformingPhysicianName": "Jürgen^Dr"}))
    assert not plan.accepts(stored(PatientSex="F", PatientBirthDate="19800615",
                                   sps={"ScheduledPerformingPhysicianName": "Meier^Dr"}))
    # A key the item has no value for does not match a non-empty query value.
    assert not plan.accepts(stored(PatientBirthDate="19800615",
                                   sps={"ScheduledPerformingPhysicianName": "Jürgen^Dr"}))


def test_post_filter_mixes_with_indexed_matches():
    plan = build_query(ident({"Modality": "CT", "ScheduledStationName": "ROOM?"}), NO_HIDDEN)
    # Scheduled Station Name is VM 1-n: only its first value would be seen in the
    # store, so it is left to the post-filter alone.
    assert plan.query.matches == (Exact(Column.MODALITY, "CT"),)
    located = build_query(ident({"Modality": "CT", "ScheduledProcedureStepLocation": "R?"}),
                          NO_HIDDEN)
    assert set(located.query.matches) == {
        Exact(Column.MODALITY, "CT"), Wildcard(ItemPath((0x00400100, 0x00400011)), "R?")}
    assert plan.accepts(stored(sps={"ScheduledStationName": "ROOM1", "Modality": "CT"}))
    assert not plan.accepts(stored(sps={"ScheduledStationName": "room1"}))


def test_invalid_stored_values_match_no_range_or_number():
    plan = build_query(ident(PatientBirthDate="19800101-", PatientBirthTime="08-",
                             PatientWeight="70"), NO_HIDDEN)
    corrupt = stored(PatientBirthDate="19800101", PatientBirthTime="0830")
    corrupt.add(DataElement(Tag(0x0010, 0x1030), "LO", "heavy"))
    assert not plan.accepts(corrupt)
    corrupt.PatientWeight = "70"
    assert plan.accepts(corrupt)
    corrupt.add(DataElement(Tag(0x0010, 0x0030), "LO", "someday"))
    assert not plan.accepts(corrupt)


def test_post_filter_wildcards_treat_other_characters_literally():
    plan = build_query(ident(StudyDescription="A.B*(1)"), NO_HIDDEN)
    assert plan.accepts(stored(StudyDescription="A.B head (1)"))
    assert not plan.accepts(stored(StudyDescription="AxB head (1)"))
    assert not plan.accepts(stored(StudyDescription="A.B head 1"))


def test_post_filter_on_nested_sequences_uid_time_and_numbers():
    code = Dataset()
    code.CodeValue = "CT-HEAD"
    identifier = ident({"ScheduledProtocolCodeSequence": [code]},
                       ReferringPhysicianName="", PatientBirthTime="0800-0900",
                       ReferencedStudySequence=[], PatientWeight="70",
                       StudyInstanceUID="", PatientComments="")
    identifier.add(DataElement(Tag(0x0020, 0x0052), "UI", "1.2.9\\1.2.8"))  # FrameOfRef
    plan = build_query(identifier, NO_HIDDEN)
    assert len(plan.post_filter) == 4
    other = Dataset()
    other.CodeValue = "CT-ABD"
    wanted = Dataset()
    wanted.CodeValue = "CT-HEAD"
    good = stored(PatientBirthTime="083000", PatientWeight="70.0", FrameOfReferenceUID="1.2.8",
                  sps={"ScheduledProtocolCodeSequence": [other, wanted]})
    assert plan.accepts(good)
    good.ScheduledProcedureStepSequence[0].ScheduledProtocolCodeSequence = [other]
    assert not plan.accepts(good)


def test_private_and_unknown_keys_are_ignored_and_reported():
    identifier = ident(PatientID="P1")
    identifier.add(DataElement(Tag(0x0009, 0x0010), "LO", "ACME"))
    identifier.add(DataElement(Tag(0x0009, 0x1001), "LO", "x"))
    identifier.add(DataElement(Tag(0x7777, 0x0010), "UN", b"x"))
    plan = build_query(identifier, NO_HIDDEN)
    assert plan.query.matches == (Exact(Column.PATIENT_ID, "P1"),)
    assert plan.post_filter == ()
    assert set(plan.ignored_keys) == {Tag(0x0009, 0x0010), Tag(0x0009, 0x1001),
                                      Tag(0x7777, 0x0010)}


def test_character_set_and_group_length_are_no_keys():
    identifier = ident(SpecificCharacterSet="ISO_IR 100", PatientID="P1")
    identifier.add(DataElement(Tag(0x0010, 0x0000), "UL", 12))
    plan = build_query(identifier, NO_HIDDEN)
    assert plan.query.matches == (Exact(Column.PATIENT_ID, "P1"),)
    assert plan.post_filter == ()
    assert plan.ignored_keys == ()


# --- errors ---

@pytest.mark.parametrize(("keyword", "value", "in_sps", "tag", "comment"), [
    ("ScheduledProcedureStepStartDate", "2026-11-28x", True, (0x0040, 0x0002),
     "is not a date or date range"),
    ("ScheduledProcedureStepStartDate", "20261131", True, (0x0040, 0x0002),
     "is not a date or date range"),
    ("ScheduledProcedureStepStartDate", "20261130-20261101", True, (0x0040, 0x0002),
     "is a reversed range"),
    ("ScheduledProcedureStepStartTime", "2500", True, (0x0040, 0x0003),
     "is not a time or time range"),
    ("ScheduledProcedureStepStartTime", "1000-0800", True, (0x0040, 0x0003),
     "is a reversed range"),
    ("ScheduledProcedureStepStartTime", "ab", True, (0x0040, 0x0003),
     "is not a time or time range"),
    ("PatientBirthDate", "yesterday", False, (0x0010, 0x0030), "is not a date or date range"),
    ("StudyInstanceUID", "1.2.*", False, (0x0020, 0x000D), "is not a UID list"),
    ("StudyInstanceUID", ["1.2.3", "01.2"], False, (0x0020, 0x000D), "is not a UID list"),
    ("PatientID", ["P1", "P2"], False, (0x0010, 0x0020), "has more than one value"),
])
def test_malformed_values_are_unable_to_process(keyword, value, in_sps, tag, comment):
    identifier = ident({keyword: value}) if in_sps else ident(**{keyword: value})
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    # Each branch names the offending attribute (Offending Element) and why (Error Comment).
    assert caught.value.status == UNABLE_TO_PROCESS
    assert caught.value.tag == Tag(*tag)
    assert caught.value.comment == f"{Tag(*tag)} {comment}"
    assert len(caught.value.comment) <= 64


def test_several_sps_items_are_unable_to_process():
    identifier = Dataset()
    identifier.ScheduledProcedureStepSequence = [sps_item(Modality="CT"), sps_item(Modality="MR")]
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    assert caught.value.status == UNABLE_TO_PROCESS
    assert caught.value.tag == Tag(0x0040, 0x0100)
    assert caught.value.comment == "(0040,0100) has more than one item"


def test_sps_key_that_is_no_sequence_is_unable_to_process():
    identifier = Dataset()
    identifier.add(DataElement(Tag(0x0040, 0x0100), "LO", "CT"))
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    assert caught.value.status == UNABLE_TO_PROCESS
    assert caught.value.tag == Tag(0x0040, 0x0100)
    assert caught.value.comment == "(0040,0100) is not a sequence"


def test_query_retrieve_level_does_not_match_the_sop_class():
    with pytest.raises(QueryError) as caught:
        build_query(ident(QueryRetrieveLevel="STUDY"), NO_HIDDEN)
    assert caught.value.status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert caught.value.tag == Tag(0x0008, 0x0052)
    assert caught.value.comment == "Query/Retrieve Level is not a worklist key"
    assert matches(ident(QueryRetrieveLevel="")) == set()


@pytest.mark.parametrize(("tag", "vr", "raw", "offending", "comment"), [
    # Rows: 3 bytes for a US; not decodable at all, so no element is named
    (Tag(0x0028, 0x0010), "US", b"\x01\x02\x03", None, "the identifier cannot be decoded"),
    # Patient's Weight: no number
    (Tag(0x0010, 0x1030), "DS", b"heavy ", Tag(0x0010, 0x1030),
     "(0010,1030) is not a decimal string (DS)"),
])
def test_undecodable_identifier_is_unable_to_process(tag, vr, raw, offending, comment):
    identifier = Dataset()
    identifier[tag] = RawDataElement(tag, vr, len(raw), raw, 0, False, True)
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    assert caught.value.status == UNABLE_TO_PROCESS
    assert (caught.value.tag, caught.value.comment) == (offending, comment)
