"""The outbox sender against a real MLLP receiver: ordering, ACK outcomes, retries,
restarts. No timing assertions: each test waits for a state, with a deadline."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable

import pytest

from bridge.outbound.sender import OutboxSender
from bridge.outbound.settings import OutboundDestination
from bridge.store import SqliteStore, Store, outbox_tx

from .conftest import queue
from .mllp_receiver import MllpReceiver, Received, Reply, reserve_port


def destination(port: int, **kw: object) -> OutboundDestination:
    base: dict[str, object] = dict(name="ris", port=port, ack_timeout_s=0.5,
                                   connect_timeout_s=0.5, backoff_initial_s=0.05,
                                   backoff_max_s=0.2, max_connections=2)
    base.update(kw)
    return OutboundDestination.model_validate(base)


async def until(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def states(store: Store) -> dict[str, str]:
    return {m.control_id: m.state for m in outbox_tx.list_messages(store, limit=1000)}


def pending(store: Store) -> int:
    return outbox_tx.count_by_state(store).get("pending", 0)


def assert_in_order(received: list[Received], order: str, events: list[str]) -> None:
    """Every arrival of an earlier event precedes every arrival of a later one."""
    ids = [f"{order}-{e}" for e in events]
    positions = [[i for i, m in enumerate(received) if m.control_id == cid] for cid in ids]
    for cid, pos in zip(ids, positions, strict=True):
        assert pos, f"{cid} never arrived"
    for earlier, later in itertools.pairwise(positions):
        assert max(earlier) < min(later), [m.control_id for m in received]


async def test_messages_of_one_order_go_in_order_and_orders_in_parallel(store, receiver):
    queue(store, "ris", [("A", "IP"), ("B", "IP"), ("A", "CM"), ("C", "IP"), ("B", "DC"),
                         ("C", "CM")])
    sender = OutboxSender(store, [destination(receiver.port, max_connections=3)],
                          poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: pending(store) == 0)
    finally:
        await sender.stop()
    got = receiver.distinct()
    assert len(got) == 6
    assert_in_order(got, "A", ["IP", "CM"])
    assert_in_order(got, "B", ["IP", "DC"])
    assert_in_order(got, "C", ["IP", "CM"])
    assert set(states(store).values()) == {"sent"}
    sent = outbox_tx.list_messages(store)
    assert all(m.ack.startswith(b"MSH") and m.sent_at and m.attempts == 1 for m in sent)
    # Three orders, three connections: they were sent side by side.
    assert receiver.connections >= 2


async def test_down_then_slow_then_ae_delivers_in_order_and_dead_letters_ae(sqlite_store):
    """The receiver is down (connection refused), then answers late (ACK timeout), then
    refuses one message with AE: everything else arrives, in order per order, and the
    AE'd message is a dead letter with the receiver's reason."""
    port = reserve_port()
    queue(sqlite_store, "ris", [("A", "IP"), ("B", "IP"), ("A", "CM"), ("C", "IP"),
                                ("B", "CM"), ("C", "CM")])
    slow_left = {"n": 2}

    def respond(msg: Received, _: int) -> Reply:
        if msg.control_id == "C-IP":
            return Reply(code="AE", error="unknown order C")
        if slow_left["n"] > 0:
            slow_left["n"] -= 1
            return Reply(delay=1.5)  # beyond the 0.5 s ACK timeout
        return Reply()

    sender = OutboxSender(sqlite_store, [destination(port)], poll_interval_s=0.2)
    await sender.start()
    receiver = MllpReceiver(respond=respond, port=port)
    try:
        # Down: nothing listens, every attempt is refused and retried with backoff.
        await until(lambda: sender.stats.retries >= 3)
        assert states(sqlite_store) == dict.fromkeys(
            ["A-IP", "B-IP", "A-CM", "C-IP", "B-CM", "C-CM"], "pending")
        waiting = outbox_tx.list_messages(sqlite_store, limit=1)[0]
        assert waiting.attempts >= 1 and "connect" in waiting.last_error
        receiver.start()
        await until(lambda: pending(sqlite_store) == 0)
    finally:
        await sender.stop()
        receiver.stop()
    final = states(sqlite_store)
    assert final.pop("C-IP") == "dead"
    assert set(final.values()) == {"sent"}
    dead = next(m for m in outbox_tx.list_messages(sqlite_store, states=["dead"]))
    assert dead.last_error.startswith("AE: ")
    assert "unknown order C" in dead.last_error
    assert b"MSA|AE|C-IP" in dead.ack
    got = receiver.distinct()
    assert_in_order(got, "A", ["IP", "CM"])
    assert_in_order(got, "B", ["IP", "CM"])
    # The order after a dead letter goes on: C-CM follows the refused C-IP.
    assert_in_order(got, "C", ["IP", "CM"])
    # The late ACKs were answered by resending the same message (same MSH-10).
    assert len(receiver.messages) > len(got)
    assert sender.stats.dead == 1 and sender.stats.sent == 5


async def test_ar_is_a_dead_letter_and_ca_is_done(sqlite_store):
    queue(sqlite_store, "ris", [("A", "IP"), ("B", "IP")])
    receiver = MllpReceiver(respond=lambda m, _: Reply(code="AR" if m.control_id == "A-IP"
                                                       else "CA"))
    receiver.start()
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: pending(sqlite_store) == 0)
    finally:
        await sender.stop()
        receiver.stop()
    assert states(sqlite_store) == {"A-IP": "dead", "B-IP": "sent"}
    (dead,) = outbox_tx.list_messages(sqlite_store, states=["dead"])
    assert dead.last_error == "AR: no reason given"


async def test_a_reply_for_another_message_is_not_taken_as_the_ack(sqlite_store):
    queue(sqlite_store, "ris", [("A", "IP")])
    calls = {"n": 0}

    def respond(msg: Received, _: int) -> Reply:
        calls["n"] += 1
        return Reply()

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    original = receiver._serve

    # The first connection answers with an ACK naming another control ID.
    def serve(sock) -> None:
        if receiver.connections == 0:
            from bridge.hl7 import encode_frame
            receiver.connections += 1
            sock.recv(65536)
            sock.sendall(encode_frame(b"MSH|^~\\&|RIS|H|B|R|20261128||ACK|X|P|2.3.1\r"
                                      b"MSA|AA|SOMETHING-ELSE\r"))
            sock.close()
            return
        original(sock)

    receiver._serve = serve  # type: ignore[method-assign]
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: pending(sqlite_store) == 0)
    finally:
        await sender.stop()
        receiver.stop()
    (msg,) = outbox_tx.list_messages(sqlite_store)
    assert msg.state == "sent" and msg.attempts == 2
    assert sender.stats.retries == 1


async def test_restart_with_messages_still_in_the_outbox(tmp_path):
    """Messages queued while the receiver is down survive a stop and a new sender (a
    new store connection, as after a restart) delivers them in order."""
    path = tmp_path / "bridge.sqlite3"
    first = SqliteStore(path)
    first.migrate()
    queue(first, "ris", [("A", "IP"), ("A", "CM"), ("B", "IP"), ("B", "DC")])
    port = reserve_port()
    sender = OutboxSender(first, [destination(port)], poll_interval_s=0.2)
    await sender.start()
    await until(lambda: sender.stats.retries >= 1)
    await sender.stop()
    first.close()

    second = SqliteStore(path)
    second.migrate()
    assert set(states(second).values()) == {"pending"}
    receiver = MllpReceiver(port=port)
    receiver.start()
    sender = OutboxSender(second, [destination(port)], poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: pending(second) == 0)
    finally:
        await sender.stop()
        receiver.stop()
        second.close()
    got = receiver.distinct()
    assert [m.control_id for m in got if m.control_id.startswith("A")] == ["A-IP", "A-CM"]
    assert [m.control_id for m in got if m.control_id.startswith("B")] == ["B-IP", "B-DC"]
    # Nothing was sent twice: the first sender never reached the receiver.
    assert len(receiver.messages) == 4


async def test_each_destination_gets_its_own_copy_and_pace(sqlite_store, receiver):
    down = reserve_port()
    queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM")])
    queue(sqlite_store, "pacs", [("A", "IP"), ("A", "CM")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port),
                                         destination(down, name="pacs")],
                          poll_interval_s=0.2)
    await sender.start()
    try:
        await until(lambda: len(outbox_tx.list_messages(sqlite_store, states=["sent"])) == 2)
        await until(lambda: sender.stats.retries >= 2)
    finally:
        await sender.stop()
    by_dest = {(m.destination, m.control_id): m.state
               for m in outbox_tx.list_messages(sqlite_store)}
    assert by_dest == {("ris", "A-IP"): "sent", ("ris", "A-CM"): "sent",
                       ("pacs", "A-IP"): "pending", ("pacs", "A-CM"): "pending"}
    # The down destination retries its order's first message only.
    pacs = {m.control_id: m for m in outbox_tx.list_messages(sqlite_store,
                                                             destination="pacs")}
    assert pacs["A-IP"].attempts >= 2 and pacs["A-CM"].attempts == 0


async def test_wake_from_another_thread_sends_at_once(sqlite_store, receiver, monkeypatch):
    # A spy on the store read the dispatcher makes last before it sleeps, once it has
    # found no message due: the message is queued only after that poll is over.
    polled_empty = threading.Event()
    real_next_due = outbox_tx.next_due

    def next_due(store: Store, name: str) -> str | None:
        due = real_next_due(store, name)
        if due is None:
            polled_empty.set()
        return due

    monkeypatch.setattr(outbox_tx, "next_due", next_due)
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=3600)
    await sender.start()
    try:
        # The dispatcher found nothing and sleeps for an hour.
        assert await asyncio.to_thread(polled_empty.wait, 30.0), "the dispatcher never polled"
        queue(sqlite_store, "ris", [("A", "IP")])
        await asyncio.to_thread(sender.wake)
        await asyncio.to_thread(receiver.wait_for, 1, 30.0)
    finally:
        await sender.stop()
    assert receiver.messages[0].control_id == "A-IP"


@pytest.mark.parametrize("code", ["AE", "AR", "CR"])
def test_dead_codes_are_the_documented_ones(code):
    from bridge.outbound.sender import DEAD_CODES, DONE_CODES
    assert code in DEAD_CODES and code not in DONE_CODES
