"""The outbox sender against a real MLLP receiver: ordering, ACK outcomes, retries,
restarts. No timing assertions: each test waits for a state, with a deadline."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from bridge.outbound.sender import OutboxSender
from bridge.store import SqliteStore, Store, outbox_tx
from tests.waiting import until

from .conftest import assert_in_order, destination, pending, queue, running, states
from .mllp_receiver import MllpReceiver, Received, Reply, reserve_port


async def test_messages_of_one_order_go_in_order_and_orders_in_parallel(store, receiver):
    queue(store, "ris", [("A", "IP"), ("B", "IP"), ("A", "CM"), ("C", "IP"), ("B", "DC"),
                         ("C", "CM")])
    sender = OutboxSender(store, [destination(receiver.port, max_connections=3)],
                          poll_interval_s=0.2)
    async with running(sender):
        await until(lambda: pending(store) == 0)
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
    async with running(sender, receiver):
        await until(lambda: pending(sqlite_store) == 0)
    assert states(sqlite_store) == {"A-IP": "dead", "B-IP": "sent"}
    (dead,) = outbox_tx.list_messages(sqlite_store, states=["dead"])
    assert dead.last_error == "AR: no reason given"


async def test_a_reply_for_another_message_is_not_taken_as_the_ack(sqlite_store, caplog):
    queue(sqlite_store, "ris", [("A", "IP")])
    caplog.set_level(logging.WARNING, logger="bridge.outbound.sender")
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
    async with running(sender, receiver):
        await until(lambda: pending(sqlite_store) == 0)
    (msg,) = outbox_tx.list_messages(sqlite_store)
    assert msg.state == "sent" and msg.attempts == 2
    assert sender.stats.retries == 1
    # The retry says why: the reply was for another message.
    assert caplog.records[0].getMessage() == (
        "status message A-IP to ris not delivered (the reply acknowledges "
        "'SOMETHING-ELSE', not 'A-IP'); retry 1 in 0.1 s")


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
    async with running(sender):
        await until(lambda: len(outbox_tx.list_messages(sqlite_store, states=["sent"])) == 2)
        await until(lambda: sender.stats.retries >= 2)
    by_dest = {(m.destination, m.control_id): m.state
               for m in outbox_tx.list_messages(sqlite_store)}
    assert by_dest == {("ris", "A-IP"): "sent", ("ris", "A-CM"): "sent",
                       ("pacs", "A-IP"): "pending", ("pacs", "A-CM"): "pending"}
    # The down destination retries its order's first message only.
    pacs = {m.control_id: m for m in outbox_tx.list_messages(sqlite_store,
                                                             destination="pacs")}
    assert pacs["A-IP"].attempts >= 2 and pacs["A-CM"].attempts == 0


@pytest.mark.parametrize("thread", ["loop", "other"])
async def test_wake_sends_a_message_queued_while_the_dispatcher_sleeps(
        sqlite_store: Store, receiver: MllpReceiver, monkeypatch: pytest.MonkeyPatch,
        thread: str) -> None:
    """wake() on the loop's own thread (a commit callback) or from another one (the MPPS
    handlers): a message queued while the dispatcher sleeps for an hour goes at once."""
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
    async with running(sender):
        assert await asyncio.to_thread(polled_empty.wait, 30.0), "the dispatcher never polled"
        queue(sqlite_store, "ris", [("A", "IP")])
        if thread == "loop":
            sender.wake()
        else:
            await asyncio.to_thread(sender.wake)
        await until(lambda: states(sqlite_store) == {"A-IP": "sent"}, timeout=30)
    assert [m.control_id for m in receiver.messages] == ["A-IP"]


@pytest.mark.parametrize("code", ["AE", "AR", "CR"])
def test_dead_codes_are_the_documented_ones(code):
    from bridge.outbound.sender import DEAD_CODES, DONE_CODES
    assert code in DEAD_CODES and code not in DONE_CODES
