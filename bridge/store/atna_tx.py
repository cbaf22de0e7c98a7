"""The ATNA audit spool and its local copy (see sqltx.py for the threading rule).

``atna_event`` keeps each audit event once, as its XML message; ``atna_subject`` the
patients, users and AE titles it names (what ``mwl-bridge audit list`` filters on);
``atna_delivery`` one row per event and Audit Record Repository while the event is
not yet delivered there. A delivered row is deleted; the event stays as the local
copy until retention removes it (with any delivery still waiting: counted).

Several instances on one database (PostgreSQL) share the spool as they share the
outbox (outbox_tx.py): an instance sends a row only after ``claim`` wrote its name
into ``claimed_by`` with a lease from the database's clock (rows picked with
``FOR UPDATE SKIP LOCKED``), so no two instances send the same event; a dead
instance's claims lapse and another takes them over.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import clock, reading, skip_locked, stamp


@dataclass(frozen=True, slots=True)
class SpoolEvent:
    """An audit event to keep: its indexed facts and its message."""

    at: str  # store timestamp of the event
    event_id: str  # e.g. 110112
    event_name: str  # e.g. Query
    action: str
    outcome: int
    type_codes: str  # space-separated codes (RAD-5 ...)
    message: bytes  # the XML audit message
    subjects: tuple[tuple[str, str], ...] = ()  # (patient|user|ae, value)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    at: str
    event_id: str
    event_name: str
    action: str
    outcome: int
    type_codes: str
    message: bytes
    subjects: tuple[tuple[str, str], ...] = ()
    pending: tuple[str, ...] = ()  # repositories it still waits for


@dataclass(frozen=True, slots=True)
class Pending:
    event_id: int
    attempts: int
    message: bytes


_COLUMNS = "e.id, e.at, e.event_id, e.event_name, e.action, e.outcome, e.type_codes, e.message"


# --- inside a write transaction ---

def spool(tx: StoreTx, events: Iterable[SpoolEvent], repositories: Sequence[str]) -> list[int]:
    """Keep each event, and queue it for each repository."""
    cur, p = tx.cur, tx.param
    now = stamp()
    ids = []
    for e in events:
        cur.execute("INSERT INTO atna_event (at, event_id, event_name, action, outcome,"
                    f" type_codes, message) VALUES ({', '.join([p] * 7)}) RETURNING id",
                    (e.at, e.event_id, e.event_name, e.action, e.outcome, e.type_codes,
                     e.message))
        event = int(cur.fetchone()[0])
        ids.append(event)
        for kind, value in sorted(set(e.subjects)):
            cur.execute(f"INSERT INTO atna_subject (event_id, kind, value) VALUES ({p}, {p},"
                        f" {p})", (event, kind, value))
        for repository in repositories:
            cur.execute("INSERT INTO atna_delivery (event_id, repository, attempts,"
                        f" next_attempt_at, last_error) VALUES ({p}, {p}, 0, {p}, '')",
                        (event, repository, now))
    return ids


def claim(tx: StoreTx, repository: str, *, instance: str, limit: int, lease_s: float
          ) -> list[Pending]:
    """Claim up to ``limit`` due deliveries to ``repository`` for ``instance``, oldest
    first: those nobody holds a live lease on (by the database's clock)."""
    cur, p = tx.cur, tx.param
    db_now, until = clock(tx, lease_s)
    cur.execute(f"SELECT event_id, attempts FROM atna_delivery WHERE repository = {p} AND"
                f" next_attempt_at <= {p} AND (claimed_by = '' OR lease_until < {p})"
                f" ORDER BY event_id LIMIT {int(limit)}{skip_locked(tx)}",
                (repository, stamp(), db_now))
    rows = [(int(r[0]), int(r[1])) for r in cur.fetchall()]
    out = []
    for event, attempts in rows:
        cur.execute(f"UPDATE atna_delivery SET claimed_by = {p}, lease_until = {p} WHERE"
                    f" repository = {p} AND event_id = {p}", (instance, until, repository,
                                                              event))
        cur.execute(f"SELECT message FROM atna_event WHERE id = {p}", (event,))
        out.append(Pending(event, attempts, bytes(cur.fetchone()[0])))
    return out


def delivered(tx: StoreTx, repository: str, event_ids: Sequence[int], *,
              claimed_by: str | None = None) -> None:
    cur, p = tx.cur, tx.param
    held = "" if claimed_by is None else f" AND claimed_by = {p}"
    for event in event_ids:
        cur.execute(f"DELETE FROM atna_delivery WHERE repository = {p} AND event_id = {p}"
                    + held, (repository, event, *(() if claimed_by is None else (claimed_by,))))


def failed(tx: StoreTx, repository: str, event_ids: Sequence[int], *, error: str,
           retry_at: str | None = None) -> None:
    """Count a failed attempt and give the claim back (another instance may try);
    with ``retry_at``, not before then."""
    cur, p = tx.cur, tx.param
    later = "" if retry_at is None else f", next_attempt_at = {p}"
    for event in event_ids:
        cur.execute(f"UPDATE atna_delivery SET attempts = attempts + 1, last_error = {p},"
                    f" claimed_by = '', lease_until = ''{later} WHERE repository = {p} AND"
                    f" event_id = {p}", (error[:500], *(() if retry_at is None else (retry_at,)),
                                         repository, event))


def give_up_beyond(tx: StoreTx, repository: str, keep: int) -> int:
    """Drop the oldest waiting deliveries to ``repository`` beyond ``keep``; how many."""
    cur, p = tx.cur, tx.param
    cur.execute(f"SELECT COUNT(*) FROM atna_delivery WHERE repository = {p}", (repository,))
    excess = int(cur.fetchone()[0]) - keep
    if excess <= 0:
        return 0
    cur.execute(f"DELETE FROM atna_delivery WHERE repository = {p} AND event_id IN (SELECT"
                f" event_id FROM atna_delivery WHERE repository = {p} ORDER BY event_id"
                f" LIMIT {int(excess)})", (repository, repository))
    return excess


def purge(tx: StoreTx, *, before: str) -> tuple[int, int]:
    """Remove events older than ``before``: (events removed, of which undelivered)."""
    cur, p = tx.cur, tx.param
    cur.execute("SELECT COUNT(DISTINCT d.event_id) FROM atna_delivery d JOIN atna_event e"
                f" ON e.id = d.event_id WHERE e.at < {p}", (before,))
    undelivered = int(cur.fetchone()[0])
    old = f"SELECT id FROM atna_event WHERE at < {p}"
    cur.execute(f"DELETE FROM atna_delivery WHERE event_id IN ({old})", (before,))
    cur.execute(f"DELETE FROM atna_subject WHERE event_id IN ({old})", (before,))
    cur.execute(f"DELETE FROM atna_event WHERE at < {p}", (before,))
    return cur.rowcount, undelivered


# --- reads (any thread; blocking) ---

def due(store: Store, repository: str, *, now: str, limit: int) -> list[Pending]:
    """The oldest deliveries to ``repository`` whose time has come, in event order."""
    with reading(store) as (cur, p):
        cur.execute("SELECT d.event_id, d.attempts, e.message FROM atna_delivery d JOIN"
                    f" atna_event e ON e.id = d.event_id WHERE d.repository = {p} AND"
                    f" d.next_attempt_at <= {p} ORDER BY d.event_id LIMIT {int(limit)}",
                    (repository, now))
        return [Pending(int(r[0]), int(r[1]), bytes(r[2])) for r in cur.fetchall()]


def depth(store: Store) -> dict[str, int]:
    """Undelivered events per repository."""
    with reading(store) as (cur, _p):
        cur.execute("SELECT repository, COUNT(*) FROM atna_delivery GROUP BY repository")
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}


