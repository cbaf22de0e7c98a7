"""The outbox sender's start, stop and dispatch loop (issue 17: what mutation testing
showed the suite checked least): the claims it gives back at start and stop, the stop
grace for sends in flight, a claim that lapsed before its outcome was recorded, a
message due later that needs no wake, and a reused connection the receiver closed.

Real store (SQLite), real MLLP receivers, real sockets. Store failures are injected
through ``submit`` (the sender's only write path). Every wait has a deadline; a stop
that should be prompt is bounded well below the grace it must not wait for.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.hl7 import FrameDecoder, build_ack, encode_frame, read_header
from bridge.outbound import sender as sender_module
from bridge.outbound.sender import OutboxSender
from bridge.store import Store, StoreTx, outbox_tx, thread_submit
from bridge.store.sqltx import stamp
from tests.waiting import until

from .conftest import REPO, destination, queue, rows, running, states
from .mllp_receiver import MllpReceiver, Received, Reply

LOGGER = "bridge.outbound.sender"


def claim(store: Store, instance: str, limit: int = 10) -> list[str]:
    """Claim the due heads nobody holds a live lease on (the oldest ``limit``), for
    ``instance``, for an hour."""
    got = store.write_one(lambda tx: outbox_tx.claim_heads(
        tx, "ris", instance=instance, limit=limit, lease_s=3600, now=datetime.now(UTC)))
    return [m.control_id for m in got]


def failing_submit(store: Store, fail: Callable[[], bool]) -> Any:
    """The sender's submit, refusing with a locked database while ``fail()`` says so."""
    real = thread_submit(store)

    async def submit(job: Callable[[StoreTx], Any]) -> Any:
        if fail():
            raise sqlite3.OperationalError("database is locked")
        return await real(job)

    return submit


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


# --- start ---------------------------------------------------------------------------


async def test_claims_left_by_this_instance_are_given_back_at_start_and_sent(
        sqlite_store: Store, receiver: MllpReceiver) -> None:
    """A restart under the same instance id: the claims the dead process left (an hour's
    lease here) are released at once, not after their lease; another instance's live
    claim is left alone."""
    queue(sqlite_store, "ris", [("A", "IP"), ("B", "IP")])
    assert claim(sqlite_store, "me") == ["A-IP", "B-IP"]
    queue(sqlite_store, "ris", [("C", "IP")])
    assert claim(sqlite_store, "other") == ["C-IP"]
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05,
                          instance="me")
    async with running(sender):
        await until(lambda: states(sqlite_store)["B-IP"] == "sent"
                    and states(sqlite_store)["A-IP"] == "sent", timeout=20)
    assert sorted(m.control_id for m in receiver.messages) == ["A-IP", "B-IP"]
    c = rows(sqlite_store)["C-IP"]
    assert (c.state, c.claimed_by, c.attempts) == ("pending", "other", 0)


async def test_claims_that_cannot_be_given_back_are_logged_at_start_and_stop(
        sqlite_store: Store, receiver: MllpReceiver,
        caplog: pytest.LogCaptureFixture) -> None:
    """The store refuses the release at start and at stop: each is one warning naming
    the error's kind, and the sender delivers all the same (claims lapse by
    themselves)."""
    queue(sqlite_store, "ris", [("A", "IP")])
    refuse = {"on": True}
    calls = {"n": 0}

    def fail() -> bool:
        calls["n"] += 1
        return refuse["on"]

    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05,
                          submit=failing_submit(sqlite_store, fail))
    caplog.set_level(logging.INFO, logger=LOGGER)
    await sender.start()
    try:
        assert calls["n"] == 1  # the release at start, refused
        refuse["on"] = False
        await until(lambda: states(sqlite_store) == {"A-IP": "sent"}, timeout=20)
        refuse["on"] = True  # stop's release (the only write left) is refused too
    finally:
        await sender.stop()
    messages = logged(caplog)
    assert messages[0] == "old outbox claims not released (OperationalError)"
    assert messages[1] == "outbox sender started for ris"
    assert messages[-2:] == ["outbox claims not released (OperationalError); they lapse "
                             "after their lease", "outbox sender stopped"]


