"""Edge cases of the C-FIND matching rules (PS3.4 C.2.2.2) as a modality console
meets them: reduced-precision and open time ranges and their inclusive ends, the
limits of a valid DA/TM/UI value, UID lists as SCUs pad them, multi-valued and
empty stored values, name component groups, and sequence items.

Everything goes through ``build_query`` and ``PlannedQuery.accepts`` (the
post-filter), the path the SCP takes for keys without an indexed column, or
through the store matches it plans for indexed keys. Pure and fast: no association,
and a store (SQLite) only where the answer is the store's own (the SPS start).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag, Tag

from bridge.store.query import AnyOf, Column, Exact, Range
from bridge.store.sqlite import SqliteStore
from bridge.worklist.query import UNABLE_TO_PROCESS, QueryError, build_query
from bridge.worklist.settings import WorklistSettings

pytestmark = pytest.mark.filterwarnings(
    "ignore:Invalid value for VR", "ignore:The value length", "ignore:Values for elements")

NO_HIDDEN = WorklistSettings(hidden_statuses=[])
PATIENT_BIRTH_DATE = Tag(0x0010, 0x0030)
PATIENT_BIRTH_TIME = Tag(0x0010, 0x0032)
SPS_END_TIME = Tag(0x0040, 0x0005)
STUDY_INSTANCE_UID = Tag(0x0020, 0x000D)


def dataset(**keywords: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return ds


def with_sps(sps: Dataset, **top: object) -> Dataset:
    ds = dataset(**top)
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def accepts(identifier: Dataset, item: Dataset,
            settings: WorklistSettings = NO_HIDDEN) -> bool:
    return build_query(identifier, settings).accepts(item)


def refusal(identifier: Dataset) -> QueryError:
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    assert caught.value.status == UNABLE_TO_PROCESS
    return caught.value


# --- TM: reduced precision, fractions, open ranges, inclusive ends ---

@pytest.mark.parametrize(("query", "stored", "found"), [
    # "10" is the whole hour 10:00:00 to 10:59:59
    ("10", "100000", True), ("10", "105959", True),
    ("10", "095959", False), ("10", "110000", False),
    # "1015" is the whole minute
    ("1015", "101500", True), ("1015", "101559", True),
    ("1015", "101459", False), ("1015", "101600", False),
    # a range includes both ends, the high one widened to its minute
    ("1015-1030", "101500", True), ("1015-1030", "103059", True),
    ("1015-1030", "101459", False), ("1015-1030", "103100", False),
    # open ranges
    ("1000-", "100000", True), ("1000-", "235959", True), ("1000-", "095959", False),
    ("-1000", "000000", True), ("-1000", "100059", True), ("-1000", "100100", False),
    # a full-precision single value is one second; a fraction stays in its second
    ("083000", "083000", True), ("083000", "083001", False), ("083000", "082959", False),
    ("101530.25", "101530", True), ("101530.25", "101531", False),
    # the last hour of the day, and its leap second (SS may be 60, PS3.5 6.2)
    ("2300-2359", "233000", True), ("23", "230000", True), ("2359-", "235960", True),
    # stored values of reduced precision, with fractions, or in ACR-NEMA form
    ("0830", "0830", True), ("0830-0845", "08", False), ("08-0830", "0830", True),
    ("0829", "0830", False), ("1015", "101530.123456", True), ("1015", "10:15:30", True),
])
def test_birth_time_ranges(query: str, stored: str, found: bool) -> None:
    assert accepts(dataset(PatientBirthTime=query), dataset(PatientBirthTime=stored)) is found


@pytest.mark.parametrize(("query", "stored", "found"), [
    ("1600-1800", "180059", True), ("1600-1800", "180100", False),
    ("-0800", "075959", True), ("-0800", "080100", False),
])
def test_sps_end_time_is_matched_in_the_sps_item(query: str, stored: str, found: bool) -> None:
    identifier = with_sps(dataset(ScheduledProcedureStepEndTime=query))
    item = with_sps(dataset(ScheduledProcedureStepEndTime=stored))
    assert accepts(identifier, item) is found


@pytest.mark.parametrize("value", ["24", "2400", "240000", "1060", "106000", "100061",
                                   "1060-1100", "0900-1261", "10:60"])
def test_out_of_range_times_are_refused(value: str) -> None:
    error = refusal(dataset(PatientBirthTime=value))
    assert error.tag == PATIENT_BIRTH_TIME
    assert error.comment == "(0010,0032) is not a time or time range"


@pytest.mark.parametrize("value", ["23", "2359", "1059", "105959", "105960", "00"])
def test_the_last_valid_hour_minute_and_second_are_accepted(value: str) -> None:
    plan = build_query(dataset(PatientBirthTime=value), NO_HIDDEN)
    assert len(plan.post_filter) == 1


@pytest.mark.parametrize(("identifier", "tag"), [
    (dataset(PatientBirthTime="1000-0800"), PATIENT_BIRTH_TIME),
    (dataset(PatientBirthTime="100001-100000"), PATIENT_BIRTH_TIME),
    (with_sps(dataset(ScheduledProcedureStepEndTime="1800-0600")), SPS_END_TIME),
])
def test_a_reversed_time_range_on_a_non_indexed_key_is_refused(identifier: Dataset,
                                                                 tag: BaseTag) -> None:
    # Only the SPS Start Time may be reversed, and only with a date range (one
    # night); any other TM key has no date to pair with.
    error = refusal(identifier)
    assert error.tag == tag
    assert error.comment == f"{tag} is a reversed range"


def test_an_equal_ended_time_range_is_one_second() -> None:
    plan = build_query(dataset(PatientBirthTime="100000-100000"), NO_HIDDEN)
    assert plan.accepts(dataset(PatientBirthTime="100000"))
    assert not plan.accepts(dataset(PatientBirthTime="100001"))



# --- TM: the leap second (SS = 60, PS3.5 table 6.2-1) at a bound of reduced precision ---

LEAP = [
    # "2359", "23" and a range ending "2359" hold the whole last minute, 23:59:60 too
    ("2359", "235960", True), ("23", "235960", True), ("2300-2359", "235960", True),
    ("2359", "235959", True), ("2358", "235960", False), ("2358", "235900", False),
    # a full-precision key is that second alone
    ("235959", "235960", False), ("235960", "235960", True), ("2359-235959", "235960", False),
]


@pytest.mark.parametrize(("query", "stored", "found"), LEAP)
def test_a_minute_or_hour_upper_bound_holds_its_leap_second(query: str, stored: str,
                                                            found: bool) -> None:
    # The post-filter, on keys without a column: top level and in the SPS item.
    assert accepts(dataset(PatientBirthTime=query), dataset(PatientBirthTime=stored)) is found
    assert accepts(with_sps(dataset(ScheduledProcedureStepEndTime=query)),
                   with_sps(dataset(ScheduledProcedureStepEndTime=stored))) is found


@pytest.mark.parametrize(("date", "time", "expected"), [
    ("", "2359", Range(Column.SPS_START_TIME, "235900", "235960")),
    ("", "23", Range(Column.SPS_START_TIME, "230000", "235960")),
    ("", "2300-2359", Range(Column.SPS_START_TIME, "230000", "235960")),
    ("", "2358", Range(Column.SPS_START_TIME, "235800", "235860")),
    # with a date, one date-time range; an open time still ends at the day's leap second
    ("20261231", "2359", Range(Column.SPS_START, "20261231235900", "20261231235960")),
    ("20261231", "2300-", Range(Column.SPS_START, "20261231230000", "20261231235960")),
])
def test_the_store_bounds_of_the_sps_start_hold_the_leap_second(date: str, time: str,
                                                                 expected: Range) -> None:
    sps = dataset(ScheduledProcedureStepStartTime=time)
    if date:
        sps.ScheduledProcedureStepStartDate = date
    assert build_query(with_sps(sps), NO_HIDDEN).query.matches == (expected,)


WHOLE_MINUTE = ["MINUTE", "LAST", "LEAP"]  # in schedule order, as the store answers


@pytest.mark.parametrize(("date", "time", "found"), [
    ("", "2359", WHOLE_MINUTE), ("", "23", WHOLE_MINUTE), ("", "2300-2359", WHOLE_MINUTE),
    ("", "2358", []), ("", "235959", ["LAST"]),
    ("20261231", "2359", WHOLE_MINUTE), ("20261231", "2300-", WHOLE_MINUTE),
])
def test_the_store_finds_a_leap_second_as_the_post_filter_does(
        tmp_path: Path, item: Callable[..., Dataset], date: str, time: str,
        found: list[str]) -> None:
    # The SPS start is matched in SQL alone (an indexed column, no post-filter): the
    # stored column holds "235960" (bridge/store/items.py, pad_time), compared as text.
    store = SqliteStore(tmp_path / "bridge.sqlite3")
    store.migrate()
    try:
        store.upsert_steps([
            item("DOE^JOHN", f"P{n}", accession, f"1.2.3.{n}", "CT01", "CT", "20261231", at)
            for n, (accession, at) in enumerate(
                [("MINUTE", "235900"), ("LAST", "235959"), ("LEAP", "235960")])])
        sps = dataset(ScheduledProcedureStepStartTime=time)
        if date:
            sps.ScheduledProcedureStepStartDate = date
        plan = build_query(with_sps(sps), NO_HIDDEN)
        assert plan.post_filter == ()
        assert [str(ds.AccessionNumber) for ds in store.query(plan.query)] == found
    finally:
        store.close()


# --- DA ---

@pytest.mark.parametrize(("query", "stored", "found"), [
    ("19800101-19801231", "19800101", True), ("19800101-19801231", "19801231", True),
    ("19800101-19801231", "19791231", False), ("19800101-19801231", "19810101", False),
    ("19800101-", "19791231", False), ("-19801231", "19810101", False),
    ("19800615", "1980.06.15", True), ("1980.06.15", "19800615", True),
])
def test_birth_date_ranges_include_both_ends(query: str, stored: str, found: bool) -> None:
    assert accepts(dataset(PatientBirthDate=query), dataset(PatientBirthDate=stored)) is found


@pytest.mark.parametrize("value", ["1980061", "198006155", "1980.0615", "19800.615",
                                   "1980061-19801231"])
def test_dates_with_a_digit_too_few_or_a_stray_dot_are_refused(value: str) -> None:
    error = refusal(dataset(PatientBirthDate=value))
    assert error.tag == PATIENT_BIRTH_DATE
    assert error.comment == "(0010,0030) is not a date or date range"


def test_every_value_of_a_multi_valued_stored_date_or_time_is_tried() -> None:
    # An unreadable or blank value is skipped, not the end of the search.
    item = Dataset()
    item.add(DataElement(Tag(0x0018, 0x1200), "DA", ["someday", " ", "20261128"]))
    item.add(DataElement(Tag(0x0018, 0x1201), "TM", ["noon", " ", "101500"]))
    assert accepts(dataset(DateOfLastCalibration="20261101-"), item)
    assert accepts(dataset(TimeOfLastCalibration="10"), item)
    assert not accepts(dataset(DateOfLastCalibration="-20261127"), item)
    assert not accepts(dataset(TimeOfLastCalibration="11"), item)


# --- UI ---

def uid_identifier(raw: bytes) -> Dataset:
    ds = Dataset()
    ds[STUDY_INSTANCE_UID] = RawDataElement(STUDY_INSTANCE_UID, "UI", len(raw), raw, 0,
                                            False, True)
    return ds


@pytest.mark.parametrize(("raw", "expected"), [
    # an SCU that pads every value, not just the last, to even length
    (b"1.2.3\x00\\1.2.4\x00", AnyOf(Column.STUDY_INSTANCE_UID, ("1.2.3", "1.2.4"))),
    (b"1.2.3 \\ 1.2.44", AnyOf(Column.STUDY_INSTANCE_UID, ("1.2.3", "1.2.44"))),
    (b"1.2.3\x00", Exact(Column.STUDY_INSTANCE_UID, "1.2.3")),
])
def test_uid_lists_as_scus_pad_them(raw: bytes, expected: object) -> None:
    assert build_query(uid_identifier(raw), NO_HIDDEN).query.matches == (expected,)


def test_a_uid_of_64_characters_is_the_longest_accepted() -> None:
    longest = "1.2." + "1" * 60
    assert len(longest) == 64
    assert build_query(dataset(StudyInstanceUID=longest), NO_HIDDEN).query.matches == (
        Exact(Column.STUDY_INSTANCE_UID, longest),)
    error = refusal(dataset(StudyInstanceUID=longest + "1"))
    assert (error.tag, error.comment) == (STUDY_INSTANCE_UID, "(0020,000D) is not a UID list")


@pytest.mark.parametrize("raw", [b"1.2.3X", b"1.2.3\\\\1.2.4", b"1.2.3\\1.2.04"])
def test_a_uid_list_with_a_bad_or_empty_part_is_refused(raw: bytes) -> None:
    error = refusal(uid_identifier(raw))
    assert (error.tag, error.comment) == (STUDY_INSTANCE_UID, "(0020,000D) is not a UID list")


def test_a_uid_list_on_a_non_indexed_key_matches_any_listed_uid() -> None:
    identifier = Dataset()
    raw = b"1.2.9\x00\\1.2.8"
    tag = Tag(0x0020, 0x0052)  # Frame of Reference UID
    identifier[tag] = RawDataElement(tag, "UI", len(raw), raw, 0, False, True)
    plan = build_query(identifier, NO_HIDDEN)
    assert plan.accepts(dataset(FrameOfReferenceUID="1.2.8"))
    assert plan.accepts(dataset(FrameOfReferenceUID="1.2.9"))
    assert not plan.accepts(dataset(FrameOfReferenceUID="1.2.7"))
    assert not plan.accepts(Dataset())


# --- single value matching on VRs without wildcards; multi-valued stored values ---

@pytest.mark.parametrize(("stored", "found"), [
    ("045Y", True), ("050Y", False), ("", False), (None, False),
])
def test_patient_age_is_single_value_matched(stored: str | None, found: bool) -> None:
    item = Dataset() if stored is None else dataset(PatientAge=stored)
    assert accepts(dataset(PatientAge="045Y"), item) is found


def test_binary_keys_match_all_their_values_exactly() -> None:
    identifier = Dataset()
    identifier.add(DataElement(Tag(0x0018, 0x1310), "US", [0, 256, 256, 0]))
    plan = build_query(identifier, NO_HIDDEN)

    def item(matrix: list[int]) -> Dataset:
        ds = Dataset()
        ds.add(DataElement(Tag(0x0018, 0x1310), "US", matrix))
        return ds

    assert plan.accepts(item([0, 256, 256, 0]))
    assert not plan.accepts(item([0, 512, 512, 0]))
    assert not plan.accepts(item([0, 256, 256]))
    assert not plan.accepts(Dataset())
    rows = build_query(dataset(Rows=512), NO_HIDDEN)
    assert rows.accepts(dataset(Rows=512))
    assert not rows.accepts(dataset(Rows=256))


@pytest.mark.parametrize(("stored", "found"), [
    (["ROOM1", "ROOM2"], True), (["ROOM2"], True), (["ROOM1", "ROOM3"], False),
])
def test_a_multi_valued_station_name_matches_on_any_value(stored: list[str],
                                                          found: bool) -> None:
    identifier = with_sps(dataset(ScheduledStationName="ROOM2"))
    assert accepts(identifier, with_sps(dataset(ScheduledStationName=stored))) is found


@pytest.mark.parametrize("stored", [None, "", [None, ""], [None, "Tanaka^Jiro"]])
def test_empty_stored_names_match_no_query_value(stored: object) -> None:
    # Nomura is a common surname; an empty value must not match it, whatever text
    # the empty value would print as.
    item = Dataset()
    item.add(DataElement(Tag(0x0010, 0x1001), "PN", stored))  # Other Patient Names
    item.add(DataElement(Tag(0x0008, 0x0090), "PN", stored if not isinstance(stored, list)
                         else stored[0]))
    assert not accepts(dataset(OtherPatientNames="No*"), item)
    assert not accepts(dataset(ReferringPhysicianName="No*"), item)


def test_other_patient_names_match_on_any_of_their_values() -> None:
    item = dataset(OtherPatientNames=["Smith^Jane", "Doe^Jane=ドウ^ジェーン"])
    assert accepts(dataset(OtherPatientNames="doe*"), item)
    assert accepts(dataset(OtherPatientNames="ドウ*"), item)
    assert not accepts(dataset(OtherPatientNames="Miller*"), item)


# --- person names by component group ---

JAPANESE = "Yamada^Tarou=山田^太郎=やまだ^たろう"


@pytest.mark.parametrize(("query", "stored", "found"), [
    # a query group the stored name lacks matches nothing, not even "any value"
    ("Doe*=?*", "Doe^John", False), ("Doe*=?*", "Doe^John=ドウ", True),
    ("Doe*==?*", "Doe^John=ドウ", False),
    # an empty ideographic group in the stored name
    ("==やまだ*", "Yamada^Tarou==やまだ^たろう", True),
    ("=山田*", "Yamada^Tarou==やまだ^たろう", False),
    ("yamada*=", "Yamada^Tarou==やまだ^たろう", True),
    # a one-group query against each group
    ("たろう", JAPANESE, False), ("*たろう", JAPANESE, True), ("*^太郎", JAPANESE, True),
])
def test_name_groups_on_a_referring_physician(query: str, stored: str, found: bool) -> None:
    assert accepts(dataset(ReferringPhysicianName=query),
                   dataset(ReferringPhysicianName=stored)) is found


# --- sequences: one stored item must match every key ---

def code(value: str, scheme: str) -> Dataset:
    return dataset(CodeValue=value, CodingSchemeDesignator=scheme)


@pytest.mark.parametrize(("stored", "found"), [
    ([code("CT-HEAD", "99LOCAL")], True),
    ([code("CT-ABD", "99LOCAL"), code("CT-HEAD", "99LOCAL")], True),
    # each key is met, but by different items
    ([code("CT-HEAD", "OTHER"), code("CT-ABD", "99LOCAL")], False),
    ([], False),
    (None, False),  # the SPS item has no protocol codes at all
])
def test_protocol_code_sequence_needs_one_item_matching_all_keys(
        stored: list[Dataset] | None, found: bool) -> None:
    identifier = with_sps(dataset(
        ScheduledProtocolCodeSequence=[code("CT-HEAD", "99LOCAL")]))
    sps = dataset(Modality="CT")
    if stored is not None:
        sps.ScheduledProtocolCodeSequence = stored
    assert accepts(identifier, with_sps(sps)) is found


def test_an_item_without_the_sps_sequence_does_not_match_sps_keys() -> None:
    identifier = with_sps(dataset(ScheduledProcedureStepLocation="ROOM 1"))
    assert accepts(identifier, with_sps(dataset(ScheduledProcedureStepLocation="ROOM 1")))
    assert not accepts(identifier, dataset(PatientID="P1"))
    # the same tag, but not a sequence (a corrupt stored item)
    corrupt = Dataset()
    corrupt.add(DataElement(Tag(0x0040, 0x0100), "LO", "ROOM 1"))
    assert not accepts(identifier, corrupt)


# --- how a key's value arrives ---

@pytest.mark.filterwarnings("ignore:A value of type 'tuple'")
def test_a_key_built_in_code_as_a_tuple_is_matched_like_its_value() -> None:
    # pydicom keeps a tuple as given (a list of one becomes the value itself).
    plan = build_query(dataset(PatientSex=("F",)), NO_HIDDEN)
    assert plan.accepts(dataset(PatientSex="F"))
    assert not plan.accepts(dataset(PatientSex="M"))
    empty = build_query(dataset(PatientSex=()), NO_HIDDEN)
    assert empty.post_filter == ()
    assert empty.accepts(dataset(PatientSex="M"))
    error = refusal(dataset(PatientSex=("F", "M")))
    assert (error.tag, error.comment) == (Tag(0x0010, 0x0040),
                                          "(0010,0040) has more than one value")


def test_a_text_key_sent_with_a_binary_vr_is_refused_naming_it() -> None:
    # An SCU's explicit VR of OB on Patient Comments (LT): bytes pydicom cannot
    # turn into text, so the key cannot be matched.
    comments = Tag(0x0010, 0x4000)
    identifier = Dataset()
    identifier[comments] = RawDataElement(comments, "OB", 2, b"\xff\xfe", 0, False, True)
    error = refusal(identifier)
    assert (error.tag, error.comment) == (comments, "(0010,4000) cannot be decoded")
