"""The MPPS value rules one by one, at their edges (bridge/mpps/validate.py).

The daemon-level tests (test_malformed_values.py, test_mpps_failures.py) show that a
modality gets the right status; these pin each rule's limits and each failure's
comment and offending tag, which mutation testing showed were left loose (issue 17)."""

from __future__ import annotations

from typing import Any

import pytest
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from bridge.mpps import validate
from bridge.mpps.validate import (
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    MISSING_ATTRIBUTE_VALUE,
    MppsFailure,
    check_final,
    check_set,
    valid_ae_title,
    valid_number,
    valid_time,
)


@pytest.mark.parametrize(("text", "vr", "ok"), [
    ("2147483647", "IS", True), ("2147483648", "IS", False),
    ("-2147483648", "IS", True), ("-2147483649", "IS", False),
    ("+00000000001", "IS", True),  # 12 characters, the most IS allows
    ("+000000000001", "IS", False),  # 13
    (" 42 ", "IS", True), ("4.2", "IS", False), ("", "IS", False),
    ("1234567890123456", "DS", True),  # 16 characters, the most DS allows
    ("12345678901234567", "DS", False),
    ("-1.5e3", "DS", True), ("1e999", "DS", False), ("nan", "DS", False), ("1,5", "DS", False),
])
def test_numbers_at_their_limits(text: str, vr: str, ok: bool) -> None:
    assert valid_number(text, vr) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("235960", True),  # a leap second
    ("235961", False), ("2400", False), ("2360", False), ("00", True),
    ("10:30:00", True),  # ACR-NEMA's form with colons
    ("10:30:61", False), ("103000.123456", True), ("1030.5", False), ("10-30", False),
])
def test_times_within_the_clock(value: str, ok: bool) -> None:
    assert valid_time(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("A" * 16, True), ("A" * 17, False), ("CT 01", True), ("CT~1", True),
    ("CT\\1", False), ("CT\x011", False), ("CT\x7f", False), ("", True),
])
def test_ae_titles(value: str, ok: bool) -> None:
    assert valid_ae_title(value) is ok


class _Raw:
    """A value pydicom kept as sent (it could not convert it): its original string."""

    def __init__(self, original: str) -> None:
        self.original_string = original

    def __str__(self) -> str:
        return "converted"


def test_number_texts_are_the_values_as_sent() -> None:
    texts = validate._number_texts
    assert texts("1\\ 2\\ ") == ["1", " 2"]
    assert texts(["3", None, "4"]) == ["3", "4"]  # a missing value is skipped, not the end
    assert texts(("5", "6")) == ["5", "6"]
    assert texts(_Raw("7\\x8")) == ["7", "x8"]
    assert texts(None) == []


def _failure(call: Any, *args: Any, **kwargs: Any) -> MppsFailure:
    with pytest.raises(MppsFailure) as raised:
        call(*args, **kwargs)
    return raised.value


def test_failures_name_their_attribute_and_tag() -> None:
    missing = validate._missing("ScheduledStepAttributesSequence>StudyInstanceUID")
    assert (missing.status, missing.comment, missing.tags) == (
        MISSING_ATTRIBUTE, "missing ScheduledStepAttributesSequence>StudyInstanceUID",
        (Tag(0x0020000D),))
    empty = validate._empty("PerformedSeriesSequence")
    assert (empty.status, empty.comment, empty.tags) == (
        MISSING_ATTRIBUTE_VALUE, "no value in PerformedSeriesSequence", (Tag(0x00400340),))
    plain = validate._invalid("Modality")
    assert (plain.status, plain.comment, plain.tags) == (
        INVALID_ATTRIBUTE_VALUE, "invalid Modality", (Tag(0x00080060),))
    given = validate._invalid("(0009,1010)", "not a number", Tag(0x00091010))
    assert (given.comment, given.tags) == ("invalid (0009,1010): not a number",
                                           (Tag(0x00091010),))
    assert validate._invalid("NoSuchKeyword").tags == ()  # no tag to offend with


def test_comments_are_cut_at_64_characters() -> None:
    name = "ScheduledStepAttributesSequence>ReferencedStudySequence>X" * 2
    for failure in (validate._missing(name), validate._empty(name),
                    validate._invalid(name, "why")):
        assert len(failure.comment) == 64
        assert failure.comment == str(failure.comment)[:64]


def test_an_end_time_is_checked_as_well_as_a_start_time() -> None:
    ds = Dataset()
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepEndTime = "256000"
    failure = _failure(validate._check_formats, ds)
    assert failure.comment == "invalid PerformedProcedureStepEndTime: not a TM (HHMMSS)"
    assert failure.tags == (Tag(0x00400251),)


def _stored() -> Dataset:
    ds = Dataset()
    ds.Modality = "CT"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    return ds


