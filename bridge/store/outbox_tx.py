"""The durable outbox of outbound HL7 messages (see sqltx.py for the threading rule).

A row is one message for one destination. ``order_key`` names the order it
is about: the sender delivers the messages of one order and destination
strictly in id order (the next one only after the previous one was
acknowledged or dead-lettered), and different orders independently.

States: ``pending`` (waiting or being retried), ``sent`` (AA/CA received),
``dead`` (AE/AR, or it could not be built; ``last_error`` says why).

Several instances on one database (PostgreSQL) share the outbox through claims:
an instance sends a message only after ``claim_heads`` wrote its name into
``claimed_by`` with a lease (``lease_until``, from the database's clock). Only
the head of an order (its oldest pending message) can be claimed, and only
while nobody holds a live lease on it, so one order's messages go out in
order whichever instance sends them; a dead instance's claims lapse and a
survivor takes them over. An outcome is recorded only by the claim's holder
(``mark_*`` with ``claimed_by``). The claim SQL is claims.py's, shared with the
MPPS forwarding outbox. ``enqueue`` NOTIFYs ``OUTBOX_CHANNEL`` so that every
instance's sender wakes at once (PostgreSQL; elsewhere they poll).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.store import claims
from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import notify, reading, stamp

# The NOTIFY channel of new outbox rows; the payload is the destination's name.
OUTBOX_CHANNEL = "mwl_outbox"


OutboxState = claims.QueueState


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message to queue, built inside the transaction that caused it."""

    destination: str
    order_key: str
    event: str  # IP, CM, DC, ...
    message_type: str  # e.g. ORM^O01
    control_id: str  # MSH-10
    payload: bytes  # encoded in the destination's character set, CR segment ends
    mpps_id: int | None = None
    step_id: int | None = None
    dead_reason: str = ""  # set: queue it dead at once (it could not be built)


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    id: int
    destination: str
    order_key: str
    event: str
    message_type: str
    control_id: str
    state: str
    attempts: int
    next_attempt_at: str
    created_at: str
    updated_at: str
    sent_at: str
    last_error: str
    mpps_id: int | None
    step_id: int | None
    payload: bytes
    ack: bytes
    claimed_by: str = ""  # the instance sending it ('' when nobody is)
    lease_until: str = ""  # the claim holds until then (database clock)


_COLUMNS = ("id", "destination", "order_key", "event", "message_type", "control_id", "state",
            "attempts", "next_attempt_at", "created_at", "updated_at", "sent_at", "last_error",
            "mpps_id", "step_id", "payload", "ack", "claimed_by", "lease_until")


def _message(row: Sequence[Any]) -> OutboxMessage:
    return OutboxMessage(
        id=int(row[0]), destination=str(row[1]), order_key=str(row[2]), event=str(row[3]),
        message_type=str(row[4]), control_id=str(row[5]), state=str(row[6]),
        attempts=int(row[7]), next_attempt_at=str(row[8]), created_at=str(row[9]),
        updated_at=str(row[10]), sent_at=str(row[11]), last_error=str(row[12]),
        mpps_id=None if row[13] is None else int(row[13]),
        step_id=None if row[14] is None else int(row[14]),
        payload=bytes(row[15]), ack=bytes(row[16]), claimed_by=str(row[17]),
        lease_until=str(row[18]))


_QUEUE = claims.Queue("outbox", "order_key", _COLUMNS, _message)


# --- inside a write transaction ---

def enqueue(tx: StoreTx, messages: Iterable[NewMessage]) -> list[int]:
    cur, p = tx.cur, tx.param
    ids = []
    now = stamp()
    woken: set[str] = set()
    for m in messages:
        state = OutboxState.DEAD if m.dead_reason else OutboxState.PENDING
        cur.execute(
            "INSERT INTO outbox (destination, order_key, event, message_type, control_id, state,"
            " attempts, next_attempt_at, created_at, updated_at, sent_at, last_error, mpps_id,"
            f" step_id, payload, ack) VALUES ({', '.join([p] * 16)}) RETURNING id",
            (m.destination, m.order_key, m.event, m.message_type, m.control_id, state.value, 0,
             now, now, now, "", m.dead_reason, m.mpps_id, m.step_id, m.payload, b""))
        ids.append(int(cur.fetchone()[0]))
        if state is OutboxState.PENDING and m.destination not in woken:
            woken.add(m.destination)
            notify(tx, OUTBOX_CHANNEL, m.destination)  # delivered at commit
    return ids


def mark_sent(tx: StoreTx, message_id: int, ack: bytes, *, claimed_by: str | None = None
              ) -> bool:
    """Delivered. With ``claimed_by``, only while that instance still holds the claim
    (False: it lapsed and another instance took the message over; its outcome counts)."""
    now = stamp()
    return claims.settle(tx, "outbox", message_id,
                         {"state": OutboxState.SENT.value, "updated_at": now, "sent_at": now,
                          "last_error": "", "ack": ack}, claimed_by=claimed_by)


