"""Concurrent messages about one new patient or order, over several real MLLP connections.

The messages reach the listener together and are committed in shared batches
(group commit); the single writer decides them one after the other, so the
second sees the first one's rows and nothing is created twice.
"""

from __future__ import annotations

import asyncio

from tests.orders.conftest import Bridge, fixture, renamed

CONNECTIONS = 8


def order(n: int) -> bytes:
    """Order n for patient LC10001 (who is new): its own keys and control ID."""
    raw = renamed("lifecycle-nw.hl7", f"RACE-{n}")
    return (raw.replace(b"ACC20261130501", f"ACC2026113{n:05d}".encode())
               .replace(b"RP20261130501", f"RP2026113{n:05d}".encode())
               .replace(b"SPS20261130501", f"SPS2026113{n:05d}".encode())
               .replace(b"20261130.501", f"20261130.9{n:03d}".encode()))


async def race(bridge: Bridge, messages: list[bytes]) -> list:
    clients = [await bridge.client() for _ in messages]
    return await asyncio.gather(*(bridge.send(m, c) for m, c in zip(messages, clients,
                                                                     strict=True)))


async def test_the_same_new_order_on_several_connections_is_created_once(bridge: Bridge):
    acks = await race(bridge, [renamed("lifecycle-nw.hl7", f"DUP-{n}")
                               for n in range(CONNECTIONS)])
    assert [a.code for a in acks] == ["AA"] * CONNECTIONS
    assert len(bridge.steps()) == 1
    outcomes = sorted(m.outcome for m in bridge.messages())
    assert outcomes == ["1 inserted"] + ["1 unchanged"] * (CONNECTIONS - 1)
    assert bridge.read(lambda o: o.count_patients()) == 1


async def test_orders_for_the_same_new_patient_on_several_connections_make_one_patient(
        bridge: Bridge):
    acks = await race(bridge, [order(n) for n in range(CONNECTIONS)])
    assert [a.code for a in acks] == ["AA"] * CONNECTIONS
    assert len(bridge.steps()) == CONNECTIONS
    assert bridge.read(lambda o: o.count_patients()) == 1
    assert {r.item.PatientID for r in bridge.steps()} == {"LC10001"}


async def test_a_new_order_racing_its_own_cancel_ends_in_one_item(bridge: Bridge):
    # Whatever order the writer takes them in, there is one step and it is either
    # cancelled (CA last) or the cancel was stored first and the NW was refused.
    acks = await race(bridge, [fixture("lifecycle-nw.hl7"), fixture("lifecycle-ca.hl7")])
    assert len(bridge.steps()) == 1
    status = bridge.steps()[0].sps_status
    codes = [a.code for a in acks]
    assert (codes, status) in ((["AA", "AA"], "CANCELED"), (["AR", "AA"], "CANCELED"))
