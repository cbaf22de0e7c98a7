"""The MPPS forwarding outbox: every accepted N-CREATE/N-SET, as the modality sent it,
once per forwarding destination (see sqltx.py for the threading rule).

The MPPS handlers (bridge/mpps/service.py) ``enqueue`` the rows in the
transaction that stores the MPPS, so an MPPS the modality was told is accepted
is never lost; the forwarder (bridge/mpps/forward.py) delivers them. A row holds
the data set as received (``payload``, encoded in ``transfer_syntax``) and the
SOP Instance UID it is about; the forwarder sends the requests of one instance
and destination strictly in id order (N-CREATE before its N-SETs; the next only
after the previous one was answered or dead-lettered), and different instances
independently.

States: ``pending`` (waiting or being retried), ``sent`` (the peer answered
success or a warning; ``peer_status`` holds its status), ``dead`` (the peer
answered a failure status, or the retries ran out; ``last_error`` says why).

Several instances on one database share the rows through claims with a lease,
exactly as the HL7 outbox does (outbox_tx.py; the SQL is claims.py's, shared by
both): only the head of an instance is claimable, only while nobody holds a live
lease on it, and an outcome is recorded only by the claim's holder. ``enqueue``
NOTIFYs ``FORWARD_CHANNEL``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.store import claims
from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import notify, reading, stamp

# The NOTIFY channel of new forwarding rows; the payload is the destination's name.
FORWARD_CHANNEL = "mwl_mpps_forward"

N_CREATE = "N-CREATE"
N_SET = "N-SET"


ForwardState = claims.QueueState


@dataclass(frozen=True, slots=True)
class NewForward:
    """One request to forward, made inside the transaction that stored the MPPS."""

    destination: str
    sop_instance_uid: str
    operation: str  # N-CREATE or N-SET
    transfer_syntax: str  # the UID ``payload`` is encoded in
    payload: bytes  # the attribute or modification list as received
    mpps_id: int | None = None


@dataclass(frozen=True, slots=True)
class ForwardRow:
    id: int
    destination: str
    sop_instance_uid: str
    operation: str
    mpps_id: int | None
    transfer_syntax: str
    payload: bytes
    state: str
    attempts: int
    next_attempt_at: str
    created_at: str
    updated_at: str
    sent_at: str
    last_error: str
    peer_status: int | None  # the status the peer answered (None: no answer yet)
    claimed_by: str = ""
    lease_until: str = ""


_COLUMNS = ("id", "destination", "sop_instance_uid", "operation", "mpps_id", "transfer_syntax",
            "payload", "state", "attempts", "next_attempt_at", "created_at", "updated_at",
            "sent_at", "last_error", "peer_status", "claimed_by", "lease_until")


def _row(r: Sequence[Any]) -> ForwardRow:
    return ForwardRow(
        id=int(r[0]), destination=str(r[1]), sop_instance_uid=str(r[2]), operation=str(r[3]),
        mpps_id=None if r[4] is None else int(r[4]), transfer_syntax=str(r[5]),
        payload=bytes(r[6]), state=str(r[7]), attempts=int(r[8]), next_attempt_at=str(r[9]),
        created_at=str(r[10]), updated_at=str(r[11]), sent_at=str(r[12]),
        last_error=str(r[13]), peer_status=None if r[14] is None else int(r[14]),
        claimed_by=str(r[15]), lease_until=str(r[16]))


_QUEUE = claims.Queue("mpps_forward", "sop_instance_uid", _COLUMNS, _row)


# --- inside a write transaction ---

def enqueue(tx: StoreTx, rows: Iterable[NewForward]) -> list[int]:
    cur, p = tx.cur, tx.param
    ids = []
    now = stamp()
    woken: set[str] = set()
    for r in rows:
        if r.operation not in (N_CREATE, N_SET):
            raise ValueError(f"not an MPPS operation: {r.operation!r}")
        cur.execute(
            "INSERT INTO mpps_forward (destination, sop_instance_uid, operation, mpps_id, "
            "transfer_syntax, payload, state, attempts, next_attempt_at, created_at, "
            f"updated_at, sent_at, last_error) VALUES ({', '.join([p] * 13)}) RETURNING id",
            (r.destination, r.sop_instance_uid, r.operation, r.mpps_id, r.transfer_syntax,
             r.payload, ForwardState.PENDING.value, 0, now, now, now, "", ""))
        ids.append(int(cur.fetchone()[0]))
        if r.destination not in woken:
            woken.add(r.destination)
            notify(tx, FORWARD_CHANNEL, r.destination)  # delivered at commit
    return ids


def mark_sent(tx: StoreTx, row_id: int, peer_status: int, note: str = "", *,
              claimed_by: str | None = None) -> bool:
    """The peer answered success (or a warning: ``note`` says which). With
    ``claimed_by``, only while that instance still holds the claim."""
    now = stamp()
    return claims.settle(tx, "mpps_forward", row_id,
                         {"state": ForwardState.SENT.value, "updated_at": now, "sent_at": now,
                          "last_error": note, "peer_status": peer_status},
                         claimed_by=claimed_by)


def mark_dead(tx: StoreTx, row_id: int, reason: str, peer_status: int | None = None, *,
              claimed_by: str | None = None) -> bool:
    return claims.settle(tx, "mpps_forward", row_id,
                         {"state": ForwardState.DEAD.value, "updated_at": stamp(),
                          "last_error": reason, "peer_status": peer_status},
                         claimed_by=claimed_by)


def mark_retry(tx: StoreTx, row_id: int, error: str, next_attempt: datetime, *,
               claimed_by: str | None = None) -> bool:
    """Not delivered (a network error): pending again from ``next_attempt``, for
    whichever instance claims it then."""
    return claims.retry(tx, "mpps_forward", row_id, error, next_attempt, claimed_by=claimed_by)


def claim_heads(tx: StoreTx, destination: str, *, instance: str, limit: int, lease_s: float,
                now: datetime | None = None, busy: Collection[str] = ()) -> list[ForwardRow]:
    """Claim up to ``limit`` due heads of ``destination`` for ``instance``, oldest first.

    A head is the oldest pending request of its MPPS instance; it is claimable when
    due (``next_attempt_at`` by ``now``, the sender's clock, which wrote it) and
    nobody holds a live lease on it (by the database's clock). Instances in ``busy``
    (being sent by this forwarder) are skipped.
    """
    return claims.claim_heads(tx, _QUEUE, destination, instance=instance, limit=limit,
                              lease_s=lease_s, now=now, busy=busy)


def release_claims(tx: StoreTx, instance: str, ids: Iterable[int] | None = None) -> int:
    """Give up ``instance``'s claims on pending rows (all, or those in ``ids``)."""
    return claims.release_claims(tx, "mpps_forward", instance, ids)


def requeue(tx: StoreTx, ids: Iterable[int]) -> list[int]:
    """Dead or waiting rows -> pending, due now, attempts from 0. Returns the ids
    that changed (sent ones and unknown ids are left alone)."""
    return claims.requeue(tx, "mpps_forward", ids, reset_attempts=True)


def purge(tx: StoreTx, state: ForwardState, older_than: datetime) -> int:
    """Delete rows in ``state`` last changed before ``older_than``; never pending ones."""
    return claims.purge(tx, "mpps_forward", state.value, older_than, noun="rows")


# --- reads (any thread; blocking) ---

def due_heads(store: Store, destination: str, *, now: datetime, limit: int,
              busy: Collection[str] = ()) -> list[ForwardRow]:
    """The oldest pending request of each instance of ``destination`` that is due and
    not under a live claim; instances in ``busy`` (being sent now) are skipped.
    A read: what ``claim_heads`` would likely claim, without writing."""
    return claims.due_heads(store, _QUEUE, destination, now=now, limit=limit, busy=busy)


def next_due(store: Store, destination: str) -> str | None:
    """When a head of ``destination`` may next be claimed (``claims.next_due``): the
    dispatcher sleeps until then, unless woken first."""
    return claims.next_due(store, _QUEUE, destination)


def list_rows(store: Store, *, states: Collection[str] = (), destination: str = "",
              sop_instance_uid: str = "", limit: int = 100) -> list[ForwardRow]:
    return claims.list_rows(store, _QUEUE, states=states, limit=limit, equal={
        "destination": destination, "sop_instance_uid": sop_instance_uid})


def get_row(store: Store, row_id: int) -> ForwardRow | None:
    return claims.get_row(store, _QUEUE, row_id)


def count_by_state(store: Store) -> dict[str, int]:
    return claims.count_by_state(store, "mpps_forward")


def queue_stats(store: Store) -> dict[str, tuple[int, int]]:
    """Per destination: (pending, dead), for the metrics (read on each scrape)."""
    with reading(store) as (cur, p):
        return claims.pending_and_dead(cur, p, "mpps_forward")
