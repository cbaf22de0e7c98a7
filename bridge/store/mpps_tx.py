"""MPPS instances and their links to procedure steps, inside the store's write
transaction (see sqltx.py for the threading rule).

The MPPS handlers run one ``Store.write`` job per N-CREATE/N-SET: the instance,
the status of every linked step and the outbound messages (outbox_tx.py) are
committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from bridge.store.base import Store, StoreTx
from bridge.store.items import dumps_item, loads_item
from bridge.store.query import Column
from bridge.store.sqltx import for_update, reading, skip_locked, stamp

_STEP_MATCH_COLUMNS = frozenset(c.value for c in Column) | {
    "placer_order_number", "filler_order_number"}


@dataclass(frozen=True, slots=True)
class StepRecord:
    """A stored procedure step as the MPPS path reads and updates it."""

    id: int
    item: Dataset
    sps_status: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class MppsRecord:
    id: int
    sop_instance_uid: str
    status: str
    calling_aet: str
    station_aet: str
    modality: str
    scheduled: bool
    note: str
    item: Dataset
    created_at: str
    updated_at: str
    step_ids: tuple[int, ...] = ()


_MPPS_COLUMNS = ("id, sop_instance_uid, status, calling_aet, station_aet, modality, scheduled, "
                 "note, item, created_at, updated_at")


def _mpps(row: Sequence[Any], step_ids: tuple[int, ...] = ()) -> MppsRecord:
    return MppsRecord(id=int(row[0]), sop_instance_uid=row[1], status=row[2], calling_aet=row[3],
                      station_aet=row[4], modality=row[5], scheduled=bool(row[6]), note=row[7],
                      item=loads_item(row[8]), created_at=row[9], updated_at=row[10],
                      step_ids=step_ids)


def find_mpps(tx: StoreTx, sop_instance_uid: str) -> MppsRecord | None:
    cur, p = tx.cur, tx.param
    cur.execute(f"SELECT {_MPPS_COLUMNS} FROM mpps WHERE sop_instance_uid = {p}",
                (sop_instance_uid,))
    row = cur.fetchone()
    if row is None:
        return None
    cur.execute(f"SELECT step_id FROM mpps_step WHERE mpps_id = {p} ORDER BY step_id", (row[0],))
    return _mpps(row, tuple(int(r[0]) for r in cur.fetchall()))


def insert_mpps(tx: StoreTx, *, sop_instance_uid: str, status: str, calling_aet: str,
                station_aet: str, modality: str, item: Dataset, step_ids: Iterable[int],
                note: str = "") -> int:
    """Store a new instance and its links. The caller has checked it is new."""
    cur, p = tx.cur, tx.param
    ids = sorted(set(step_ids))
    now = stamp()
    cur.execute(
        "INSERT INTO mpps (sop_instance_uid, status, calling_aet, station_aet, modality, "
        "scheduled, note, item, created_at, updated_at)"
        f" VALUES ({', '.join([p] * 10)}) RETURNING id",
        (sop_instance_uid, status, calling_aet, station_aet, modality, 1 if ids else 0, note,
         dumps_item(item), now, now))
    mpps_id = int(cur.fetchone()[0])
    for step_id in ids:
        cur.execute(f"INSERT INTO mpps_step (mpps_id, step_id) VALUES ({p}, {p})",
                    (mpps_id, step_id))
    return mpps_id


def update_mpps(tx: StoreTx, mpps_id: int, *, status: str, item: Dataset,
                note: str | None = None) -> None:
    cur, p = tx.cur, tx.param
    sets = f"status = {p}, item = {p}, updated_at = {p}"
    params: list[object] = [status, dumps_item(item), stamp()]
    if note is not None:
        sets += f", note = {p}"
        params.append(note)
    cur.execute(f"UPDATE mpps SET {sets} WHERE id = {p}", (*params, mpps_id))


def find_steps(tx: StoreTx, where: Mapping[str, str]) -> list[StepRecord]:
    """Steps whose indexed columns equal every value in ``where`` (none when it is empty).

    Like ``steps_by_id``, locked until the job's commit on PostgreSQL: the status a
    change is decided on cannot be changed meanwhile by another instance."""
    if not where:
        return []
    unknown = set(where) - _STEP_MATCH_COLUMNS
    if unknown:
        raise ValueError(f"not a procedure step key column: {', '.join(sorted(unknown))}")
    cur, p = tx.cur, tx.param
    clause = " AND ".join(f"{column} = {p}" for column in where)
    cur.execute(f"SELECT id, item, sps_status, updated_at FROM procedure_step WHERE {clause} "
                f"ORDER BY id{for_update(tx)}", tuple(where.values()))
    return [StepRecord(int(r[0]), loads_item(r[1]), r[2], r[3]) for r in cur.fetchall()]


def steps_by_id(tx: StoreTx, ids: Iterable[int]) -> list[StepRecord]:
    cur, p = tx.cur, tx.param
    out = []
    for step_id in sorted(set(ids)):
        cur.execute(f"SELECT id, item, sps_status, updated_at FROM procedure_step "
                    f"WHERE id = {p}{for_update(tx)}", (step_id,))
        row = cur.fetchone()
        if row is not None:
            out.append(StepRecord(int(row[0]), loads_item(row[1]), row[2], row[3]))
    return out


def set_step_status(tx: StoreTx, step_id: int, item: Dataset, status: str, *,
                    message_id: int | None = None) -> Dataset:
    """Set the status column and the stored item's Scheduled Procedure Step Status
    together; the item written is returned. Only bridge.steps calls this."""
    cur, p = tx.cur, tx.param
    item = loads_item(dumps_item(item))  # a copy: the caller's record stays as read
    sps_seq = item.get("ScheduledProcedureStepSequence")
    if sps_seq:
        sps_seq[0].ScheduledProcedureStepStatus = status
    now = stamp()
    if message_id is None:
        cur.execute(f"UPDATE procedure_step SET sps_status = {p}, item = {p}, updated_at = {p} "
                    f"WHERE id = {p}", (status, dumps_item(item), now, step_id))
    else:
        cur.execute(f"UPDATE procedure_step SET sps_status = {p}, item = {p}, updated_at = {p}, "
                    f"message_id = {p} WHERE id = {p}",
                    (status, dumps_item(item), now, message_id, step_id))
    return item


def link_steps(tx: StoreTx, mpps_id: int, step_ids: Iterable[int]) -> None:
    cur, p = tx.cur, tx.param
    wanted = set(step_ids)
    cur.execute(f"SELECT step_id FROM mpps_step WHERE mpps_id = {p}", (mpps_id,))
    have = {int(r[0]) for r in cur.fetchall()}
    for step_id in sorted(wanted - have):
        cur.execute(f"INSERT INTO mpps_step (mpps_id, step_id) VALUES ({p}, {p})",
                    (mpps_id, step_id))
    if wanted - have:
        cur.execute(f"UPDATE mpps SET scheduled = 1 WHERE id = {p}", (mpps_id,))


# --- reads outside a transaction (CLI, tests) ---

def get_mpps(store: Store, sop_instance_uid: str) -> MppsRecord | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {_MPPS_COLUMNS} FROM mpps WHERE sop_instance_uid = {p}",
                    (sop_instance_uid,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(f"SELECT step_id FROM mpps_step WHERE mpps_id = {p} ORDER BY step_id",
                    (row[0],))
        return _mpps(row, tuple(int(r[0]) for r in cur.fetchall()))


def list_mpps(store: Store, limit: int = 100) -> list[MppsRecord]:
    with reading(store) as (cur, _):
        cur.execute(f"SELECT {_MPPS_COLUMNS} FROM mpps ORDER BY id DESC LIMIT {int(limit)}")
        return [_mpps(r) for r in cur.fetchall()]


def step_status(store: Store, step_id: int) -> tuple[str, Dataset] | None:
    """A step's status column and its stored item (for checks that both agree)."""
    with reading(store) as (cur, p):
        cur.execute(f"SELECT sps_status, item FROM procedure_step WHERE id = {p}", (step_id,))
        row = cur.fetchone()
        return None if row is None else (row[0], loads_item(row[1]))


