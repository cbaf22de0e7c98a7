"""Several instances on one database (issue 11), at the store: schema upgrades under
a lock, batches that lose a race run again, role leases and the heartbeat rows."""

from __future__ import annotations

import threading
import time

import pytest
from pydicom import Dataset

from bridge.store import Store, StoreError, UpsertOutcome, ha_tx, migrations
from bridge.store.postgresql import PostgresStore
from bridge.store.sqltx import reading

from .test_store import make_item


def write(store: Store, fn, *args, **kw):
    (result,) = store.write([lambda tx: fn(tx, *args, **kw)])
    if isinstance(result, BaseException):
        raise result
    return result


def test_instances_migrating_at_once_wait_for_the_one_that_migrates(pg_dsn):
    stores = [PostgresStore(pg_dsn) for _ in range(4)]
    results: list[object] = []
    barrier = threading.Barrier(len(stores))

    def run(s: Store) -> None:
        barrier.wait()
        try:
            results.append(s.migrate())
        except Exception as exc:  # noqa: BLE001 - asserted below
            results.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latest = migrations.latest_version()
    assert results == [latest] * 4
    with reading(stores[0]) as (cur, _):
        cur.execute("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in cur.fetchall()] == list(range(1, latest + 1))
    for s in stores:
        s.close()


def test_a_newer_schema_is_refused_with_one_line(store):
    latest = migrations.latest_version()
    write(store, lambda tx: tx.cur.execute(
        f"INSERT INTO schema_version (version) VALUES ({latest + 1})"))
    with pytest.raises(StoreError) as info:
        store.migrate()
    text = str(info.value)
    assert "\n" not in text
    assert text == (f"the database schema is version {latest + 1}, newer than this program "
                    f"knows ({latest}); upgrade mwl-bridge")


_NUMBERS = {"R1": 1, "X": 2, "Y": 3}


def item(name: str) -> Dataset:
    return make_item(_NUMBERS[name])


def test_a_batch_that_loses_a_unique_race_runs_again(pg_pair):
    """Instance A inserts a step and has not committed; instance B inserts the same
    step: B waits, then hits the unique key, and runs its batch again: it finds A's row
    instead of failing (an ingest would otherwise answer AR 207)."""
    a, b = pg_pair
    inserted, release = threading.Event(), threading.Event()
    out: dict[str, object] = {}

    def first(tx):
        outcome = tx.upsert_step(item("R1"))
        inserted.set()
        release.wait(10)
        return outcome

    def run_a() -> None:
        (out["a"],) = a.write([first])

    ta = threading.Thread(target=run_a)
    ta.start()
    assert inserted.wait(10)
    threading.Timer(0.3, release.set).start()  # B is blocked on A's row meanwhile
    (out["b"],) = b.write([lambda tx: tx.upsert_step(item("R1"))])
    ta.join()
    assert out == {"a": UpsertOutcome.INSERTED, "b": UpsertOutcome.UNCHANGED}
    assert b.conflict_retries >= 1
    assert a.count_steps() == 1


def test_a_deadlock_between_two_instances_resolves_without_an_error(pg_pair):
    """A writes X then Y, B writes Y then X, each holding its first row: PostgreSQL
    breaks the deadlock by failing one; that batch runs again, whole, after the other."""
    a, b = pg_pair
    a.upsert_steps([item("X"), item("Y")])
    both = threading.Barrier(2)
    errors: list[BaseException] = []

    def touch(first: str, second: str):
        attempts = []

        def job(tx):
            attempts.append(1)
            tx.cur.execute("UPDATE procedure_step SET updated_at = updated_at WHERE "
                           "accession_number = %s", (item(first).AccessionNumber,))
            if len(attempts) == 1:
                both.wait(10)
            tx.cur.execute("UPDATE procedure_step SET updated_at = updated_at WHERE "
                           "accession_number = %s", (item(second).AccessionNumber,))
            return len(attempts)
        return job

    def run(s: Store, job) -> None:
        (r,) = s.write([job])
        if isinstance(r, BaseException):
            errors.append(r)

    threads = [threading.Thread(target=run, args=(a, touch("X", "Y"))),
               threading.Thread(target=run, args=(b, touch("Y", "X")))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert a.conflict_retries + b.conflict_retries >= 1


def test_sqlite_never_retries_a_real_unique_violation(tmp_path):
    from bridge.store import SqliteStore

    s = SqliteStore(tmp_path / "b.sqlite3")
    s.migrate()
    (r,) = s.write([lambda tx: tx.cur.execute(
        "INSERT INTO role_lease VALUES ('x', 'a', '', ''), ('x', 'b', '', '')")])
    assert isinstance(r, Exception)
    assert s.conflict_retries == 0
    s.close()


def test_role_lease_taken_renewed_lapsed_and_moved(store):
    lease = write(store, ha_tx.acquire, "maintenance", "one", 30)
    assert lease.holder == "one"
    assert write(store, ha_tx.acquire, "maintenance", "two", 30).holder == "one"
    assert write(store, ha_tx.holds, "maintenance", "one")
    assert not write(store, ha_tx.holds, "maintenance", "two")
    renewed = write(store, ha_tx.acquire, "maintenance", "one", 0.2)
    assert renewed.holder == "one" and renewed.since == lease.since
    time.sleep(0.3)  # "one" died: its lease lapses
    assert not write(store, ha_tx.holds, "maintenance", "one")
    assert write(store, ha_tx.acquire, "maintenance", "two", 30).holder == "two"
    assert [r.holder for r in ha_tx.list_leases(store)] == ["two"]
    write(store, ha_tx.release, "maintenance", "two")
    assert write(store, ha_tx.acquire, "maintenance", "one", 30).holder == "one"


def test_heartbeat_rows_and_a_clean_stop(store):
    me = ha_tx.InstanceInfo("host-1-abc", "host", 1, "0.1.0", "2026-01-01T00:00:00.000000Z")
    first = write(store, ha_tx.heartbeat, me, ["mllp", "maintenance"])
    write(store, ha_tx.acquire, "maintenance", me.id, 30)
    time.sleep(0.01)
    second = write(store, ha_tx.heartbeat, me, ["mllp"])
    assert second > first
    (row,) = ha_tx.list_instances(store)
    assert (row.id, row.host, row.pid, row.version, row.roles, row.last_seen,
            row.stopped_at) == (me.id, "host", 1, "0.1.0", ("mllp",), second, "")
    write(store, ha_tx.stopped, me.id)
    (row,) = ha_tx.list_instances(store)
    assert row.roles == () and row.stopped_at
    assert ha_tx.list_leases(store) == []
    assert ha_tx.database_now(store) >= row.stopped_at
