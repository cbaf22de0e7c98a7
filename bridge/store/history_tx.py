"""Each worklist item's status history (the ``step_history`` table; see sqltx.py for
the threading rule). ``record`` is called by ``bridge.steps.change_status`` inside
the write job that changes the status, so a change and its history row are
committed together or not at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import reading, stamp

_COLUMNS = "id, step_id, at, from_status, to_status, source, message_id, mpps_id, actor, note"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    id: int
    step_id: int
    at: str
    from_status: str  # '' for the item's creation
    to_status: str
    source: str  # bridge.steps.Source: hl7, result, mpps, idle rule, operator
    message_id: int | None  # the HL7 message that made the change
    mpps_id: int | None  # the MPPS that made it
    actor: str  # the console user (user name, token:NAME) for operator changes
    note: str  # e.g. the operator's reason, the idle rule


def record(tx: StoreTx, *, step_id: int, from_status: str, to_status: str, source: str,
           message_id: int | None = None, mpps_id: int | None = None, actor: str = "",
           note: str = "") -> None:
    cur, p = tx.cur, tx.param
    cur.execute(
        "INSERT INTO step_history (step_id, at, from_status, to_status, source, message_id,"
        f" mpps_id, actor, note) VALUES ({', '.join([p] * 9)})",
        (step_id, stamp(), from_status, to_status, source, message_id, mpps_id, actor,
         note[:200]))


def _entry(r: Sequence[Any]) -> HistoryEntry:
    return HistoryEntry(id=int(r[0]), step_id=int(r[1]), at=str(r[2]), from_status=str(r[3]),
                        to_status=str(r[4]), source=str(r[5]),
                        message_id=None if r[6] is None else int(r[6]),
                        mpps_id=None if r[7] is None else int(r[7]), actor=str(r[8]),
                        note=str(r[9]))


def for_step(store: Store, step_id: int, limit: int = 500) -> list[HistoryEntry]:
    """One item's history, oldest first."""
    with reading(store) as (cur, p):
        cur.execute(f"SELECT {_COLUMNS} FROM step_history WHERE step_id = {p} ORDER BY id "
                    f"LIMIT {int(limit)}", (step_id,))
        return [_entry(r) for r in cur.fetchall()]