def test_n_set_may_repeat_a_value_but_not_change_it() -> None:
    same = Dataset()
    same.Modality = "CT"
    check_set(_stored(), same)  # the same value: allowed
    other = Dataset()
    other.Modality = "MR"
    failure = _failure(check_set, _stored(), other)
    assert failure.comment == "invalid Modality: N-SET may not change it"
    # Not in the N-CREATE: an empty value changes nothing; a value does.
    empty = Dataset()
    empty.StudyID = ""
    check_set(_stored(), empty)
    new = Dataset()
    new.StudyID = "S1"
    assert _failure(check_set, _stored(), new).comment == (
        "invalid StudyID: N-SET may not change it")


def test_final_state_needs_end_date_time_and_series() -> None:
    done = _stored()
    done.PerformedProcedureStepStatus = "COMPLETED"
    assert _failure(check_final, done, final_state_checks=True).comment == (
        "missing PerformedProcedureStepEndDate")
    done.PerformedProcedureStepEndDate = "20261130"
    done.PerformedProcedureStepEndTime = ""
    assert _failure(check_final, done, final_state_checks=True).status == (
        MISSING_ATTRIBUTE_VALUE)
    check_final(done, final_state_checks=False)  # the site turned the checks off


def test_a_data_set_that_cannot_be_stored_names_the_attribute(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Failure injection: no value we could build fails the store's round trip, so
    # the store's encoder is made to refuse one attribute.
    real = validate.dumps_item

    def refusing(ds: Dataset) -> str:
        if "PatientComments" in ds:
            raise ValueError("cannot encode")
        return real(ds)

    monkeypatch.setattr(validate, "dumps_item", refusing)
    ds = Dataset()
    ds.Modality = "CT"
    ds.PatientComments = "x"
    failure = _failure(validate._check_storable, ds)
    assert (failure.status, failure.comment, failure.tags) == (
        INVALID_ATTRIBUTE_VALUE, "invalid PatientComments: cannot be stored",
        (Tag(0x00104000),))

    def only_together(ds: Dataset) -> str:
        if len(ds) > 1:
            raise ValueError("cannot encode")
        return real(ds)

    monkeypatch.setattr(validate, "dumps_item", only_together)
    failure = _failure(validate._check_storable, ds)
    assert (failure.status, failure.comment, failure.tags) == (
        INVALID_ATTRIBUTE_VALUE, "the data set cannot be stored", ())


def test_a_private_number_that_is_no_number_is_refused_with_its_own_tag() -> None:
    # A private tag has no keyword: the failure names it by number and must carry the
    # tag itself (it cannot be found again from the name).
    ds = Dataset()
    # As read off the wire: pydicom keeps a DS it cannot convert as the raw string.
    ds[0x00091010] = RawDataElement(Tag(0x00091010), "DS", 4, b"abc ", 0, True, True)
    failure = _failure(validate._check_elements, ds)
    assert (failure.comment, failure.tags) == ("invalid (0009,1010): not a DS number",
                                               (Tag(0x00091010),))


@pytest.mark.parametrize(("vr", "value"), [("FL", float("inf")), ("FD", [1.0, float("nan")]),
                                           ("FD", float("-inf"))])
def test_floats_must_be_finite(vr: str, value: Any) -> None:
    ds = Dataset()
    ds.add_new(0x00091011, vr, value)
    failure = _failure(validate._check_elements, ds)
    assert (failure.comment, failure.tags) == ("invalid (0009,1011): not a finite number",
                                               (Tag(0x00091011),))
    fine = Dataset()
    fine.add_new(0x00091011, vr, [1.5, 2.5] if isinstance(value, list) else 1.5)
    validate._check_elements(fine)


def _create_with_study_uid(uid: str) -> Dataset:
    item = Dataset()
    item.StudyInstanceUID = uid
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = [item]
    return ds


def test_the_scheduled_study_uid_must_be_there_and_a_uid() -> None:
    empty = _failure(validate.check_create, _create_with_study_uid(""))
    assert (empty.status, empty.comment, empty.tags) == (
        MISSING_ATTRIBUTE_VALUE, "no value in ScheduledStepAttributesSequence>StudyInstanceUID",
        (Tag(0x0020000D),))
    bad = _failure(validate.check_create, _create_with_study_uid("1.2.abc"))
    assert (bad.status, bad.comment, bad.tags) == (
        INVALID_ATTRIBUTE_VALUE,
        # Error Comment is at most 64 characters (PS3.7 C.4)
        "invalid ScheduledStepAttributesSequence>StudyInstanceUID: not a ",
        (Tag(0x0020000D),))


def test_n_set_may_repeat_a_value_with_other_padding() -> None:
    padded = Dataset()
    padded.Modality = "CT "  # the same value as the stored "CT", as sent with its padding
    check_set(_stored(), padded)


@pytest.mark.parametrize(("uid", "ok"), [
    ("", False), ("1", True), ("1." + "2" * 62, True),  # 64 characters, the most a UI holds
    ("1." + "2" * 63, False), ("1.2.abc", False), ("1..2", False),
])
def test_uids_at_their_limits(uid: str, ok: bool) -> None:
    assert validate.valid_uid(uid) is ok
