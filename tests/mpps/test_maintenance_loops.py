"""The housekeeping and message-retention loops survive a failing round (issue 17).

The store's write is made to fail once (failure injection); the loops, the writer and
the store are real. A failed round is logged with the error's kind, and the next round
runs and does its work: here, the purge of an old row."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bridge.maintenance.housekeeping import Housekeeping
from bridge.maintenance.retention import Retention
from bridge.maintenance.settings import HousekeepingSettings
from bridge.orders.settings import MessageLogSettings
from bridge.store import CommitQueue, InboundMessage, Store, thread_submit
from bridge.store.orders_tx import OrdersTx
from tests.waiting import until


def failing_once(submit: Callable[[Any], Awaitable[Any]], calls: list[str]
                 ) -> Callable[[Any], Awaitable[Any]]:
    async def wrapped(job: Any) -> Any:
        calls.append("fail" if not calls else "ok")
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return await submit(job)
    return wrapped


def old_message(store: Store, control_id: str, days_ago: float) -> None:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    msg = InboundMessage(received_at=at, peer="127.0.0.1", sending_application="RIS",
                         sending_facility="HOSP", control_id=control_id,
                         message_type="ORM^O01", ack_code="AA", error="", mapping="m",
                         raw=b"MSH|", ack=b"MSH|")
    (done,) = store.write([lambda tx: OrdersTx(tx).record(msg)])
    assert not isinstance(done, BaseException), done


def control_ids(store: Store) -> list[str]:
    (rows,) = store.write([lambda tx: [m.control_id for m in OrdersTx(tx).list_messages()]])
    assert not isinstance(rows, BaseException), rows
    return rows


async def test_housekeeping_logs_a_failed_round_and_runs_the_next(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[str] = []
    settings = HousekeepingSettings(interval_s=0.05, purge_sent_days=1)
    hk = Housekeeping(settings, failing_once(thread_submit(store), calls))
    with caplog.at_level(logging.INFO, logger="bridge.maintenance"):
        hk.start()
        try:
            await until(lambda: "ok" in calls)
        finally:
            await hk.stop()
    failed = [r for r in caplog.records if r.getMessage().startswith("housekeeping failed")]
    assert [r.getMessage() for r in failed] == ["housekeeping failed: OperationalError"]
    assert failed[0].levelno == logging.ERROR
    assert calls[0] == "fail" and calls.count("ok") >= 1


async def test_retention_logs_a_failed_round_and_purges_at_the_next(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    old_message(store, "OLD", days_ago=10)
    old_message(store, "NEW", days_ago=0)
    commits = CommitQueue(store)
    commits.start()
    calls: list[str] = []
    try:
        retention = Retention(commits, MessageLogSettings(accepted_days=5,
                                                          purge_interval_s=0.05))
        # Failure injection: the writer refuses the first purge job.
        commits.submit = failing_once(commits.submit, calls)  # type: ignore[method-assign]
        with caplog.at_level(logging.INFO, logger="bridge.maintenance"):
            retention.start()
            try:
                await until(lambda: control_ids(store) == ["NEW"])
            finally:
                await retention.stop()
    finally:
        commits.stop()
    messages = [r.getMessage() for r in caplog.records]
    assert "message retention failed: disk I/O error" in messages
    assert "message retention: purged 1 accepted, 0 rejected" in messages
    assert calls[0] == "fail"