async def test_a_sender_without_destinations_touches_nothing(
        sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """No (enabled) destination: no claim release, no task, no log line; stop returns."""
    queue(sqlite_store, "ris", [("A", "IP")])
    calls = {"n": 0}

    def count() -> bool:
        calls["n"] += 1
        return False

    sender = OutboxSender(sqlite_store, [destination(1, enabled=False)],
                          poll_interval_s=0.05, submit=failing_submit(sqlite_store, count))
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    before = asyncio.all_tasks()
    await sender.start()
    assert sender.destinations == [] and asyncio.all_tasks() == before
    await asyncio.wait_for(sender.stop(), 5)
    assert calls["n"] == 0 and logged(caplog) == []
    assert states(sqlite_store) == {"A-IP": "pending"}


async def test_one_dispatcher_and_a_worker_per_connection_all_ended_by_stop(
        sqlite_store: Store, receiver: MllpReceiver,
        caplog: pytest.LogCaptureFixture) -> None:
    """Per destination a dispatcher task and max_connections workers, named for a task
    dump; stop ends every one of them at once when nothing is in flight (bounded well
    below a grace period of a minute, which only a worker never told to stop waits
    for)."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=3),
                                         destination(receiver.port, name="pacs",
                                                     max_connections=1)],
                          poll_interval_s=0.05, stop_grace_s=60)
    before = asyncio.all_tasks()
    await sender.start()
    ours = asyncio.all_tasks() - before
    assert sorted(t.get_name() for t in ours) == [
        "outbox:pacs", "outbox:pacs:1", "outbox:ris", "outbox:ris:1", "outbox:ris:2",
        "outbox:ris:3"]
    queue(sqlite_store, "ris", [("A", "IP")])
    queue(sqlite_store, "pacs", [("A", "IP")])
    await until(lambda: len(receiver.messages) == 2, timeout=20)
    await until(lambda: set(states(sqlite_store).values()) == {"sent"}, timeout=20)
    await asyncio.wait_for(sender.stop(), 20)
    # Each ended by itself (the workers on their stop marker), none by an error.
    assert all(t.done() and not t.cancelled() and t.exception() is None for t in ours)
    assert logged(caplog) == ["outbox sender started for ris, pacs", "outbox sender stopped"]


def test_each_sender_has_its_own_instance_id_unless_one_is_configured(
        sqlite_store: Store) -> None:
    first, second = (OutboxSender(sqlite_store, [], poll_interval_s=1) for _ in range(2))
    assert re.fullmatch(r"sender-[0-9a-f]{12}", first.instance)
    assert first.instance != second.instance
    assert OutboxSender(sqlite_store, [], poll_interval_s=1, instance="mwl-a").instance \
        == "mwl-a"


def test_the_stop_grace_is_the_one_the_docs_give() -> None:
    """docs/mpps-outbound.md tells operators how long a stopping daemon waits for sends
    in flight; the daemon uses the sender's default."""
    text = (REPO / "docs" / "mpps-outbound.md").read_text(encoding="utf-8")
    match = re.search(r"lets sends in flight finish \(up to (\d+) s\)", text)
    assert match is not None
    default = inspect.signature(OutboxSender).parameters["stop_grace_s"].default
    assert default == float(match.group(1))


# --- stop ----------------------------------------------------------------------------


async def test_stop_lets_a_send_in_flight_finish_within_the_grace(
        sqlite_store: Store) -> None:
    receiver = MllpReceiver(respond=lambda _, __: Reply(delay=1.0))
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, ack_timeout_s=30)],
                          poll_interval_s=0.05, stop_grace_s=30)
    try:
        await sender.start()
        await asyncio.to_thread(receiver.wait_for, 1, 20.0)  # A-IP is in flight
        await asyncio.wait_for(sender.stop(), 15)
    finally:
        receiver.stop()
    # A-IP's ACK came within the grace and was recorded; A-CM was never started.
    assert states(sqlite_store) == {"A-IP": "sent", "A-CM": "pending"}
    assert sender.stats.sent == 1 and [m.control_id for m in receiver.messages] == ["A-IP"]
    assert all(m.claimed_by == "" for m in rows(sqlite_store).values())