def mark_dead(tx: StoreTx, message_id: int, reason: str, ack: bytes = b"", *,
              claimed_by: str | None = None) -> bool:
    return claims.settle(tx, "outbox", message_id,
                         {"state": OutboxState.DEAD.value, "updated_at": stamp(),
                          "last_error": reason, "ack": ack},
                         claimed_by=claimed_by, pending_only=False)


def mark_retry(tx: StoreTx, message_id: int, error: str, next_attempt: datetime, *,
               claimed_by: str | None = None) -> bool:
    """Not delivered: pending again from ``next_attempt``, for whichever instance
    claims it then (the claim is given up)."""
    return claims.retry(tx, "outbox", message_id, error, next_attempt, claimed_by=claimed_by)


def claim_heads(tx: StoreTx, destination: str, *, instance: str, limit: int, lease_s: float,
                now: datetime | None = None, busy_orders: Collection[str] = ()
                ) -> list[OutboxMessage]:
    """Claim up to ``limit`` due heads of ``destination`` for ``instance``, oldest first.

    A head is the oldest pending message of its order; it is claimable when it is
    due (``next_attempt_at``, by ``now``: the sender's clock, which wrote it) and
    nobody holds a live lease on it (by the database's clock). The claim lasts
    ``lease_s`` seconds: the sender's longest attempt, so a live instance never
    loses a claim in the middle of a send. Orders in ``busy_orders`` (being sent
    by this instance) are skipped.
    """
    return claims.claim_heads(tx, _QUEUE, destination, instance=instance, limit=limit,
                              lease_s=lease_s, now=now, busy=busy_orders)


def release_claims(tx: StoreTx, instance: str, ids: Iterable[int] | None = None) -> int:
    """Give up ``instance``'s claims on pending messages (all, or those in ``ids``),
    so another instance may send them at once instead of after the lease."""
    return claims.release_claims(tx, "outbox", instance, ids)


def requeue(tx: StoreTx, ids: Iterable[int]) -> list[int]:
    """Dead or waiting messages -> pending, due now. Returns the ids that changed.

    A dead message without a payload (it could not be built) is left alone.
    """
    return claims.requeue(tx, "outbox", ids, unless_empty="payload")


def purge(tx: StoreTx, state: OutboxState, older_than: datetime) -> int:
    """Delete messages in ``state`` last changed before ``older_than``; never pending ones."""
    return claims.purge(tx, "outbox", state.value, older_than, noun="messages")


# --- reads (any thread; blocking) ---

def due_heads(store: Store, destination: str, *, now: datetime, limit: int,
              busy_orders: Collection[str] = ()) -> list[OutboxMessage]:
    """The oldest pending message of each order of ``destination`` that is due now
    and not claimed (or whose claim has lapsed, by ``now``).

    Orders in ``busy_orders`` (being sent right now) are skipped. Oldest first.
    A read: what ``claim_heads`` would likely claim, without writing.
    """
    return claims.due_heads(store, _QUEUE, destination, now=now, limit=limit, busy=busy_orders)


def next_due(store: Store, destination: str) -> str | None:
    """When a head of ``destination`` may next be claimed (``claims.next_due``): the
    dispatcher sleeps until then, unless woken first."""
    return claims.next_due(store, _QUEUE, destination)


def list_messages(store: Store, *, states: Collection[str] = (), destination: str = "",
                  limit: int = 100) -> list[OutboxMessage]:
    return claims.list_rows(store, _QUEUE, states=states, equal={"destination": destination},
                            limit=limit)


def get_message(store: Store, message_id: int) -> OutboxMessage | None:
    return claims.get_row(store, _QUEUE, message_id)


def count_by_state(store: Store) -> dict[str, int]:
    return claims.count_by_state(store, "outbox")


def queue_stats(store: Store) -> dict[str, tuple[int, int, str | None]]:
    """Per destination: (pending, dead, created_at of the oldest pending message or None).

    For the metrics, read on each scrape: the counts come from the queue index, and
    only pending rows are read for their age.
    """
    with reading(store) as (cur, p):
        counts = claims.pending_and_dead(cur, p, "outbox")
        cur.execute(f"SELECT destination, MIN(created_at) FROM outbox WHERE state = {p} "
                    "GROUP BY destination", (OutboxState.PENDING.value,))
        oldest = {str(r[0]): (str(r[1]) if r[1] else None) for r in cur.fetchall()}
    return {d: (pending, dead, oldest.get(d)) for d, (pending, dead) in counts.items()}
