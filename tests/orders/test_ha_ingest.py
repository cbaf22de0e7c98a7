"""Two instances on one PostgreSQL database take messages at once (issue 11): the same
new patient, the same new order, the same message on both. Nothing is answered
AR 207, nothing is created twice, and a resend gets the original ACK byte for byte,
whichever instance it reaches."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bridge.hl7 import MllpServer
from bridge.hl7.settings import MllpSettings
from bridge.maintenance.retention import Retention
from bridge.orders.ingest import Ingest
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, Store
from tests.orders.conftest import Bridge, renamed, shipped_mappings
from tests.store import conftest as store_fixtures

from .test_race import order

pg_dsn = store_fixtures.pg_dsn  # the fixtures: two instances on one database
pg_pair = store_fixtures.pg_pair

ROUNDS = 3
PER_INSTANCE = 4


@pytest.fixture
async def pair(pg_pair) -> AsyncIterator[tuple[Bridge, Bridge]]:
    bridges = []
    for store in pg_pair:
        commits = CommitQueue(store)
        commits.start()
        mappings = shipped_mappings()
        settings = OrdersSettings()
        ingest = Ingest(lambda m=mappings: m, commits, MllpSettings(), orders=settings)
        await ingest.open()
        server = await MllpServer.start(ingest, host="127.0.0.1", port=0,
                                        max_frame_bytes=1 << 20, idle_timeout_s=60)
        bridges.append(Bridge(store, commits, ingest, server, Retention(commits,
                                                                        settings.messages)))
    yield bridges[0], bridges[1]
    for b in bridges:
        for c in b.clients:
            await c.close()
        await b.server.close()
        b.commits.stop()


async def both(a: Bridge, b: Bridge, messages: list[bytes]) -> list:
    """Each message on its own connection, alternately to each instance, all at once."""
    clients = [await (a if n % 2 == 0 else b).client() for n in range(len(messages))]
    targets = [a if n % 2 == 0 else b for n in range(len(messages))]
    return await asyncio.gather(*(t.send(m, c) for t, m, c in zip(
        targets, messages, clients, strict=True)))


def retries(*stores: Store) -> int:
    return sum(getattr(s, "conflict_retries", 0) for s in stores)


async def test_orders_for_the_same_new_patient_at_two_instances(pair):
    a, b = pair
    for r in range(ROUNDS):
        # A new patient per round (LC1000r), two orders of theirs on each instance.
        msgs = [order(100 * r + n).replace(b"LC10001", f"LC2000{r}".encode())
                for n in range(2 * PER_INSTANCE)]
        acks = await both(a, b, msgs)
        assert [x.code for x in acks] == ["AA"] * len(msgs), acks
    assert a.read(lambda o: o.count_patients()) == ROUNDS
    assert len(a.steps()) == ROUNDS * 2 * PER_INSTANCE


async def test_the_same_new_order_under_other_control_ids_at_two_instances(pair):
    a, b = pair
    msgs = [renamed("lifecycle-nw.hl7", f"DUP-{n}") for n in range(2 * PER_INSTANCE)]
    acks = await both(a, b, msgs)
    assert [x.code for x in acks] == ["AA"] * len(msgs), acks
    assert len(a.steps()) == 1
    outcomes = sorted(m.outcome for m in a.messages())
    assert outcomes == ["1 inserted"] + ["1 unchanged"] * (len(msgs) - 1)


async def test_the_same_message_at_both_instances_gets_one_ack(pair):
    a, b = pair
    raw = renamed("lifecycle-nw.hl7", "SAME-1")
    acks = await both(a, b, [raw] * (2 * PER_INSTANCE))
    assert {x.code for x in acks} == {"AA"}
    # One accepted row; every answer is that row's ACK, byte for byte.
    accepted = [m for m in a.messages() if m.ack_code == "AA"]
    assert len(accepted) == 1
    stored = a.read(lambda o: o.get_message(accepted[0].id)).ack
    assert {x.raw for x in acks} == {stored}
    # A resend later, to each instance (one of them did not store it): from the log.
    for instance in (a, b):
        again = await instance.send(raw, await instance.client())
        assert again.raw == stored
    assert len(a.steps()) == 1