async def test_stop_cancels_a_send_beyond_the_grace_and_gives_its_claim_back(
        sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The receiver never answers (the ACK timeout is a minute): after the grace the
    send is cancelled, nothing is recorded against the message, and its claim is
    released so that another instance can send it at once."""
    receiver = MllpReceiver(respond=lambda _, __: Reply(delay=30.0))
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, ack_timeout_s=60)],
                          poll_interval_s=0.05, stop_grace_s=0.3, instance="me")
    caplog.set_level(logging.INFO, logger=LOGGER)
    try:
        await sender.start()
        await asyncio.to_thread(receiver.wait_for, 1, 20.0)
        assert rows(sqlite_store)["A-IP"].claimed_by == "me"
        await asyncio.wait_for(sender.stop(), 15)
    finally:
        receiver.stop()
    a = rows(sqlite_store)["A-IP"]
    assert (a.state, a.attempts, a.last_error, a.claimed_by) == ("pending", 0, "", "")
    assert sender.stats == type(sender.stats)()  # no outcome of any kind
    assert logged(caplog)[-2:] == ["outbox sender released 1 claimed message(s)",
                                   "outbox sender stopped"]
    assert claim(sqlite_store, "other") == ["A-IP"]  # free for another instance now


async def test_stop_returns_when_every_task_has_ended_even_if_the_release_fails(
        sqlite_store: Store) -> None:
    """A send beyond the grace is cancelled, and stop waits for the cancelled worker to
    end (its connection closed) before it returns, also when giving the claims back
    fails at once."""
    receiver = MllpReceiver(respond=lambda _, __: Reply(delay=30.0))
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    refuse = {"on": False}
    sender = OutboxSender(sqlite_store, [destination(receiver.port, ack_timeout_s=60)],
                          poll_interval_s=0.05, stop_grace_s=0.1,
                          submit=failing_submit(sqlite_store, lambda: refuse["on"]))
    before = asyncio.all_tasks()
    try:
        await sender.start()
        ours = asyncio.all_tasks() - before
        await asyncio.to_thread(receiver.wait_for, 1, 20.0)
        refuse["on"] = True
        await sender.stop()  # awaited directly: wait_for would give the loop more turns
        assert len(ours) == 3 and all(t.done() for t in ours)
    finally:
        receiver.stop()
    assert states(sqlite_store) == {"A-IP": "pending"}


async def test_a_message_handed_out_as_the_sender_stops_is_not_started(
        sqlite_store: Store, receiver: MllpReceiver) -> None:
    """stop() comes in the same loop turn as the claim of A (made so here: the claim's
    own transaction asks for the stop): the worker that gets A does not start it, and
    stop gives A's claim back, so it waits, untried, for the next start."""
    queue(sqlite_store, "ris", [("A", "IP")])
    real = thread_submit(sqlite_store)
    stopping: list[asyncio.Task[None]] = []

    async def submit(job: Callable[[StoreTx], Any]) -> Any:
        result = await real(job)
        if isinstance(result, list) and result and not stopping:  # the claim of A
            stopping.append(asyncio.ensure_future(sender.stop()))
        return result

    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05,
                          submit=submit, instance="me")
    await sender.start()
    await until(lambda: bool(stopping), timeout=20)
    await asyncio.wait_for(stopping[0], 20)
    a = rows(sqlite_store)["A-IP"]
    assert (a.state, a.attempts, a.claimed_by) == ("pending", 0, "")
    assert receiver.messages == [] and sender.stats == type(sender.stats)()


# --- dispatch and outcomes -----------------------------------------------------------


async def test_a_message_due_later_is_sent_when_due_without_a_wake(
        sqlite_store: Store, receiver: MllpReceiver) -> None:
    """The dispatcher sleeps until the next due message, not for its whole poll
    interval (an hour here): a retry due in half a second goes then, unprompted."""
    (mid,) = queue(sqlite_store, "ris", [("A", "IP")])
    soon = datetime.now(UTC) + timedelta(seconds=0.5)
    sqlite_store.write_one(lambda tx: outbox_tx.mark_retry(tx, mid, "reply CE", soon))
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=3600)
    async with running(sender):
        await until(lambda: states(sqlite_store) == {"A-IP": "sent"}, timeout=20)
    assert [m.control_id for m in receiver.messages] == ["A-IP"]


