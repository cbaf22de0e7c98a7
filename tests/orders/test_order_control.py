"""Order control over real MLLP: every ORC-1 code, in realistic sequences, on both stores."""

from __future__ import annotations

import pytest

from tests.orders.conftest import Bridge, renamed

SPS_A = "SPS20261130501"


def status(bridge: Bridge, sps: str = SPS_A) -> str:
    return bridge.by_sps()[sps].sps_status


def sps_of(bridge: Bridge, sps: str = SPS_A):
    return bridge.by_sps()[sps].item.ScheduledProcedureStepSequence[0]


async def test_new_then_reschedule_then_cancel(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert status(bridge) == "SCHEDULED"
    assert sps_of(bridge).ScheduledStationAETitle == "CT01"
    first_id = bridge.by_sps()[SPS_A].id

    ack = await bridge.send("lifecycle-xo-reschedule.hl7")
    assert (ack.code, ack.err) == ("AA", None)
    row = bridge.by_sps()[SPS_A]
    assert row.id == first_id  # updated in place
    sps = row.item.ScheduledProcedureStepSequence[0]
    assert (sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime,
            sps.ScheduledStationAETitle) == ("20261201", "143000", "CT02")
    assert row.sps_status == "SCHEDULED"

    # The cancel carries only the keys and no ZDS: the stored content stays, the
    # status changes, and the Study Instance UID is the one the NW sent.
    assert (await bridge.send("lifecycle-ca.hl7")).code == "AA"
    row = bridge.by_sps()[SPS_A]
    assert row.sps_status == "CANCELED"
    assert row.item.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.20261130.501"
    assert row.item.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "CT02"
    assert len(bridge.steps()) == 1


@pytest.mark.parametrize(("name", "want"), [
    ("lifecycle-oc.hl7", "CANCELED"), ("lifecycle-dc.hl7", "DISCONTINUED"),
    ("lifecycle-od.hl7", "DISCONTINUED"), ("lifecycle-ca.hl7", "CANCELED")])
async def test_cancel_discontinue_controls(bridge: Bridge, name: str, want: str):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send(name)).code == "AA"
    assert status(bridge) == want, name


async def test_a_finished_order_is_never_reopened_by_hl7(bridge: Bridge):
    """The conflict rule shared with MPPS (bridge/steps/rules.py)."""
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-ca.hl7")).code == "AA"
    for n, name in enumerate(("lifecycle-rl.hl7", "lifecycle-xo-reschedule.hl7",
                              "lifecycle-sc-ip.hl7", "lifecycle-oru-r01-final.hl7")):
        assert (await bridge.send(renamed(name, f"AGAIN-{n}"))).code == "AA", name
        assert status(bridge) == "CANCELED", name


