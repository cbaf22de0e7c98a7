"""No silent data loss, end to end: over MLLP, a message with an OBR no step would take
gets AE with ERR naming that OBR, nothing is stored and the message is kept as a dead
letter; the profile that takes one step per OBR stores every one.

The messages are the golden cases of the shipped profiles (mappings/cases/).
"""

from __future__ import annotations

import pytest

from tests.orders.conftest import Bridge, make_bridge  # noqa: F401 - fixtures
from tests.store.conftest import store  # noqa: F401 - both backends

from .mapping_helpers import MAPPINGS

CASES = MAPPINGS / "cases"


@pytest.fixture
async def bridge(make_bridge) -> Bridge:  # noqa: F811
    return await make_bridge()


@pytest.mark.parametrize(("case", "location"), [
    ("ihe-swf-orm-v231/reject-one-orc-two-obr.hl7", "OBR^2"),
    ("omg-o19-v251/reject-one-orc-two-obr.hl7", "OBR^2"),
    ("ihe-swfb-omi-v251/reject-second-obr-in-order.hl7", "OBR^1"),
    ("ihe-swf-orm-v231/reject-two-patients.hl7", "PID^1"),
    ("ihe-swf-orm-v231/reject-orc-without-obr.hl7", "ORC^2"),
])
async def test_a_segment_no_step_would_take_is_an_ae_naming_it(bridge: Bridge, case: str,
                                                               location: str) -> None:
    ack = await bridge.send((CASES / case).read_bytes())
    assert (ack.code, ack.error_code, ack.location) == ("AE", 100, location)
    assert "segment" in ack.text
    assert bridge.steps() == []
    [logged] = bridge.messages(rejected=True)
    assert logged.ack_code == "AE"


async def test_one_orc_with_two_obrs_is_two_steps_in_the_plain_profile(bridge: Bridge) -> None:
    ack = await bridge.send((CASES / "orm-no-ihe-extras/one-orc-two-obr.hl7").read_bytes())
    assert (ack.code, ack.err) == ("AA", None)
    assert sorted(bridge.by_sps()) == ["N9001", "N9002"]


async def test_obrs_without_their_own_numbers_under_one_orc_are_not_merged(
        bridge: Bridge) -> None:
    """The plain profile keys each OBR's item by its own filler number (OBR-3), falling
    back to the ORC's: two OBRs without one would be the same step, and are refused."""
    message = "\r".join([
        "MSH|^~\\&|SIMPLERIS|NORTH|MWLBRIDGE|RADIOLOGY|20261130093000||ORM^O01|SR-000950|P|2.3",
        "PID|1||N-209050||SOKOLOVA^IRINA||19810425|F",
        "ORC|NW|9050|N9050||||^^^202611301000^^R",
        "OBR|1|||CT-HEAD",
        "OBR|2|||XR-CHEST",
    ]).encode()
    ack = await bridge.send(message)
    assert (ack.code, ack.error_code, ack.location) == ("AE", 205, "ORC^1^1")
    assert bridge.steps() == []