async def test_an_instance_claims_no_more_than_its_free_connections(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two instances, one connection each. While "me" waits for A's ACK, it neither
    reads nor claims more (its only connection is busy), so "other" sends B meanwhile;
    a claim on B that "me" could not send yet would hold B back until A's ACK."""
    reads: list[frozenset[str]] = []  # busy_orders of every outbox read
    real = outbox_tx.due_heads

    def due_heads(*args: Any, **kwargs: Any) -> Any:
        reads.append(frozenset(kwargs.get("busy_orders", ())))
        return real(*args, **kwargs)

    monkeypatch.setattr(outbox_tx, "due_heads", due_heads)
    release = threading.Event()

    def respond(msg: Received, _: int) -> Reply:
        if msg.control_id == "A-IP":
            release.wait(30)
        return Reply()

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    me, other = (OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1)],
                              poll_interval_s=0.05, instance=name) for name in ("me", "other"))
    # A positive sign that me's dispatcher ran while A was in flight: each of its turns
    # starts by clearing its wake-up event (white box: the only trace of a turn in
    # which it must not touch the store).
    turns = [0]
    wake = me._dests[0].wake
    clear = wake.clear

    def counted_clear() -> None:
        turns[0] += 1
        clear()

    monkeypatch.setattr(wake, "clear", counted_clear)
    try:
        async with running(me):
            await asyncio.to_thread(receiver.wait_for, 1, 20.0)  # A is in flight
            queue(sqlite_store, "ris", [("B", "IP")])
            me.wake()
            seen = turns[0]
            await until(lambda: turns[0] >= seen + 3, timeout=20)
            async with running(other):
                await until(lambda: states(sqlite_store)["B-IP"] == "sent", timeout=20)
            release.set()
            await until(lambda: states(sqlite_store)["A-IP"] == "sent", timeout=20)
    finally:
        release.set()
        receiver.stop()
    assert (me.stats.sent, other.stats.sent) == (1, 1)
    assert [m.control_id for m in receiver.messages] == ["A-IP", "B-IP"]
    assert not any(reads), "the outbox was read while every connection was busy"


async def test_the_dispatcher_does_not_poll_while_an_orders_message_is_in_flight(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A-IP is in flight (its ACK held back), A-CM queued behind it, a connection free.
    Woken, the dispatcher finds nothing to claim and sleeps until the next time a head
    may be claimed: A-IP's lease end, in the future. (It slept 10 ms at a time, reading
    the store each time, until A-IP's ACK came: A-CM's due time was in the past.)"""
    seen: list[str | None] = []
    real = outbox_tx.next_due

    def next_due(store: Store, name: str) -> str | None:
        due = real(store, name)
        seen.append(due)
        return due

    monkeypatch.setattr(outbox_tx, "next_due", next_due)
    release = threading.Event()

    def respond(_: Received, __: int) -> Reply:
        release.wait(30)
        return Reply()

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=2)],
                          poll_interval_s=3600)
    try:
        async with running(sender):
            await asyncio.to_thread(receiver.wait_for, 1, 20.0)
            queue(sqlite_store, "ris", [("A", "CM")])
            sender.wake()
            await until(lambda: len(seen) >= 1, timeout=20)
            now = stamp(datetime.now(UTC))
            assert all(due is not None and due > now for due in seen), (seen, now)
            release.set()
            await until(lambda: states(sqlite_store) == {"A-IP": "sent", "A-CM": "sent"},
                        timeout=20)
    finally:
        release.set()
        receiver.stop()


async def test_outcomes_after_the_claims_were_taken_over_are_not_recorded(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The receiver holds each ACK back past the claim's lease (made 0.2 s here), and
    another instance takes that message over. Each AA then arrives: it is not recorded
    over the new holder's claim, and each loss is counted and logged."""
    monkeypatch.setattr(sender_module, "LEASE_MARGIN_S", 0.2 - 2 * (0.5 + 5.0))
    stolen: list[str] = []

    def respond(msg: Received, _: int) -> Reply:
        time.sleep(0.5)  # the lease (by the database's clock) lapses
        stolen.extend(claim(sqlite_store, "other", limit=1))
        return Reply()

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP"), ("B", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, ack_timeout_s=5.0,
                                                     max_connections=1)],
                          poll_interval_s=0.05, instance="me")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with running(sender, receiver):
        await until(lambda: sender.stats.lost_claims == 2, timeout=20)
    assert stolen == ["A-IP", "B-IP"]
    for cid in stolen:
        m = rows(sqlite_store)[cid]
        assert (m.state, m.claimed_by, m.sent_at) == ("pending", "other", "")
        assert f"status message {cid}: the claim lapsed before its outcome was recorded; " \
               "the instance that took it over sends it again" in logged(caplog)


