"""Read-only queries for the operator console: one page of rows and the total,
for the message log, the outbox and MPPS instances; one step with what touched it;
the dashboard's counts. (See sqltx.py for the threading rule: blocking reads on
the pooled reader connections; call them from a worker thread.)

Every filter is on an indexed column, and pages are ``LIMIT``/``OFFSET`` in id
order, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from bridge.store.base import StepRow, Store
from bridge.store.items import loads_item
from bridge.store.mpps_tx import _MPPS_COLUMNS, MppsRecord, _mpps
from bridge.store.orders_tx import (
    ACCEPTED,
    MESSAGE_COLUMNS,
    REJECTED,
    LoggedMessage,
    logged_message,
)
from bridge.store.outbox_tx import OutboxMessage, OutboxState
from bridge.store.outbox_tx import get_message as get_outbox
from bridge.store.sqltx import reading

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    rows: list[T]
    total: int


@dataclass(frozen=True, slots=True)
class MessageFilter:
    outcome: str = ""  # "", "accepted", "rejected" (dead letters) or "flagged"
    control_id: str = ""
    message_type: str = ""  # e.g. ORM^O01
    since: str = ""  # received at or after (ISO 8601, UTC)
    replay_of: int | None = None


def _where(clauses: list[str]) -> str:
    return (" WHERE " + " AND ".join(clauses)) if clauses else ""


def search_messages(store: Store, where: MessageFilter, *, limit: int, offset: int = 0
                    ) -> Page[LoggedMessage]:
    with reading(store) as (cur, p):
        clauses: list[str] = []
        params: list[Any] = []
        if where.outcome == "rejected":
            clauses.append(f"ack_code IN ({', '.join([p] * len(REJECTED))})")
            params.extend(REJECTED)
        elif where.outcome == "accepted":
            clauses.append(f"ack_code IN ({', '.join([p] * len(ACCEPTED))})")
            params.extend(ACCEPTED)
        elif where.outcome == "flagged":
            clauses.append("ack_code = 'AA' AND flags <> ''")
        for column, value in (("control_id", where.control_id),
                              ("message_type", where.message_type)):
            if value:
                clauses.append(f"{column} = {p}")
                params.append(value)
        if where.since:
            clauses.append(f"received_at >= {p}")
            params.append(where.since)
        if where.replay_of is not None:
            clauses.append(f"replay_of = {p}")
            params.append(where.replay_of)
        sql = _where(clauses)
        cur.execute(f"SELECT COUNT(*) FROM message_log{sql}", params)
        total = int(cur.fetchone()[0])
        cur.execute(f"SELECT {MESSAGE_COLUMNS} FROM message_log{sql} ORDER BY id DESC"
                    f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
        return Page([logged_message(r) for r in cur.fetchall()], total)


def get_message(store: Store, message_id: int) -> LoggedMessage | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {MESSAGE_COLUMNS}, raw, ack FROM message_log WHERE id = {p}",
                    (message_id,))
        r = cur.fetchone()
        if r is None:
            return None
        return logged_message(r, raw=bytes(r[13] or b""), ack=bytes(r[14] or b""))


def message_counts(store: Store, since: str) -> dict[str, int]:
    """Messages received since ``since`` (UTC ISO 8601) by ACK code ("" = not HL7)."""
    with reading(store) as (cur, p):
        cur.execute(f"SELECT ack_code, COUNT(*) FROM message_log WHERE received_at >= {p}"
                    " GROUP BY ack_code", (since,))
        return {str(r[0]): int(r[1]) for r in cur.fetchall()}


def get_step(store: Store, step_id: int) -> StepRow | None:
    with reading(store) as (cur, p):
        cur.execute("SELECT id, item, sps_status, created_at, updated_at, message_id"
                    f" FROM procedure_step WHERE id = {p}", (step_id,))
        r = cur.fetchone()
        if r is None:
            return None
        return StepRow(id=int(r[0]), item=loads_item(r[1]), sps_status=r[2], created_at=r[3],
                       updated_at=r[4])


@dataclass(frozen=True, slots=True)
class StepLinks:
    """What touched a step: the message that last changed it, its MPPS, its outbox rows."""

    message_id: int | None
    mpps: list[MppsRecord]
    outbox: list[OutboxMessage]


def step_links(store: Store, step_id: int) -> StepLinks:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT message_id FROM procedure_step WHERE id = {p}", (step_id,))
        r = cur.fetchone()
        message_id = int(r[0]) if r is not None and r[0] is not None else None
        cols = ", ".join("m." + c.strip() for c in _MPPS_COLUMNS.split(","))
        cur.execute(f"SELECT {cols} FROM mpps m JOIN mpps_step s ON s.mpps_id = m.id"
                    f" WHERE s.step_id = {p} ORDER BY m.id", (step_id,))
        mpps = [_mpps(row) for row in cur.fetchall()]
        cur.execute(f"SELECT id FROM outbox WHERE step_id = {p} ORDER BY id", (step_id,))
        outbox_ids = [int(row[0]) for row in cur.fetchall()]
    return StepLinks(message_id, mpps, _outbox_rows(store, outbox_ids))


def _outbox_rows(store: Store, ids: Sequence[int]) -> list[OutboxMessage]:
    # One read per row, through outbox_tx: a page is short, and the outbox's own
    # module stays the one place that knows its columns.
    return [m for m in (get_outbox(store, i) for i in ids) if m is not None]


def search_outbox(store: Store, *, states: Sequence[str] = (), destination: str = "",
                  limit: int, offset: int = 0) -> Page[OutboxMessage]:
    with reading(store) as (cur, p):
        clauses: list[str] = []
        params: list[Any] = []
        if states:
            clauses.append(f"state IN ({', '.join([p] * len(states))})")
            params.extend(states)
        if destination:
            clauses.append(f"destination = {p}")
            params.append(destination)
        sql = _where(clauses)
        cur.execute(f"SELECT COUNT(*) FROM outbox{sql}", params)
        total = int(cur.fetchone()[0])
        cur.execute(f"SELECT id FROM outbox{sql} ORDER BY id DESC"
                    f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
        ids = [int(r[0]) for r in cur.fetchall()]
    return Page(_outbox_rows(store, ids), total)


def oldest_pending(store: Store) -> str | None:
    """When the oldest pending outbox message was queued (store timestamp), if any."""
    with reading(store) as (cur, p):
        cur.execute(f"SELECT MIN(created_at) FROM outbox WHERE state = {p}",
                    (OutboxState.PENDING.value,))
        r = cur.fetchone()
        return str(r[0]) if r and r[0] else None


def search_mpps(store: Store, *, status: str = "", limit: int, offset: int = 0
                ) -> Page[MppsRecord]:
    with reading(store) as (cur, p):
        sql, params = (f" WHERE status = {p}", [status]) if status else ("", [])
        cur.execute(f"SELECT COUNT(*) FROM mpps{sql}", params)
        total = int(cur.fetchone()[0])
        cur.execute(f"SELECT {_MPPS_COLUMNS} FROM mpps{sql} ORDER BY id DESC"
                    f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
        rows = cur.fetchall()
        out = []
        for row in rows:
            cur.execute(f"SELECT step_id FROM mpps_step WHERE mpps_id = {p} ORDER BY step_id",
                        (row[0],))
            out.append(_mpps(row, tuple(int(r[0]) for r in cur.fetchall())))
        return Page(out, total)


def get_mpps_by_id(store: Store, mpps_id: int) -> MppsRecord | None:
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {_MPPS_COLUMNS} FROM mpps WHERE id = {p}", (mpps_id,))
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(f"SELECT step_id FROM mpps_step WHERE mpps_id = {p} ORDER BY step_id",
                    (mpps_id,))
        return _mpps(row, tuple(int(r[0]) for r in cur.fetchall()))