# --- housekeeping (inside a write transaction) ---

FINAL_MPPS_STATUSES = ("COMPLETED", "DISCONTINUED")


def idle_steps(tx: StoreTx, *, statuses: Iterable[str], stations: Iterable[str] = (),
               modalities: Iterable[str] = (), changed_before: str, starting_before: str,
               limit: int = 500) -> list[StepRecord]:
    """Steps in ``statuses`` (of these stations / modalities, when given) that were last
    changed before ``changed_before`` (a store timestamp) and are scheduled to start
    before ``starting_before`` (YYYYMMDDHHMMSS, local time; a step without a start
    counts as started)."""
    cur, p = tx.cur, tx.param
    where, params = [], []
    for column, values in (("sps_status", list(statuses)), ("station_aet", list(stations)),
                           ("modality", list(modalities))):
        if values:
            where.append(f"{column} IN ({', '.join([p] * len(values))})")
            params.extend(values)
    if not where or not where[0].startswith("sps_status"):
        raise ValueError("idle steps are looked for by status")
    where.append(f"updated_at < {p}")
    params.append(changed_before)
    where.append(f"sps_start < {p}")
    params.append(starting_before)
    # Locked until the job's commit (PostgreSQL), skipping rows another transaction
    # is changing: the status read here is the one the change is decided on, so two
    # instances never both move a step and both queue its CM/DC.
    cur.execute(f"SELECT id, item, sps_status, updated_at FROM procedure_step "
                f"WHERE {' AND '.join(where)} ORDER BY id LIMIT {int(limit)}{skip_locked(tx)}",
                params)
    return [StepRecord(int(r[0]), loads_item(r[1]), r[2], r[3]) for r in cur.fetchall()]


def purge_mpps(tx: StoreTx, *, changed_before: str) -> int:
    """Delete final MPPS instances last changed before ``changed_before`` (and their links)."""
    cur, p = tx.cur, tx.param
    cur.execute(f"DELETE FROM mpps WHERE status IN ({p}, {p}) AND updated_at < {p}",
                (*FINAL_MPPS_STATUSES, changed_before))
    return int(cur.rowcount or 0)


def purge_steps(tx: StoreTx, *, statuses: Collection[str], changed_before: str) -> int:
    """Delete worklist items in ``statuses`` (the terminal ones: bridge.steps.rules)
    last changed before ``changed_before``."""
    cur, p = tx.cur, tx.param
    wanted = sorted(statuses)
    cur.execute(f"DELETE FROM procedure_step WHERE sps_status IN ({', '.join([p] * len(wanted))})"
                f" AND updated_at < {p}", (*wanted, changed_before))
    return int(cur.rowcount or 0)