def search(store: Store, *, patient: str = "", user: str = "", ae: str = "",
           since: str = "", until: str = "", event: str = "", limit: int = 100,
           offset: int = 0) -> tuple[list[StoredEvent], int]:
    """Newest first; (one page, the total). ``user`` and ``ae`` match a participant's
    user ID (an operator; an AE title or HL7 application|facility)."""
    with reading(store) as (cur, p):
        clauses: list[str] = []
        params: list[Any] = []
        for kind, value in (("patient", patient), ("user", user), ("ae", ae)):
            if value:
                clauses.append(f"e.id IN (SELECT event_id FROM atna_subject WHERE kind = {p}"
                               f" AND value = {p})")
                params += [kind, value]
        for clause, value in ((f"e.at >= {p}", since), (f"e.at < {p}", until),
                              (f"(e.event_id = {p} OR e.event_name = {p})", event)):
            if value:
                clauses.append(clause)
                params += [value] * clause.count(p)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        cur.execute(f"SELECT COUNT(*) FROM atna_event e{where}", params)
        total = int(cur.fetchone()[0])
        cur.execute(f"SELECT {_COLUMNS} FROM atna_event e{where} ORDER BY e.id DESC"
                    f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
        rows = cur.fetchall()
        ids = [int(r[0]) for r in rows]
        subjects: dict[int, list[tuple[str, str]]] = {i: [] for i in ids}
        pending: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            marks = ", ".join([p] * len(ids))
            cur.execute(f"SELECT event_id, kind, value FROM atna_subject WHERE event_id IN"
                        f" ({marks}) ORDER BY kind, value", ids)
            for r in cur.fetchall():
                subjects[int(r[0])].append((str(r[1]), str(r[2])))
            cur.execute(f"SELECT event_id, repository FROM atna_delivery WHERE event_id IN"
                        f" ({marks}) ORDER BY repository", ids)
            for r in cur.fetchall():
                pending[int(r[0])].append(str(r[1]))
        return [StoredEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]),
                            str(r[6]), bytes(r[7]), tuple(subjects[int(r[0])]),
                            tuple(pending[int(r[0])])) for r in rows], total


def get_event(store: Store, event_id: int) -> StoredEvent | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {_COLUMNS} FROM atna_event e WHERE e.id = {p}", (event_id,))
        r = cur.fetchone()
    if r is None:
        return None
    return StoredEvent(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), int(r[5]),
                       str(r[6]), bytes(r[7]))
