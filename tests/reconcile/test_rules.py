"""The pure parts: what a PACS answer means for an item (rules.py), the settle
policy, the rate limit, and the CM's counts where an outbound profile asks for them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from pydicom import Dataset

from bridge.outbound.events import Destination, StatusMessages
from bridge.outbound.loader import load_profiles
from bridge.reconcile.apply import study_data_set
from bridge.reconcile.query import RateLimit, answer, identifier
from bridge.reconcile.rules import (
    ConflictKind,
    Expected,
    Kind,
    Settle,
    StudyAnswer,
    judge,
    settled,
)
from bridge.steps import StatusChange

REPO = Path(__file__).resolve().parents[2]
ITEM = Expected("1.2.3.1", "ACC1", "PAT1")


def test_found_by_uid():
    study = StudyAnswer("1.2.3.1", "ACC1", "PAT1", 1, 3)
    assert judge(ITEM, [study]).kind is Kind.FOUND


def test_found_by_uid_for_another_patient_is_a_conflict():
    v = judge(ITEM, [StudyAnswer("1.2.3.1", "ACC1", "PAT2")])
    assert (v.kind, v.conflict) == (Kind.CONFLICT, ConflictKind.PATIENT_ID)
    assert "PAT" not in v.detail  # names attributes, never values


def test_an_answer_without_a_patient_id_is_not_a_conflict():
    assert judge(ITEM, [StudyAnswer("1.2.3.1", "ACC1", "")]).kind is Kind.FOUND


def test_another_uid_under_the_accession_is_a_conflict():
    v = judge(ITEM, [], [StudyAnswer("1.2.3.9", "ACC1", "PAT1")])
    assert (v.kind, v.conflict) == (Kind.CONFLICT, ConflictKind.STUDY_UID)
    assert v.study is not None and v.study.study_uid == "1.2.3.9"


def test_the_items_own_uid_under_the_accession_is_found():
    assert judge(ITEM, [], [StudyAnswer("1.2.3.1", "ACC1", "PAT1")]).kind is Kind.FOUND


def test_nothing_is_not_found():
    assert judge(ITEM, [], []).kind is Kind.NOT_FOUND


def test_settle_polls_needs_the_same_count_twice():
    polls = Settle("polls", timedelta(seconds=300))
    now = datetime(2026, 11, 28, tzinfo=UTC)
    s = StudyAnswer("1.2.3.1", instances=4)
    assert not settled(polls, previous=-1, seen_at=None, study=s, now=now)
    assert not settled(polls, previous=3, seen_at=now, study=s, now=now)
    assert settled(polls, previous=4, seen_at=now, study=s, now=now)
    empty = StudyAnswer("1.2.3.1", instances=0)
    assert not settled(polls, previous=0, seen_at=now, study=empty, now=now)


def test_settle_time_needs_the_count_unchanged_that_long():
    timed = Settle("time", timedelta(seconds=300))
    t0 = datetime(2026, 11, 28, tzinfo=UTC)
    s = StudyAnswer("1.2.3.1", instances=4)
    assert not settled(timed, previous=4, seen_at=t0, study=s, now=t0 + timedelta(seconds=299))
    assert settled(timed, previous=4, seen_at=t0, study=s, now=t0 + timedelta(seconds=300))


def test_the_rate_limit_spaces_requests():
    clock = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(round(s, 6))
        clock[0] += s

    rate = RateLimit(4, clock=lambda: clock[0], sleep=sleep)
    for _ in range(5):
        rate.wait()
    assert slept == [0.25, 0.25, 0.25, 0.25]


def test_the_identifier_asks_study_level_with_the_counts():
    ds = identifier(accession="ACC1")
    assert ds.QueryRetrieveLevel == "STUDY" and ds.AccessionNumber == "ACC1"
    assert "NumberOfStudyRelatedInstances" in ds and ds.StudyInstanceUID == ""
    back = Dataset()
    back.StudyInstanceUID = "1.2.3"
    back.NumberOfStudyRelatedInstances = "12"
    back.NumberOfStudyRelatedSeries = ""
    back.ModalitiesInStudy = ["CT", "SR"]
    got = answer(back)
    assert (got.instances, got.series, got.modalities) == (12, -1, "CT\\SR")


def test_a_profile_with_count_fields_gets_the_series_and_instance_counts(tmp_path: Path):
    base = (REPO / "mappings" / "outbound" / "ihe-swf-orm-o01-v231-status.yaml").read_text()
    (tmp_path / "counts.yaml").write_text(
        base.replace("name: ihe-swf-orm-o01-v231-status", "name: with-counts")
        + "\n  - segment: ZPS\n    fields:\n"
          "      ZPS-1: mpps.NumberOfStudyRelatedSeries\n"
          "      ZPS-2: mpps.NumberOfStudyRelatedInstances\n", encoding="utf-8")
    profile = load_profiles([tmp_path]).for_message_type("ORM^O01")
    assert profile is not None
    messages = StatusMessages([Destination("ris", profile, "", "ascii")],
                              sending_application="MWLBRIDGE", sending_facility="RAD")
    order = Dataset()
    order.AccessionNumber = "ACC1"
    order.PatientID = "PAT1"
    now = datetime(2026, 11, 28, 9, 45, tzinfo=UTC)
    mpps = study_data_set(StudyAnswer("1.2.3.1", series=2, instances=57, modalities="CT"),
                          now)
    (row,) = messages.for_change(StatusChange(order=order, mpps=mpps, status="CM",
                                              sps_status="COMPLETED", scheduled=True,
                                              order_key="k"), now=now)
    text = row.payload.decode()
    assert "\rZPS|2|57" in text
    local = now.astimezone()
    assert f"|CM||||{local:%Y%m%d%H%M%S}" in text  # ORC-9: when the PACS said so


def test_settings_name_what_is_wrong():
    import pytest
    from pydantic import ValidationError

    from bridge.reconcile.settings import ReconcileSettings

    with pytest.raises(ValidationError, match=r"needs at least one entry in reconcile\.pacs"):
        ReconcileSettings(enabled=True)
    with pytest.raises(ValidationError, match="min_age_min must be less than max_age_h"):
        ReconcileSettings(min_age_min=120, max_age_h=1)
    with pytest.raises(ValidationError, match="AE title"):
        ReconcileSettings.model_validate({"pacs": [{"ae_title": "A" * 17, "port": 104}]})
