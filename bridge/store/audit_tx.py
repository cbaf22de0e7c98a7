"""The audit trail of changes made through the operator console (see sqltx.py for
the threading rule). ``record`` runs inside the write job that makes the change,
so a change and its audit row are committed together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import reading, stamp

_COLUMNS = ("id, at, actor, role, action, target_kind, target_id, summary, before_json,"
            " after_json, peer")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: str
    actor: str  # the user name, token:NAME or anonymous:...
    role: str
    action: str  # e.g. step.cancel, message.replay, outbox.retry
    target_kind: str  # step, message, outbox
    target_id: str
    summary: str
    before: Any  # JSON values
    after: Any
    peer: str


def record(tx: StoreTx, *, actor: str, role: str, action: str, target_kind: str,
           target_id: str, summary: str, before: Any = None, after: Any = None,
           peer: str = "") -> int:
    cur, p = tx.cur, tx.param
    cur.execute(
        "INSERT INTO audit_log (at, actor, role, action, target_kind, target_id, summary,"
        f" before_json, after_json, peer) VALUES ({', '.join([p] * 10)}) RETURNING id",
        (stamp(), actor, role, action, target_kind, target_id, summary,
         json.dumps(before, ensure_ascii=False, sort_keys=True),
         json.dumps(after, ensure_ascii=False, sort_keys=True), peer))
    return int(cur.fetchone()[0])


def _entry(r: Sequence[Any]) -> AuditEntry:
    return AuditEntry(id=int(r[0]), at=r[1], actor=r[2], role=r[3], action=r[4],
                      target_kind=r[5], target_id=r[6], summary=r[7],
                      before=json.loads(r[8]), after=json.loads(r[9]), peer=r[10])


def search(store: Store, *, actor: str = "", target_kind: str = "", target_id: str = "",
           limit: int, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """Newest first; (one page, the total)."""
    with reading(store) as (cur, p):
        clauses: list[str] = []
        params: list[str] = []
        for column, value in (("actor", actor), ("target_kind", target_kind),
                              ("target_id", target_id)):
            if value:
                clauses.append(f"{column} = {p}")
                params.append(value)
        sql = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        cur.execute(f"SELECT COUNT(*) FROM audit_log{sql}", params)
        total = int(cur.fetchone()[0])
        cur.execute(f"SELECT {_COLUMNS} FROM audit_log{sql} ORDER BY id DESC"
                    f" LIMIT {int(limit)} OFFSET {int(offset)}", params)
        return [_entry(r) for r in cur.fetchall()], total
