"""Copying a site from SQLite into PostgreSQL (bridge/store/dbcopy.py, issue 11), on the
real PostgreSQL server: every table the schema has, ids kept, sequences advanced, the
outbox's claims and the leader's lease left behind, a non-empty target refused, a
failed copy leaving the target empty."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.store import (
    InboundMessage,
    SqliteStore,
    Store,
    UpsertOutcome,
    WorklistQuery,
    audit_tx,
    ha_tx,
    mpps_tx,
    outbox_tx,
)
from bridge.store.dbcopy import CopyError, copy_store
from bridge.store.postgresql import PostgresStore
from bridge.store.sqltx import reading

from .test_ha_store import write
from .test_store import make_item

STEPS = 40


def fill(store: Store) -> None:
    """A little of everything: messages, steps (one on two stations), a patient, an
    MPPS with links, outbox rows (one claimed), an audit entry, instance rows, a lease."""

    def job(tx: Any) -> None:
        p = tx.param
        for n in range(STEPS):
            raw = f"MSH|^~\\&|RIS|HOSP|||20261128||ORM^O01|C{n}|P|2.3.1\rPID|1||Ü{n}\r"
            msg_id = tx.record_message(InboundMessage(
                received_at=datetime(2026, 11, 28, 9, 0, n % 60, tzinfo=UTC), peer="10.0.0.5",
                sending_application="RIS", sending_facility="HOSP", control_id=f"C{n}",
                message_type="ORM^O01", raw=raw.encode(), ack=b"MSH|...\rMSA|AA|C" + bytes(
                    [48 + n % 10]) + b"\x00\xff\r", ack_code="AA"), content_hash=f"h{n}")
            item = make_item(n, name="Müller^Jürgen" if n % 3 else "山田^太郎",
                             station="CT01\\CT02" if n == 7 else "CT01")
            assert tx.upsert_step(item, msg_id) is UpsertOutcome.INSERTED
        tx.cur.execute(
            "INSERT INTO patient (patient_id, issuer, name, birth_date, sex, attributes, "
            "merged_into_id, merged_into_issuer, merge_event, flags, created_at, updated_at, "
            f"message_id) VALUES ({', '.join([p] * 13)})",
            ("P00001", "HOSP", "DOE^JOHN", "19700101", "M", "{}", "", "", "", "", "t", "t", 1))
        mpps_id = mpps_tx.insert_mpps(tx, sop_instance_uid="1.2.3.99", status="IN PROGRESS",
                                      calling_aet="CT01", station_aet="CT01", modality="CT",
                                      item=make_item(1), step_ids=[1, 2])
        outbox_tx.enqueue(tx, [outbox_tx.NewMessage(
            destination="ris", order_key=f"PLC{k}", event="IP", message_type="ORM^O01",
            control_id=f"OUT{k}", payload=f"MSH|{k}\r".encode(), mpps_id=mpps_id,
            step_id=k + 1) for k in range(5)])
        outbox_tx.claim_heads(tx, "ris", instance="old-1", limit=1, lease_s=300)
        audit_tx.record(tx, actor="alice", role="admin", action="cancel",
                        target_kind="step", target_id="3", summary="patient left",
                        before={"status": "SCHEDULED"}, after={"status": "CANCELED"})
        me = ha_tx.InstanceInfo("old-1", "rad-a", 42, "0.1.0", "2026-11-28T08:00:00.000000Z")
        ha_tx.heartbeat(tx, me, ["mllp", "maintenance"])
        ha_tx.acquire(tx, ha_tx.MAINTENANCE, "old-1", 15)
        ha_tx.stopped(tx, "old-1")
        ha_tx.acquire(tx, ha_tx.MAINTENANCE, "old-2", 15)  # a lease that is not copied

    write(store, job)


def rows(store: Store, table: str) -> list[tuple[Any, ...]]:
    with reading(store) as (cur, _):
        cur.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        out = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
               for r in cur.fetchall()]
    key = names.index("id") if "id" in names else None
    return sorted(out, key=lambda r: r[key] if key is not None else tuple(map(str, r)))


@pytest.fixture
def sqlite_site(tmp_path) -> Any:
    s = SqliteStore(tmp_path / "bridge.sqlite3")
    s.migrate()
    fill(s)
    yield s
    s.close()


@pytest.fixture
def target(pg_dsn) -> Any:
    s = PostgresStore(pg_dsn)
    s.migrate()
    yield s
    s.close()


# At least these; whatever else the newest schema has is copied too (tables_of).
FILLED = ("message_log", "procedure_step", "procedure_step_station", "patient", "mpps",
          "mpps_step", "outbox", "audit_log", "instance")


def tables_of(store: Store) -> list[str]:
    """The source's tables, from SQLite's catalogue, less the two never copied."""
    with reading(store) as (cur, _):
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite%'")
        names = {str(r[0]) for r in cur.fetchall()}
    assert set(FILLED) <= names
    return sorted(names - {"schema_version", "role_lease"})


def test_every_table_is_copied_with_its_ids_and_the_worklist_answers_the_same(
        sqlite_site, target):
    seen: list[tuple[str, int, int]] = []
    report = copy_store(sqlite_site, target, batch=7,
                        progress=lambda t, done, total: seen.append((t, done, total)))
    assert report.ok
    counts = {t.table: (t.source, t.target) for t in report.tables}
    assert sorted(counts) == tables_of(sqlite_site)
    assert counts["procedure_step"] == (STEPS, STEPS)
    assert counts["procedure_step_station"] == (STEPS + 1, STEPS + 1)
    assert set(report.skipped) == {"schema_version", "role_lease"}
    # Referenced tables first, in batches of 7, each table's progress ending at its total.
    order = [t.table for t in report.tables]
    assert order.index("message_log") < order.index("procedure_step") < order.index("mpps_step")
    assert order.index("mpps") < order.index("outbox")
    assert ("procedure_step", 7, STEPS) in seen and ("procedure_step", STEPS, STEPS) in seen

    for table in tables_of(sqlite_site):
        if table == "outbox":
            continue
        assert rows(target, table) == rows(sqlite_site, table), table
    # The outbox row by row, except the old process's claim, which is gone.
    src, dst = rows(sqlite_site, "outbox"), rows(target, "outbox")
    assert [r[:-2] for r in dst] == [r[:-2] for r in src]
    assert src[0][-2] == "old-1" and all(r[-2:] == ("", "") for r in dst)
    assert rows(target, "role_lease") == []
    # The worklist: the same answers, decoded the same.
    q = WorklistQuery(())
    assert [d.to_json_dict() for d in target.query(q)] == \
        [d.to_json_dict() for d in sqlite_site.query(q)]
    # Sequences continue after the copied ids: new rows get new ids.
    assert report.sequences["procedure_step.id"] == STEPS + 1
    write(target, lambda tx: tx.upsert_step(make_item(STEPS + 100)))
    with reading(target) as (cur, _):
        cur.execute("SELECT MAX(id) FROM procedure_step")
        assert cur.fetchone()[0] == STEPS + 1
    new = write(target, lambda tx: outbox_tx.enqueue(tx, [outbox_tx.NewMessage(
        destination="ris", order_key="X", event="CM", message_type="ORM^O01",
        control_id="NEW", payload=b"MSH|\r")]))
    assert new == [6]
    # The copied outbox can be claimed by the copy's instances at once.
    claimed = write(target, lambda tx: outbox_tx.claim_heads(
        tx, "ris", instance="new-1", limit=10, lease_s=60))
    assert [m.control_id for m in claimed] == ["OUT0", "OUT1", "OUT2", "OUT3", "OUT4", "NEW"]


def test_a_target_that_is_not_empty_is_refused_and_left_alone(sqlite_site, target):
    assert copy_store(sqlite_site, target).ok
    before = {t: rows(target, t) for t in tables_of(sqlite_site)}
    with pytest.raises(CopyError) as info:
        copy_store(sqlite_site, target)
    text = str(info.value)
    assert text.startswith("the target database is not empty (audit_log: 1 row(s), ")
    assert "message_log: 40 row(s)" in text and "copy only into a new, empty database" in text
    assert {t: rows(target, t) for t in tables_of(sqlite_site)} == before


def test_an_instance_still_running_on_the_source_is_refused_unless_allowed(
        sqlite_site, target):
    me = ha_tx.InstanceInfo("live-1", "rad-b", 7, "0.1.0", "2026-11-28T08:00:00.000000Z")
    write(sqlite_site, lambda tx: ha_tx.heartbeat(tx, me, ["mllp"]))
    with pytest.raises(CopyError, match="an instance may still be running on the source: "
                                        "live-1 on rad-b"):
        copy_store(sqlite_site, target)
    assert rows(target, "message_log") == []
    assert copy_store(sqlite_site, target, allow_running=True).ok


def test_a_failure_half_way_leaves_the_target_empty(sqlite_site, target):
    # PostgreSQL text cannot hold NUL; SQLite can: the audit trail fails, late in the order.
    write(sqlite_site, lambda tx: tx.cur.execute(
        "UPDATE audit_log SET summary = 'a' || char(0) || 'b'"))
    with pytest.raises(CopyError, match=r"audit_log: cannot write rows with id 1 to 1"):
        copy_store(sqlite_site, target)
    for table in tables_of(sqlite_site):
        assert rows(target, table) == [], table


def test_tables_come_from_the_schema_not_from_a_list(sqlite_site, target):
    """A table a later migration adds is copied without a change to the copier."""
    for s, row_id in ((sqlite_site, "INTEGER PRIMARY KEY"), (target, "BIGSERIAL PRIMARY KEY")):
        write(s, lambda tx, row_id=row_id: tx.cur.execute(
            f"CREATE TABLE zz_later (id {row_id}, step_id BIGINT REFERENCES procedure_step "
            "(id), note TEXT NOT NULL)"))
    write(sqlite_site, lambda tx: tx.cur.execute(
        "INSERT INTO zz_later (id, step_id, note) VALUES (5, 3, 'x'), (9, 4, 'y')"))
    report = copy_store(sqlite_site, target)
    assert ("zz_later", 2, 2) in [(t.table, t.source, t.target) for t in report.tables]
    assert rows(target, "zz_later") == [(5, 3, "x"), (9, 4, "y")]
    assert report.sequences["zz_later.id"] == 10


def test_different_schemas_are_refused(sqlite_site, target):
    write(target, lambda tx: tx.cur.execute("ALTER TABLE outbox ADD COLUMN extra TEXT"))
    with pytest.raises(CopyError, match=r"the two schemas differ: outbox: columns differ "
                                        r"\(source only: -; target only: extra\)"):
        copy_store(sqlite_site, target)


def test_and_back_from_postgresql_into_a_new_sqlite_file(sqlite_site, target, tmp_path):
    assert copy_store(sqlite_site, target).ok
    back = SqliteStore(tmp_path / "back.sqlite3")
    back.migrate()
    try:
        report = copy_store(target, back, batch=11)
        assert report.ok and report.sequences == {}
        for table in tables_of(sqlite_site):
            if table != "outbox":
                assert rows(back, table) == rows(sqlite_site, table), table
        assert len(rows(back, "outbox")) == 5
    finally:
        back.close()
