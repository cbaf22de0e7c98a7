"""The spool and local copy (bridge/store/atna_tx.py) on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bridge.store import atna_tx
from bridge.store.atna_tx import SpoolEvent
from bridge.store.sqltx import stamp


def _event(n: int, *, at: str = "", subjects=()) -> SpoolEvent:
    return SpoolEvent(at=at or stamp(), event_id="110112", event_name="Query", action="E",
                      outcome=0, type_codes="RAD-5", message=f"<m{n}/>".encode(),
                      subjects=tuple(subjects))


def _write(store, job):
    (result,) = store.write([job])
    if isinstance(result, BaseException):
        raise result
    return result


def test_spooled_events_wait_per_repository_until_delivered(store):
    ids = _write(store, lambda tx: atna_tx.spool(tx, [_event(1), _event(2)], ["a", "b"]))
    assert atna_tx.depth(store) == {"a": 2, "b": 2}
    due = atna_tx.due(store, "a", now=stamp(), limit=10)
    assert [(p.event_id, p.message) for p in due] == [(ids[0], b"<m1/>"), (ids[1], b"<m2/>")]
    _write(store, lambda tx: atna_tx.delivered(tx, "a", [ids[0]]))
    assert atna_tx.depth(store) == {"a": 1, "b": 2}
    later = stamp(datetime.now(UTC) + timedelta(hours=1))
    _write(store, lambda tx: atna_tx.failed(tx, "b", ids, retry_at=later, error="down"))
    assert atna_tx.due(store, "b", now=stamp(), limit=10) == []
    assert [p.attempts for p in atna_tx.due(store, "b", now=later, limit=10)] == [1, 1]
    # The local copy keeps delivered events too.
    events, total = atna_tx.search(store)
    assert total == 2 and events[0].pending == ("a", "b") and events[1].pending == ("b",)


def test_the_local_copy_filters_by_patient_user_and_ae(store):
    _write(store, lambda tx: atna_tx.spool(tx, [
        _event(1, subjects=[("patient", "P1"), ("ae", "CT01")]),
        _event(2, subjects=[("patient", "P2"), ("user", "alice")]),
        _event(3, subjects=[("patient", "P1"), ("user", "alice")])], []))
    assert atna_tx.depth(store) == {}
    by_patient, n = atna_tx.search(store, patient="P1")
    assert n == 2 and [e.message for e in by_patient] == [b"<m3/>", b"<m1/>"]
    assert [e.message for e in atna_tx.search(store, user="alice")[0]] == [b"<m3/>", b"<m2/>"]
    assert [e.message for e in atna_tx.search(store, ae="CT01")[0]] == [b"<m1/>"]
    assert atna_tx.search(store, patient="P1", user="alice")[1] == 1
    assert atna_tx.search(store, patient="P%")[1] == 0
    assert ("patient", "P1") in by_patient[0].subjects


def test_retention_removes_old_events_and_counts_undelivered_ones(store):
    old = stamp(datetime.now(UTC) - timedelta(days=100))
    _write(store, lambda tx: atna_tx.spool(tx, [_event(1, at=old, subjects=[("ae", "X")])],
                                           ["a"]))
    _write(store, lambda tx: atna_tx.spool(tx, [_event(2, at=old), _event(3)], []))
    cutoff = stamp(datetime.now(UTC) - timedelta(days=90))
    removed, undelivered = _write(store, lambda tx: atna_tx.purge(tx, before=cutoff))
    assert (removed, undelivered) == (2, 1)
    assert [e.message for e in atna_tx.search(store)[0]] == [b"<m3/>"]
    assert atna_tx.depth(store) == {}


def test_beyond_max_pending_the_oldest_deliveries_are_given_up(store):
    ids = _write(store, lambda tx: atna_tx.spool(tx, [_event(n) for n in range(5)], ["a"]))
    assert _write(store, lambda tx: atna_tx.give_up_beyond(tx, "a", 3)) == 2
    assert [p.event_id for p in atna_tx.due(store, "a", now=stamp(), limit=10)] == ids[2:]
    assert _write(store, lambda tx: atna_tx.give_up_beyond(tx, "a", 3)) == 0


def test_a_claimed_delivery_is_sent_by_one_instance_only(store):
    ids = _write(store, lambda tx: atna_tx.spool(tx, [_event(n) for n in range(3)], ["a"]))
    mine = _write(store, lambda tx: atna_tx.claim(tx, "a", instance="one", limit=2,
                                                  lease_s=60))
    assert [p.event_id for p in mine] == ids[:2] and mine[0].message == b"<m0/>"
    theirs = _write(store, lambda tx: atna_tx.claim(tx, "a", instance="two", limit=10,
                                                    lease_s=60))
    assert [p.event_id for p in theirs] == ids[2:]
    # Only the claim's holder records the delivery.
    _write(store, lambda tx: atna_tx.delivered(tx, "a", ids[:2], claimed_by="two"))
    assert atna_tx.depth(store) == {"a": 3}
    _write(store, lambda tx: atna_tx.delivered(tx, "a", ids[:2], claimed_by="one"))
    assert atna_tx.depth(store) == {"a": 1}
    # A failure gives the claim back, due again at once here.
    _write(store, lambda tx: atna_tx.failed(tx, "a", ids[2:], retry_at=stamp(), error="x"))
    again = _write(store, lambda tx: atna_tx.claim(tx, "a", instance="one", limit=10,
                                                   lease_s=60))
    assert [(p.event_id, p.attempts) for p in again] == [(ids[2], 1)]


def test_a_lapsed_claim_is_taken_over(store):
    ids = _write(store, lambda tx: atna_tx.spool(tx, [_event(1)], ["a"]))
    _write(store, lambda tx: atna_tx.claim(tx, "a", instance="dead", limit=10, lease_s=-1))
    taken = _write(store, lambda tx: atna_tx.claim(tx, "a", instance="alive", limit=10,
                                                   lease_s=60))
    assert [p.event_id for p in taken] == ids


def test_two_instances_on_postgresql_never_claim_the_same_event(pg_pair):
    a, b = pg_pair
    ids = _write(a, lambda tx: atna_tx.spool(tx, [_event(n) for n in range(6)], ["arr"]))
    first = _write(a, lambda tx: atna_tx.claim(tx, "arr", instance="a", limit=4, lease_s=60))
    second = _write(b, lambda tx: atna_tx.claim(tx, "arr", instance="b", limit=4, lease_s=60))
    got = [p.event_id for p in first] + [p.event_id for p in second]
    assert sorted(got) == ids and len(set(got)) == 6