async def test_a_connection_is_kept_for_the_next_message(
        sqlite_store: Store, receiver: MllpReceiver) -> None:
    """Not idle for longer than idle_close_s: the next message goes on the same
    connection."""
    queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM"), ("B", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1,
                                                     idle_close_s=3600)],
                          poll_interval_s=0.05)
    async with running(sender):
        await until(lambda: set(states(sqlite_store).values()) == {"sent"}, timeout=20)
    assert [m.control_id for m in receiver.messages] == ["A-IP", "A-CM", "B-IP"]
    assert receiver.connections == 1


async def test_a_connect_that_hangs_is_given_up_after_connect_timeout(
        sqlite_store: Store) -> None:
    """A receiver whose accept queue is full (listen backlog 0, one connection waiting):
    the kernel drops our SYN, and connect hangs until connect_timeout_s; the retry says
    so, with the address and the time."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = []
        for _ in range(2):  # fill the accept queue (never accepted)
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex(("127.0.0.1", port))
            fillers.append(f)
        try:
            queue(sqlite_store, "ris", [("A", "IP")])
            sender = OutboxSender(sqlite_store, [destination(port, connect_timeout_s=0.3,
                                                             backoff_initial_s=30,
                                                             backoff_max_s=30)],
                                  poll_interval_s=0.05)
            async with running(sender):
                await until(lambda: rows(sqlite_store)["A-IP"].attempts >= 1, timeout=20)
        finally:
            for f in fillers:
                f.close()
    a = rows(sqlite_store)["A-IP"]
    assert (a.state, a.last_error) == (
        "pending", f"connecting to 127.0.0.1:{port} took over 0.3 s")


@asynccontextmanager
async def hanging_up_receiver(answered: list[str]) -> AsyncIterator[tuple[int, list[int]]]:
    """Answers the first message on each connection with AA, then closes it (as a
    receiver that drops idle connections does). Yields its port and a connection
    counter."""
    connections = [0]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        decoder = FrameDecoder(1 << 20)
        try:
            while data := await reader.read(65536):
                frames = decoder.feed(data)
                if frames:
                    header = read_header(getattr(frames[0], "payload", b"").decode("latin-1"))
                    assert header is not None
                    answered.append(header.value(10))
                    ack = build_ack(header, "AA", control_id="R1", now=datetime.now())
                    writer.write(encode_frame(ack.encode("latin-1")))
                    await writer.drain()
                    return
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1]), connections
    finally:
        server.close()
        await server.wait_closed()


async def test_a_reused_connection_the_receiver_closed_is_replaced_at_once(
        sqlite_store: Store) -> None:
    """The second message finds its (kept) connection closed by the receiver: it goes
    out on a new one at once, as the same attempt, with no retry, backoff or error."""
    answered: list[str] = []
    async with hanging_up_receiver(answered) as (port, connections):
        queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM")])
        sender = OutboxSender(sqlite_store, [destination(port, max_connections=1,
                                                         backoff_initial_s=30,
                                                         backoff_max_s=30)],
                              poll_interval_s=0.05)
        async with running(sender):
            await until(lambda: states(sqlite_store) == {"A-IP": "sent", "A-CM": "sent"},
                        timeout=20)
    assert answered == ["A-IP", "A-CM"] and connections == [2]
    assert sender.stats.retries == 0
    assert all((m.attempts, m.last_error) == (1, "") for m in rows(sqlite_store).values())
