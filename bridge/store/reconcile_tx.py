"""PACS reconciliation state (the ``reconcile_state`` table; see sqltx.py for the
threading rule): which open items are due to be asked for at the PACS, what the
last answer counted, and the conflicts found there.

The due question is one index range per status over (sps_status, sps_start)
(migration ``_reconcile``): items whose scheduled start lies in the watch window,
never checked or whose ``next_check`` has come, and not in conflict. How many
C-FIND requests a cycle makes therefore follows the items due, not the items stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from bridge.store.base import Store, StoreTx
from bridge.store.items import loads_item
from bridge.store.sqltx import reading, stamp


@dataclass(frozen=True, slots=True)
class WatchedStep:
    """An open item due for a look at the PACS, with what the last look found."""

    id: int
    sps_status: str
    study_uid: str
    accession: str
    patient_id: str
    checks: int = 0
    found_uid: str = ""
    series: int = -1
    instances: int = -1  # -1: not found so far
    seen_at: str = ""  # when ``instances`` was first answered (store timestamp)


@dataclass(frozen=True, slots=True)
class Conflict:
    """A study at the PACS that contradicts its item; the item is not completed."""

    step_id: int
    kind: str  # study_uid or patient_id
    detail: str  # names attributes, never values
    pacs: str
    found_uid: str
    accession: str
    sps_status: str
    at: str


def _in(column: str, values: Sequence[str], p: str) -> str:
    return f"{column} IN ({', '.join([p] * len(values))})"


def due_steps(store: Store, *, statuses: Sequence[str], start_from: str, start_to: str,
              now: str, stations: Sequence[str] = (), modalities: Sequence[str] = (),
              limit: int = 1000) -> list[WatchedStep]:
    """Items in ``statuses`` scheduled to start in [``start_from``, ``start_to``)
    (YYYYMMDDHHMMSS, local time, as ``sps_start``), of these stations and
    modalities when given, whose next check is due at ``now`` (a store timestamp)
    and that are not in conflict; the earliest scheduled first."""
    if not statuses:
        return []
    with reading(store) as (cur, p):
        where = [_in("ps.sps_status", statuses, p), f"ps.sps_start >= {p}",
                 f"ps.sps_start < {p}", f"(r.step_id IS NULL OR (r.next_check <= {p} "
                 "AND r.conflict = ''))"]
        params: list[object] = [*statuses, start_from, start_to, now]
        if modalities:
            where.append(_in("ps.modality", modalities, p))
            params.extend(modalities)
        if stations:
            # Any of the step's stations (Scheduled Station AE Title is VM 1-n).
            where.append(f"ps.id IN (SELECT step_id FROM procedure_step_station WHERE "
                         f"{_in('aet', stations, p)})")
            params.extend(stations)
        cur.execute(
            "SELECT ps.id, ps.sps_status, ps.study_instance_uid, ps.accession_number, "
            "ps.patient_id, r.checks, r.found_uid, r.series, r.instances, r.seen_at "
            "FROM procedure_step ps LEFT JOIN reconcile_state r ON r.step_id = ps.id "
            f"WHERE {' AND '.join(where)} ORDER BY ps.sps_start, ps.id LIMIT {int(limit)}",
            params)
        return [_watched(r) for r in cur.fetchall()]


def _watched(r: Sequence[Any]) -> WatchedStep:
    if r[5] is None:
        return WatchedStep(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]))
    return WatchedStep(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), checks=int(r[5]),
                       found_uid=str(r[6]), series=int(r[7]), instances=int(r[8]),
                       seen_at=str(r[9]))


def record_check(tx: StoreTx, step_id: int, *, next_check: str, pacs: str = "",
                 found_uid: str = "", series: int = -1, instances: int = -1,
                 seen_at: str = "") -> None:
    """What one look at the PACS found for a step, and when to look again."""
    _upsert(tx, step_id, next_check=next_check, pacs=pacs, found_uid=found_uid, series=series,
            instances=instances, seen_at=seen_at, conflict="", detail="")


def flag_conflict(tx: StoreTx, step_id: int, *, kind: str, detail: str, pacs: str,
                  found_uid: str) -> None:
    """Mark a step in conflict: the loop no longer asks for it until it is cleared."""
    _upsert(tx, step_id, next_check=stamp(), pacs=pacs, found_uid=found_uid, series=-1,
            instances=-1, seen_at="", conflict=kind, detail=detail[:200])


def _upsert(tx: StoreTx, step_id: int, **values: object) -> None:
    cur, p = tx.cur, tx.param
    names = [*values, "updated_at"]
    params = [step_id, *values.values(), stamp()]
    sets = ", ".join(f"{n} = excluded.{n}" for n in names)
    cur.execute(
        f"INSERT INTO reconcile_state (step_id, {', '.join(names)}, checks) "
        f"VALUES ({', '.join([p] * (len(names) + 1))}, 1) "
        f"ON CONFLICT (step_id) DO UPDATE SET {sets}, "
        "checks = reconcile_state.checks + 1", params)


def forget(tx: StoreTx, step_ids: Iterable[int]) -> None:
    """Drop the state of steps that are no longer watched (completed, or closed by
    another source)."""
    cur, p = tx.cur, tx.param
    for step_id in sorted(set(step_ids)):
        cur.execute(f"DELETE FROM reconcile_state WHERE step_id = {p}", (step_id,))


def clear_conflict(tx: StoreTx, step_id: int) -> bool:
    """Have the loop ask for the step again (the operator fixed the cause)."""
    cur, p = tx.cur, tx.param
    cur.execute(f"DELETE FROM reconcile_state WHERE step_id = {p} AND conflict <> ''",
                (step_id,))
    return int(cur.rowcount or 0) > 0


def conflicts(store: Store, limit: int = 200) -> list[Conflict]:
    """Steps in conflict, the newest first."""
    with reading(store) as (cur, _):
        cur.execute(
            "SELECT r.step_id, r.conflict, r.detail, r.pacs, r.found_uid, ps.accession_number,"
            " ps.sps_status, r.updated_at FROM reconcile_state r JOIN procedure_step ps "
            "ON ps.id = r.step_id WHERE r.conflict <> '' "
            f"ORDER BY r.updated_at DESC, r.step_id DESC LIMIT {int(limit)}")
        return [Conflict(int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), str(r[5]),
                         str(r[6]), str(r[7])) for r in cur.fetchall()]


@dataclass(frozen=True, slots=True)
class Summary:
    watched: int  # items with a state row (looked for at least once)
    found: int  # of these, found at the PACS and settling
    conflicts: int


def summary(store: Store) -> Summary:
    with reading(store) as (cur, _):
        cur.execute("SELECT COUNT(*), "
                    "SUM(CASE WHEN instances >= 0 AND conflict = '' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN conflict <> '' THEN 1 ELSE 0 END) FROM reconcile_state")
        row = cur.fetchone()
        return Summary(int(row[0] or 0), int(row[1] or 0), int(row[2] or 0))


def state_of(store: Store, step_id: int) -> WatchedStep | None:
    """One step's reconciliation state (tests, the CLI)."""
    with reading(store) as (cur, p):
        cur.execute("SELECT ps.id, ps.sps_status, ps.study_instance_uid, ps.accession_number, "
                    "ps.patient_id, r.checks, r.found_uid, r.series, r.instances, r.seen_at "
                    "FROM reconcile_state r JOIN procedure_step ps ON ps.id = r.step_id "
                    f"WHERE r.step_id = {p}", (step_id,))
        row = cur.fetchone()
        return None if row is None else _watched(row)


def item_of(store: Store, step_id: int) -> Dataset | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT item FROM procedure_step WHERE id = {p}", (step_id,))
        row = cur.fetchone()
        return None if row is None else loads_item(row[0])
