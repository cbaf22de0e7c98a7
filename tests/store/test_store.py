from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from pydicom import Dataset

from bridge.store import (
    AnyOf,
    Column,
    CommitQueue,
    Exact,
    InboundMessage,
    ItemPath,
    NoneOf,
    Range,
    StoreError,
    UpsertOutcome,
    Wildcard,
    WorklistQuery,
    migrations,
)
from bridge.store.names import normalise_name
from bridge.store.query import NamePath


def make_item(n: int, *, name: str = "DOE^JOHN", station: str = "CT01", modality: str = "CT",
              date: str = "20261128", time: str = "0930", status: str = "SCHEDULED",
              pid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PatientName = name
    ds.PatientID = pid or f"P{n:05d}"
    ds.AccessionNumber = f"ACC{n:05d}"
    ds.RequestedProcedureID = f"RP{n:05d}"
    ds.StudyInstanceUID = f"1.2.3.{n}"
    sps = Dataset()
    sps.ScheduledStationAETitle = station
    sps.Modality = modality
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.ScheduledProcedureStepID = f"SPS{n:05d}"
    sps.ScheduledProcedureStepStatus = status
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def ids(store, *matches, limit=None) -> list[str]:
    return [ds.AccessionNumber for ds in store.query(WorklistQuery(tuple(matches), limit))]


def test_migrate_is_idempotent(store):
    latest = migrations.latest_version()
    assert store.migrate() == store.schema_version() == latest
    assert store.migrate() == latest


def test_upsert_inserted_unchanged_updated(store):
    item = make_item(1)
    assert store.upsert_steps([item]) == [UpsertOutcome.INSERTED]
    assert store.upsert_steps([make_item(1)]) == [UpsertOutcome.UNCHANGED]
    changed = make_item(1, time="1100")
    assert store.upsert_steps([changed]) == [UpsertOutcome.UPDATED]
    assert store.count_steps() == 1
    (row,) = store.list_steps()
    assert row.item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartTime == "1100"


def test_unicode_round_trip(store):
    store.upsert_steps([make_item(1, name="Müller^Jürgen"), make_item(2, name="山田^太郎")])
    names = sorted(str(ds.PatientName) for ds in store.query(WorklistQuery()))
    assert names == ["Müller^Jürgen", "山田^太郎"]


def test_name_group_pre_filters_find_any_group(store):
    # The worklist's pre-filter for a person name of one group is "*pattern*" on the
    # normalised name "A=I=P" (bridge/worklist/query.py, NameGroupsCondition).
    store.upsert_steps([make_item(1, name="Yamada^Tarou=山田^太郎=やまだ^たろう"),
                        make_item(2, name="Hong^Gildong=洪^吉洞=홍^길동")])
    for pattern, found in [("*山田*", ["ACC00001"]), ("*やまだ^たろう*", ["ACC00001"]),
                           ("*홍^길동*", ["ACC00002"]), ("*yamada*", ["ACC00001"]),
                           ("*山本*", [])]:
        assert ids(store, Wildcard(Column.PATIENT_NAME_NORM, pattern)) == found, pattern


def test_matching_kinds(store):
    store.upsert_steps([
        make_item(1, name="Müller^Hans", station="CT01", date="20261128", time="0800"),
        make_item(2, name="MULLER^ANNA", station="CT02", date="20261129", time="1300"),
        make_item(3, name="Smith^Bob", station="MR01", modality="MR", date="20261130",
                  time="0700"),
        make_item(4, name="Doe^Jane", station="CT01", date="20261128", time="1600",
                  status="COMPLETED"),
    ])
    assert ids(store, Exact(Column.STATION_AET, "CT01")) == ["ACC00001", "ACC00004"]
    assert ids(store, Exact(Column.STATION_AET, "ct01")) == []  # AE titles are case-sensitive
    assert ids(store, Wildcard(Column.PATIENT_NAME_NORM, normalise_name("mül*"))) == [
        "ACC00001", "ACC00002"]
    assert ids(store, Wildcard(Column.PATIENT_NAME_NORM, normalise_name("?OE^*"))) == [
        "ACC00004"]
    assert ids(store, Wildcard(Column.ACCESSION_NUMBER, "ACC0000[1")) == []
    assert ids(store, Range(Column.SPS_START_DATE, "20261129", None)) == ["ACC00002",
                                                                          "ACC00003"]
    assert ids(store, Range(Column.SPS_START_DATE, None, "20261128")) == ["ACC00001",
                                                                          "ACC00004"]
    assert ids(store, Range(Column.SPS_START, "20261128120000", "20261129130000")) == [
        "ACC00004", "ACC00002"]
    assert ids(store, AnyOf(Column.STUDY_INSTANCE_UID, ("1.2.3.3", "1.2.3.1"))) == [
        "ACC00001", "ACC00003"]
    assert ids(store, NoneOf(Column.SPS_STATUS, ("COMPLETED",)),
               Exact(Column.MODALITY, "CT")) == ["ACC00001", "ACC00002"]
    # Ordered by start date/time, and the limit is exact.
    assert ids(store) == ["ACC00001", "ACC00004", "ACC00002", "ACC00003"]
    assert ids(store, limit=2) == ["ACC00001", "ACC00004"]


def test_wildcard_metacharacters_of_the_backend_are_literal(store):
    store.upsert_steps([make_item(1, pid="A%B_C"), make_item(2, pid="AXBYC")])
    assert ids(store, Wildcard(Column.PATIENT_ID, "A%B_*")) == ["ACC00001"]
    assert ids(store, Wildcard(Column.PATIENT_ID, "A?B?C")) == ["ACC00001", "ACC00002"]


def test_failed_job_is_rolled_back_alone(store):
    def good(tx):
        return tx.upsert_step(make_item(1))

    def bad(tx):
        tx.upsert_step(make_item(2))
        raise ValueError("mapping blew up")

    results = store.write([good, bad])
    assert results[0] == UpsertOutcome.INSERTED
    assert isinstance(results[1], ValueError)
    assert ids(store) == ["ACC00001"]


def test_record_message(store):
    msg = InboundMessage(received_at=datetime.now(UTC), peer="127.0.0.1:5000",
                         sending_application="RIS", sending_facility="HOSP",
                         control_id="MSG1", message_type="ORM^O01", raw=b"MSH|...\r",
                         ack_code="AA", ack=b"MSH|...\rMSA|AA|MSG1\r")
    (mid,) = store.write([lambda tx: tx.record_message(msg)])
    assert isinstance(mid, int) and mid > 0


def test_newer_schema_is_refused(store):
    store.write([lambda tx: tx.cur.execute("INSERT INTO schema_version (version) VALUES (99)")])
    with pytest.raises(StoreError, match="newer than this program knows"):
        store.migrate()


async def test_commit_queue_groups_concurrent_jobs(store):
    cq = CommitQueue(store, max_batch=64)
    cq.start()
    try:
        results = await asyncio.gather(*(
            cq.submit(lambda tx, n=n: tx.upsert_step(make_item(n))) for n in range(50)))
        assert results == [UpsertOutcome.INSERTED] * 50
        with pytest.raises(ValueError, match="boom"):
            await cq.submit(lambda tx: (_ for _ in ()).throw(ValueError("boom")))
    finally:
        cq.stop()
    assert store.count_steps() == 50
    assert cq.batches < 51  # at least some jobs shared a commit


def test_a_step_on_several_stations_is_found_under_each_title(store):
    two = make_item(1, station="CT01")
    two.ScheduledProcedureStepSequence[0].ScheduledStationAETitle = ["CT01", "CT02"]
    store.upsert_steps([two, make_item(2, station="CT02", date="20261129")])
    day = Exact(Column.SPS_START_DATE, "20261128")
    assert ids(store, Exact(Column.STATION_AET, "CT01")) == ["ACC00001"]
    assert ids(store, Exact(Column.STATION_AET, "CT02")) == ["ACC00001", "ACC00002"]
    assert ids(store, Exact(Column.STATION_AET, "CT02"), day) == ["ACC00001"]
    assert ids(store, Wildcard(Column.STATION_AET, "CT0?"), day) == ["ACC00001"]
    assert ids(store, AnyOf(Column.STATION_AET, ("MR01", "CT02")),
               Range(Column.SPS_START_DATE, "20261129", None)) == ["ACC00002"]
    # A change of stations (or of the day) moves the step with it.
    moved = make_item(1, station="MR01", date="20261130")
    assert store.upsert_steps([moved]) == [UpsertOutcome.UPDATED]
    assert ids(store, Exact(Column.STATION_AET, "CT02")) == ["ACC00002"]
    assert ids(store, Exact(Column.STATION_AET, "MR01"),
               Exact(Column.SPS_START_DATE, "20261130")) == ["ACC00001"]


def test_matching_inside_the_stored_item(store):
    """Keys without a column are filtered by the database on the item itself."""
    a = make_item(1)
    a.ReferringPhysicianName = "House^Gregory"
    a.AdmissionID = "ADM-1"
    a.ScheduledProcedureStepSequence[0].ScheduledProcedureStepLocation = "Room 1"
    a.PatientBirthDate = "19700101"
    b = make_item(2)
    b.AdmissionID = "ADM-2"
    b.ScheduledProcedureStepSequence[0].ScheduledProcedureStepLocation = "Room 2"
    b.PatientBirthDate = "19900101"
    store.upsert_steps([a, b, make_item(3)])
    admission = ItemPath((0x00380010,))
    location = ItemPath((0x00400100, 0x00400011))
    assert ids(store, Exact(admission, "ADM-2")) == ["ACC00002"]
    assert ids(store, Wildcard(admission, "ADM-*")) == ["ACC00001", "ACC00002"]
    assert ids(store, AnyOf(admission, ("ADM-1", "X"))) == ["ACC00001"]
    assert ids(store, Exact(location, "Room 1")) == ["ACC00001"]
    assert ids(store, Range(ItemPath((0x00100030,)), "19800101", None)) == ["ACC00002"]
    assert ids(store, Range(ItemPath((0x00100030,)), None, "19800101")) == ["ACC00001"]
    # No value: no single value, wildcard or range match (item 3 has none).
    assert ids(store, Wildcard(admission, "*D*")) == ["ACC00001", "ACC00002"]


def test_other_names_match_case_and_accent_insensitively_in_the_store(store):
    a = make_item(1)
    a.ReferringPhysicianName = "Müller^Jürgen"
    a.ScheduledProcedureStepSequence[0].ScheduledPerformingPhysicianName = "House^Gregory"
    b = make_item(2)
    b.ReferringPhysicianName = "Smith^Anna"
    store.upsert_steps([a, b, make_item(3)])
    referring = NamePath((0x00080090,))
    performing = NamePath((0x00400100, 0x00400006))
    assert ids(store, Wildcard(referring, normalise_name("MULL*"))) == ["ACC00001"]
    assert ids(store, Exact(referring, normalise_name("smith^anna"))) == ["ACC00002"]
    assert ids(store, Wildcard(performing, "house*")) == ["ACC00001"]
    assert ids(store, Wildcard(referring, "*")) == ["ACC00001", "ACC00002"]  # 3 has none


def test_rows_from_before_the_names_column_are_never_excluded(store):
    store.upsert_steps([make_item(1)])
    store.write([lambda tx: tx.cur.execute("UPDATE procedure_step SET names_norm = NULL")])
    assert ids(store, Exact(NamePath((0x00080090,)), "x")) == ["ACC00001"]  # a superset