async def test_a_started_step_does_not_go_back_to_scheduled(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-sc-ip.hl7")).code == "AA"
    # A reschedule still updates the content, but the modality has started.
    assert (await bridge.send("lifecycle-xo-reschedule.hl7")).code == "AA"
    assert status(bridge) == "STARTED"
    assert sps_of(bridge).ScheduledStationAETitle == "CT02"
    assert (await bridge.send("lifecycle-hd.hl7")).code == "AA"
    assert status(bridge) == "STARTED"
    assert (await bridge.send("lifecycle-dc.hl7")).code == "AA"  # a terminal status applies
    assert status(bridge) == "DISCONTINUED"


async def test_status_change_hold_release_and_completion(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    for name, want in (("lifecycle-hd.hl7", "HELD"), ("lifecycle-rl.hl7", "SCHEDULED"),
                       ("lifecycle-sc-ip.hl7", "STARTED"), ("lifecycle-sc-cm.hl7", "COMPLETED")):
        assert (await bridge.send(name)).code == "AA", name
        assert status(bridge) == want, name
        # A status change never loses what the order was scheduled with.
        assert sps_of(bridge).ScheduledStationAETitle == "CT01"


async def test_change_order_with_completed_status(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-xo-cm.hl7")).code == "AA"
    assert status(bridge) == "COMPLETED"


async def test_unmapped_order_control_combination_is_ae_at_orc1(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    before = bridge.state()
    ack = await bridge.send("lifecycle-sc-unmapped.hl7")  # SC with an empty ORC-5
    assert (ack.code, ack.error_code, ack.location) == ("AE", 103, "ORC^1^1")
    assert "order control SC" in ack.text
    assert bridge.state() == before
    ack = await bridge.send("lifecycle-xx-unknown-control.hl7")  # ZZ/SC
    assert (ack.code, ack.error_code, ack.location) == ("AE", 103, "ORC^1^1")
    assert "ZZ/SC" in ack.text
    assert status(bridge) == "SCHEDULED"  # nothing changed
    assert bridge.state() == before


async def test_order_control_table_is_configurable(make_bridge):
    bridge = await make_bridge(order_control=[
        {"control": ["NW"], "order_status": ["*"], "action": "new", "status": "SCHEDULED"},
        {"control": ["HD"], "action": "status", "status": "SCHEDULED"},  # a site that ignores holds
        {"control": ["SC"], "order_status": [""], "action": "status", "status": "ARRIVED"},
    ])
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-hd.hl7")).code == "AA"
    assert status(bridge) == "SCHEDULED"
    assert (await bridge.send("lifecycle-sc-unmapped.hl7")).code == "AA"
    assert status(bridge) == "ARRIVED"
    before = bridge.state()
    ack = await bridge.send("lifecycle-ca.hl7")  # CA is not in this table
    assert (ack.code, ack.error_code, ack.location) == ("AE", 103, "ORC^1^1")
    assert bridge.state() == before


async def test_omi_order_with_two_ipc_is_cancelled_as_a_whole(bridge: Bridge):
    assert (await bridge.send("lifecycle-omi-o23-nw.hl7")).code == "AA"
    by_sps = bridge.by_sps()
    assert {by_sps[s].sps_status for s in ("SPS20261130511A", "SPS20261130511B")} == {
        "SCHEDULED"}
    assert (await bridge.send("lifecycle-omi-o23-ca.hl7")).code == "AA"
    by_sps = bridge.by_sps()
    assert {by_sps[s].sps_status for s in ("SPS20261130511A", "SPS20261130511B")} == {
        "CANCELED"}


async def test_omg_order_discontinued(bridge: Bridge):
    assert (await bridge.send("lifecycle-omg-o19-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-omg-o19-dc.hl7")).code == "AA"
    assert status(bridge, "SPS20261130521") == "DISCONTINUED"


async def test_status_message_for_an_unknown_order_follows_the_policy(make_bridge):
    bridge = await make_bridge()  # unknown_order: create (the default)
    assert (await bridge.send("lifecycle-ca.hl7")).code == "AA"
    assert status(bridge) == "CANCELED"  # stored, hidden, so a late NW cannot resurrect it
    before = bridge.state()
    # The late NW differs from what the cancel stored: new_order_exists (reject) applies.
    ack = await bridge.send("lifecycle-nw.hl7")
    assert (ack.code, ack.error_code, ack.location) == ("AR", 205, "ORC^1^1")
    assert status(bridge) == "CANCELED"
    assert bridge.state() == before


async def test_status_message_for_an_unknown_order_can_be_rejected(make_bridge):
    strict = await make_bridge(unknown_order="reject")
    before = strict.state()
    ack = await strict.send("lifecycle-sc-ip.hl7")
    # The accession is the identity the message failed to find.
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "OBR^1^18")
    assert strict.state() == before and strict.steps() == []  # no item, no patient


async def test_oru_final_result_completes_the_procedure(bridge: Bridge):
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-oru-r01-preliminary.hl7")).code == "AA"
    assert status(bridge) == "SCHEDULED"  # P is not final
    assert (await bridge.send("lifecycle-oru-r01-final.hl7")).code == "AA"
    assert status(bridge) == "COMPLETED"
    assert sps_of(bridge).ScheduledStationAETitle == "CT01"


async def test_oru_result_handling_is_configurable(make_bridge):
    bridge = await make_bridge(results={"final_statuses": ["F", "P"], "unknown_order": "reject"})
    empty = bridge.state()
    ack = await bridge.send("lifecycle-oru-r01-final.hl7")  # nothing scheduled yet
    assert (ack.code, ack.error_code, ack.location) == ("AE", 204, "OBR^1^18")
    assert bridge.state() == empty
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"
    assert (await bridge.send("lifecycle-oru-r01-preliminary.hl7")).code == "AA"
    assert status(bridge) == "COMPLETED"

    off = await make_bridge(results={"enabled": False})
    before = off.state()
    ack = await off.send("lifecycle-oru-r01-final.hl7")
    assert (ack.code, ack.error_code, ack.location) == ("AR", 200, "MSH^1^9")
    assert off.state() == before


async def test_oru_for_an_unknown_order_is_accepted_and_flagged(bridge: Bridge):
    ack = await bridge.send("lifecycle-oru-r01-final.hl7")
    assert ack.code == "AA"
    (logged,) = bridge.messages(control_id="LC-0301")
    assert logged.flags == "no_matching_order"
