"""The outbox sender when its own store fails (issue 17): an outbox that cannot be read,
and a retry whose record fails. The store calls are made to fail (failure injection);
the sender, the store and the MLLP receiver are real. Each test waits for a state."""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

import pytest

from bridge.outbound import sender as sender_module
from bridge.outbound.sender import OutboxSender
from bridge.store import Store, outbox_tx
from tests.waiting import until

from .conftest import destination, pending, queue, running, states
from .mllp_receiver import MllpReceiver, reserve_port


async def test_an_unreadable_outbox_is_logged_and_polled_again_until_it_recovers(
        sqlite_store: Store, receiver: MllpReceiver, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM")])
    real = outbox_tx.due_heads
    failures = {"left": 3}

    def failing(*args: Any, **kwargs: Any) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(*args, **kwargs)

    monkeypatch.setattr(outbox_tx, "due_heads", failing)
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05)
    with caplog.at_level(logging.ERROR, logger="bridge.outbound.sender"):
        async with running(sender):
            await until(lambda: pending(sqlite_store) == 0)
    unreadable = [r.getMessage() for r in caplog.records
                  if "cannot be read" in r.getMessage()]
    # Each failed poll says so, names the destination and the error's kind only.
    assert unreadable == ["outbox of ris cannot be read: OperationalError"] * 3
    assert failures["left"] == 0
    assert [m.control_id for m in receiver.distinct()] == ["A-IP", "A-CM"]
    assert set(states(sqlite_store).values()) == {"sent"}


async def test_a_retry_that_cannot_be_recorded_leaves_the_message_pending_and_it_is_sent(
        sqlite_store: Store, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    (message_id,) = queue(sqlite_store, "ris", [("A", "IP")])
    port = reserve_port()  # nobody listens yet: every attempt is a retry
    real = outbox_tx.mark_retry
    refused: list[int] = []

    def failing(tx: Any, mid: int, *args: Any, **kwargs: Any) -> Any:
        refused.append(mid)
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(outbox_tx, "mark_retry", failing)
    # The unrecorded message stays claimed by this sender until its lease lapses; a
    # short margin keeps that wait (twice) at seconds, with the same behaviour.
    monkeypatch.setattr(sender_module, "LEASE_MARGIN_S", 0.5)
    sender = OutboxSender(sqlite_store, [destination(port)], poll_interval_s=0.05)
    with caplog.at_level(logging.ERROR, logger="bridge.outbound.sender"):
        async with running(sender):
            await until(lambda: len(refused) >= 2)
            # Not recorded: no attempt counted, no error kept, still pending (or still
            # claimed by this sender, which sends it again when the receiver is up).
            (row,) = outbox_tx.list_messages(sqlite_store, limit=10)
            assert row.state == "pending" and row.attempts == 0 and not row.last_error
            monkeypatch.setattr(outbox_tx, "mark_retry", real)
            receiver = MllpReceiver(port=port)
            receiver.start()
            try:
                await until(lambda: pending(sqlite_store) == 0)
            finally:
                receiver.stop()
    assert set(refused) == {message_id}
    assert any(r.getMessage().startswith(f"outbox retry of message {message_id} not "
                                         "recorded: database is locked")
               for r in caplog.records)
    assert [m.control_id for m in receiver.distinct()] == ["A-IP"]
    assert states(sqlite_store) == {"A-IP": "sent"}
