"""build_query edges: what the planner hands to the store (SQL) and what to the
post-filter (Python), key by key, for the VRs and places the main tests leave out.

The split is the planner's contract: a store match on a value the store cannot
compare (a number in JSON, a key deeper than the SPS item) would drop right rows
before the post-filter sees them, and a post-filter where none is needed turns
the store's answer cap off.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.tag import BaseTag, Tag

from bridge.store.query import AnyOf, Column, Exact, ItemPath, NamePath, Range, Wildcard
from bridge.worklist import QueryError, build_query
from bridge.worklist.query import UNABLE_TO_PROCESS, WILDCARD_VRS, QueryScope, matching_kinds
from bridge.worklist.settings import WorklistSettings
from tests.worklist.test_worklist_query import NO_HIDDEN, ident, stored

pytestmark = [pytest.mark.filterwarnings("ignore:Invalid value for VR"),
              pytest.mark.filterwarnings("ignore:The number of PN components")]

CAPPED = WorklistSettings(hidden_statuses=[], max_answers=5)
UNKNOWN_TAG = Tag(0x0010, 0x9999)  # even group, so not private, and in no dictionary


def with_elements(*elements: DataElement, base: Dataset | None = None) -> Dataset:
    ds = base if base is not None else Dataset()
    for elem in elements:
        ds.add(elem)
    return ds


def one(keyword: str, value: object) -> Dataset:
    ds = Dataset()
    setattr(ds, keyword, value)
    return ds


def refusal(identifier: Dataset) -> QueryError:
    with pytest.raises(QueryError) as caught:
        build_query(identifier, NO_HIDDEN)
    return caught.value


# --- keys that ask for nothing -------------------------------------------------------

def _empty_nested_uid() -> Dataset:
    item = Dataset()
    item.ReferencedSOPInstanceUID = ""
    ds = Dataset()
    ds.ReferencedStudySequence = [item]
    return ds


@pytest.mark.parametrize("identifier", [
    pytest.param(_empty_nested_uid(), id="sequence-of-universal-keys"),
    pytest.param(ident(FrameOfReferenceUID=""), id="empty-uid"),
    pytest.param(with_elements(DataElement(Tag(0x0028, 0x0010), "US", None)), id="empty-US"),
    pytest.param(ident(StudyDescription="*"), id="lone-star-on-LO"),
    # A lone "-" is a range open on both sides, as on the SPS start date/time.
    pytest.param(ident(PatientBirthDate="-"), id="lone-dash-on-DA"),
    pytest.param(ident(PatientBirthTime="-"), id="lone-dash-on-TM"),
    pytest.param(ident(StudyDescription="***", ReferringPhysicianName="*"), id="star-runs"),
])
def test_universal_non_indexed_keys_leave_no_match_no_filter_and_keep_the_cap(
        identifier: Dataset) -> None:
    plan = build_query(identifier, CAPPED)
    assert plan.query.matches == ()
    assert plan.post_filter == ()
    # Nothing to check in Python, so the store may stop at the cap (+1 to see the cut).
    assert plan.query.limit == 6
    # An item that lacks the attribute altogether still matches a universal key.
    assert plan.accepts(stored(PatientID="P1"))


# --- group 0000/0002 and unsupported keys --------------------------------------------

@pytest.mark.parametrize("elem", [
    pytest.param(DataElement(Tag(0x0000, 0x0100), "US", 0x0020), id="command-field"),
    pytest.param(DataElement(Tag(0x0002, 0x0010), "UI", "1.2.840.10008.1.2"),
                 id="transfer-syntax"),
])
def test_command_and_file_meta_elements_are_no_keys(elem: DataElement) -> None:
    plan = build_query(with_elements(elem, base=ident(PatientID="P1")), CAPPED)
    assert plan.query.matches == (Exact(Column.PATIENT_ID, "P1"),)
    assert plan.post_filter == ()
    assert plan.ignored_keys == ()  # not reported as unsupported either: no key at all
    assert plan.query.limit == 6


def test_an_unknown_standard_tag_without_a_vr_is_ignored_and_reported() -> None:
    # Implicit VR gives an attribute pydicom does not know the VR "UN": how to match
    # it is unknown, so it is neither matched nor refused (pending status 0xFF01).
    plan = build_query(with_elements(DataElement(UNKNOWN_TAG, "UN", b"x\x00"),
                                     base=ident(PatientID="P1")), NO_HIDDEN)
    assert plan.query.matches == (Exact(Column.PATIENT_ID, "P1"),)
    assert plan.post_filter == ()
    assert plan.ignored_keys == (UNKNOWN_TAG,)


def test_an_unknown_standard_tag_with_an_explicit_vr_is_matched_by_that_vr() -> None:
    # Explicit VR LO: wildcard matching applies, in Python only (no dictionary VM,
    # so the store cannot know the value is single).
    plan = build_query(with_elements(DataElement(UNKNOWN_TAG, "LO", "AB*")), NO_HIDDEN)
    assert plan.query.matches == ()
    assert plan.ignored_keys == ()
    assert plan.accepts(with_elements(DataElement(UNKNOWN_TAG, "LO", "ABC")))
    assert not plan.accepts(with_elements(DataElement(UNKNOWN_TAG, "LO", "XABC")))
    universal = build_query(with_elements(DataElement(UNKNOWN_TAG, "LO", "*")), NO_HIDDEN)
    assert universal.post_filter == ()


# --- numbers and binary VRs: post-filter only ----------------------------------------

@pytest.mark.parametrize(("tag", "vr", "value", "other"), [
    (Tag(0x0018, 0x9219), "SS", -5, 5),                    # Tag Angle Second Axis
    (Tag(0x0028, 0x0010), "US", 512, 256),                 # Rows
    (Tag(0x0018, 0x6020), "SL", -70000, 70000),            # Reference Pixel X0
    (Tag(0x0004, 0x1400), "UL", 70000, 70001),             # Offset of the Next Dir. Record
    (Tag(0x0072, 0x0082), "SV", [5, -6], [5, 6]),          # Selector SV Value (VM 1-n)
    (Tag(0x0008, 0x040C), "UV", 2**40, 2**40 + 1),         # File Offset in Container
    (Tag(0x0010, 0x9431), "FL", 1.5, 2.5),                 # Examined Body Thickness
    (Tag(0x0008, 0x2134), "FD", 0.25, 0.5),                # Event Time Offset
    (Tag(0x0020, 0x9165), "AT", Tag(0x0010, 0x0010), Tag(0x0010, 0x0020)),
    (Tag(0x0008, 0x041B), "OB", b"\x01\x02", b"\x01\x03"),  # Record Key
    (Tag(0x0028, 0x1201), "OW", b"\x01\x02", b"\x02\x02"),  # Red Palette LUT Data
])
def test_binary_and_number_keys_are_matched_in_python_only(
        tag: BaseTag, vr: str, value: Any, other: Any) -> None:
    plan = build_query(with_elements(DataElement(tag, vr, value)), CAPPED)
    # The stored item is JSON: a number or bytes there never equals the key's text,
    # so a store match would drop the very rows that match.
    assert plan.query.matches == ()
    assert len(plan.post_filter) == 1
    assert plan.query.limit is None
    assert plan.accepts(with_elements(DataElement(tag, vr, value)))
    assert not plan.accepts(with_elements(DataElement(tag, vr, other)))
    assert not plan.accepts(Dataset())


# --- UIDs ------------------------------------------------------------------------------

def test_a_top_level_uid_list_is_pre_filtered_on_the_stored_item() -> None:
    identifier = with_elements(DataElement(Tag(0x0020, 0x0052), "UI", "1.2.9\\1.2.8"))
    plan = build_query(identifier, NO_HIDDEN)
    assert plan.query.matches == (AnyOf(ItemPath((0x00200052,)), ("1.2.9", "1.2.8")),)
    assert plan.accepts(stored(FrameOfReferenceUID="1.2.8"))
    assert not plan.accepts(stored(FrameOfReferenceUID="1.2.7"))


def test_keys_in_a_nested_sequence_are_left_to_the_post_filter() -> None:
    # Below the top level and the SPS item the store has no path: only Python matches.
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3"
    item.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    plan = build_query(ident(ReferencedStudySequence=[item]), NO_HIDDEN)
    assert plan.query.matches == ()
    assert len(plan.post_filter) == 1
    hit = Dataset()
    hit.ReferencedSOPInstanceUID = "1.2.3"
    hit.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    assert plan.accepts(stored(ReferencedStudySequence=[hit]))
    hit.ReferencedSOPInstanceUID = "1.2.4"
    assert not plan.accepts(stored(ReferencedStudySequence=[hit]))


def test_dates_and_names_in_a_nested_sequence_are_left_to_the_post_filter() -> None:
    item = Dataset()
    item.PatientBirthDate = "19800101-"
    item.PatientName = "doe*"
    plan = build_query(ident(OtherPatientIDsSequence=[item]), NO_HIDDEN)
    assert plan.query.matches == ()
    found = Dataset()
    found.PatientBirthDate = "19800615"
    found.PatientName = "DOE^JOHN"
    assert plan.accepts(stored(OtherPatientIDsSequence=[found]))
    found.PatientBirthDate = "19791231"
    assert not plan.accepts(stored(OtherPatientIDsSequence=[found]))


# --- dates, times --------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    ("19800101-", (Range(ItemPath((0x00100030,)), "19800101", None),)),
    ("-19801231", (Range(ItemPath((0x00100030,)), None, "19801231"),)),
    ("-", ()),  # open on both sides: nothing for the store to narrow
])
def test_open_date_ranges_on_a_non_indexed_key(value: str, expected: tuple[object, ...]) -> None:
    assert build_query(ident(PatientBirthDate=value), NO_HIDDEN).query.matches == expected


def test_a_date_range_post_filter_keeps_both_bounds() -> None:
    plan = build_query(ident(PatientBirthDate="19800101-19801231"), NO_HIDDEN)
    assert plan.accepts(stored(PatientBirthDate="19800101"))
    assert plan.accepts(stored(PatientBirthDate="19801231"))
    assert not plan.accepts(stored(PatientBirthDate="19791231"))
    assert not plan.accepts(stored(PatientBirthDate="19810101"))


def test_a_malformed_non_indexed_time_names_its_attribute() -> None:
    error = refusal(ident(PatientBirthTime="25"))
    assert (error.status, error.tag) == (UNABLE_TO_PROCESS, Tag(0x0010, 0x0032))
    assert error.comment == "(0010,0032) is not a time or time range"


# --- person names other than the patient's --------------------------------------------

def test_a_multi_valued_person_name_key_is_matched_in_python_only() -> None:
    # Other Patient Names is VM 1-n: the store sees only a first value, so no pre-filter.
    plan = build_query(ident(OtherPatientNames="doe*"), NO_HIDDEN)
    assert plan.query.matches == ()
    assert plan.accepts(stored(OtherPatientNames=["Roe^Jane", "Doe^John"]))
    assert not plan.accepts(stored(OtherPatientNames=["Roe^Jane"]))


def test_a_single_valued_person_name_key_is_pre_filtered_on_its_normalised_copy() -> None:
    plan = build_query(ident(ReferringPhysicianName="Müll*"), NO_HIDDEN)
    assert plan.query.matches == (Wildcard(NamePath((0x00080090,)), "mull*"),)
    assert plan.accepts(stored(ReferringPhysicianName="MULLER^HANS"))


def test_a_grouped_name_query_is_a_prefix_even_when_its_first_group_is_not_ascii() -> None:
    # With "=" the first group is the alphabetic one, which starts the stored name:
    # the store can use the name index although the group is Cyrillic.
    plan = build_query(ident(PatientName="Иванов*=*"), NO_HIDDEN)
    assert plan.query.matches == (Wildcard(Column.PATIENT_NAME_NORM, "иванов*"),)
    assert plan.accepts(stored(PatientName="Иванов^Иван"))
    # One group of non-ASCII letters may be any group: "*...*".
    alone = build_query(ident(PatientName="Иванов*"), NO_HIDDEN)
    assert alone.query.matches == (Wildcard(Column.PATIENT_NAME_NORM, "*иванов*"),)


def test_a_name_with_four_component_groups_is_refused_naming_it() -> None:
    error = refusal(ident(PatientName="a=b=c=d"))
    assert (error.status, error.tag) == (UNABLE_TO_PROCESS, Tag(0x0010, 0x0010))
    assert error.comment == "(0010,0010) has more than three component groups"
    nested = refusal(ident(ReferringPhysicianName="a=b=c=d"))
    assert nested.tag == Tag(0x0008, 0x0090)


# --- text VRs without wildcards --------------------------------------------------------

def test_age_is_single_value_matching_where_star_and_question_mark_are_literal() -> None:
    plan = build_query(ident(PatientAge="045Y"), NO_HIDDEN)
    assert plan.query.matches == (Exact(ItemPath((0x00101010,)), "045Y"),)
    assert plan.accepts(stored(PatientAge="045Y"))
    assert not plan.accepts(stored(PatientAge="046Y"))
    assert not plan.accepts(stored(PatientID="P1"))
    literal = build_query(ident(PatientAge="04?Y"), NO_HIDDEN)
    assert literal.query.matches == (Exact(ItemPath((0x00101010,)), "04?Y"),)
    assert not literal.accepts(stored(PatientAge="045Y"))


# --- the conformance statement's matching column ---------------------------------------

@pytest.mark.parametrize(("keyword", "vr", "value", "equal", "other"), [
    ("PatientAge", "AS", "045Y", "045Y", "046Y"),
    ("PatientWeight", "DS", "70", "70.0", "71"),
    ("AcquisitionDateTime", "DT", "20261128", "20261128", "20261129"),
    ("StudyDescription", "LO", "CT Kopf", "CT Kopf", "CT kopf"),
])
def test_matching_kinds_says_what_the_planner_does(
        keyword: str, vr: str, value: str, equal: str, other: str) -> None:
    kinds = matching_kinds(vr)
    # single value matching
    assert "single value" in kinds
    plan = build_query(one(keyword, value), NO_HIDDEN)
    assert plan.accepts(one(keyword, equal))
    assert not plan.accepts(one(keyword, other))
    # universal matching
    assert "universal" in kinds
    assert build_query(one(keyword, ""), NO_HIDDEN).post_filter == ()
    # wildcards only where the VR has them
    assert ("wildcard" in kinds) is (vr in WILDCARD_VRS)
    assert kinds == (("single value", "wildcard", "universal") if vr in WILDCARD_VRS
                     else ("single value", "universal"))


# --- QueryError ------------------------------------------------------------------------

def test_the_error_comment_fits_the_64_characters_of_lo() -> None:
    error = QueryError(UNABLE_TO_PROCESS, "x" * 70, Tag(0x0010, 0x0010))
    assert error.comment == "x" * 64
    assert str(error) == "x" * 64


# --- the calling AE's profile and the called AE's view ---------------------------------

def labelled(label: str | None) -> Dataset:
    return stored(PatientID="P1") if label is None else stored(WorklistLabel=label)


def test_a_called_ae_views_labels_are_checked_in_python_on_top_of_the_profiles() -> None:
    view = build_query(ident(), CAPPED, QueryScope(view_labels=("EAST", "WEST")))
    # Worklist Label is not indexed: a post-filter, so the store cannot cap.
    assert (view.query.matches, view.query.limit) == ((), None)
    assert view.accepts(labelled("WEST"))
    assert not view.accepts(labelled("NORTH"))
    assert not view.accepts(labelled(None))
    # Profile and view both apply: the item needs a label in each.
    both = build_query(ident(), CAPPED, QueryScope(worklist_labels=("EAST", "NORTH"),
                                                   view_labels=("EAST", "WEST")))
    assert both.accepts(labelled("EAST"))
    assert not both.accepts(labelled("WEST"))
    assert not both.accepts(labelled("NORTH"))


# --- SPS start date and time -------------------------------------------------------------

def test_a_reversed_time_range_with_a_date_range_is_one_night() -> None:
    # C.2.2.2.5.1: date and time together are one date-time range, so 22:00 on the
    # first day to 06:00 on the second is valid although 2200 > 0600.
    plan = build_query(ident({"ScheduledProcedureStepStartDate": "20261127-20261128",
                              "ScheduledProcedureStepStartTime": "2200-0600"}), NO_HIDDEN)
    assert plan.query.matches == (Range(Column.SPS_START, "20261127220000", "20261128060060"),)


# --- values given in code ------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:A value of type 'tuple'")
def test_a_one_item_value_list_is_its_value_and_an_empty_list_is_universal() -> None:
    # pydicom keeps a tuple as given (a decoded value is never a one-item list).
    one_item = Dataset()
    one_item.add(DataElement(Tag(0x0010, 0x0020), "LO", ("P1",)))
    assert build_query(one_item, NO_HIDDEN).query.matches == (Exact(Column.PATIENT_ID, "P1"),)
    empty = ident({"Modality": []}, StudyDescription=[])
    plan = build_query(empty, NO_HIDDEN)
    assert (plan.query.matches, plan.post_filter) == ((), ())


@pytest.mark.parametrize(("tag", "vr", "in_sps"), [
    (Tag(0x0010, 0x0020), "LO", False),   # Patient ID: indexed
    (Tag(0x0040, 0x0009), "SH", True),    # SPS ID: indexed, in the SPS item
    (Tag(0x0008, 0x1030), "LO", False),   # Study Description: post-filter
])
def test_an_undecoded_text_value_is_refused_naming_it(tag: BaseTag, vr: str,
                                                      in_sps: bool) -> None:
    elem = DataElement(tag, vr, b"\xff\xfe")
    if in_sps:
        identifier = ident({})
        identifier.ScheduledProcedureStepSequence[0].add(elem)
    else:
        identifier = with_elements(elem)
    error = refusal(identifier)
    assert (error.status, error.tag) == (UNABLE_TO_PROCESS, tag)
    assert error.comment == f"{tag} cannot be decoded"
