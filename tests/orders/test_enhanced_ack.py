"""Enhanced acknowledgement mode (MSH-15/MSH-16, issue 14): an accept ACK (CA/CE/CR)
when MSH-15 asks for one, then the application ACK (AA/AE/AR) as MSH-16 asks, for
the senders ``mllp.enhanced_ack`` names. Over a real MLLP connection; every ACK is
parsed by python-hl7 and validated strictly by hl7apy."""

from __future__ import annotations

import asyncio

import hl7
import pytest

from bridge.hl7 import Segment
from bridge.hl7.ack import ErrorDetail, commit_code, enhanced_acks, enhanced_mode
from bridge.hl7.message import parse_header
from bridge.hl7.mllp import encode_frame
from bridge.hl7.settings import MllpSettings
from tests.orders.conftest import fixture, read_acks
from tests.orders.test_ack_strict_peers import strict_parse

GOOD = "orm-o01-ihe-ct.hl7"          # v2.3.1, MSH-15/16 AL|NE, accepted
BAD = "orm-missing-pid3.hl7"         # AE 101
UNSUPPORTED = "QRY^Q01"              # GOOD as a type no mapping takes: AR 200


def with_modes(name: str, accept: str, application: str, control_id: str) -> bytes:
    message_type = b""
    if "^" in name:
        name, message_type = GOOD, name.encode()
    first, sep, rest = fixture(name).partition(b"\r")
    fields = first.split(b"|")
    fields[8] = message_type or fields[8]
    fields += [b""] * (17 - len(fields))
    fields[9] = control_id.encode()
    fields[14], fields[15] = accept.encode(), application.encode()
    return b"|".join(fields) + sep + rest


async def exchange(port: int, message: bytes, expected: int) -> list[tuple[str, str]]:
    """Send one message, read ``expected`` ACKs, then prove no further one follows: an
    original-mode probe's ACK is the very next frame."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(encode_frame(message))
        acks = await read_acks(reader, expected) if expected else []
        probe = with_modes(GOOD, "", "", "PROBE-1")
        writer.write(encode_frame(probe))
        (after,) = await read_acks(reader, 1)
        assert after.control_id == "PROBE-1", "an ACK more than expected was sent"
    finally:
        writer.close()
    for ack in acks:
        text = ack.raw.decode("latin-1")
        strict_parse(text)
        assert str(hl7.parse(text).segment("MSA")[1]) == ack.code
    assert len({a.raw.split(b"|")[9] for a in acks}) == len(acks)  # own MSH-10 each
    return [(a.code, a.control_id) for a in acks]


@pytest.mark.parametrize(("name", "accept", "application", "codes"), [
    (GOOD, "AL", "NE", ["CA"]),
    (GOOD, "AL", "AL", ["CA", "AA"]),
    (GOOD, "NE", "AL", ["AA"]),
    (GOOD, "AL", "ER", ["CA"]),
    (BAD, "AL", "ER", ["CA", "AE"]),    # stored as a dead letter: committed, then AE
    (BAD, "NE", "SU", ["CA"]),          # neither asked for: MLLP still answers the frame
    (GOOD, "ER", "SU", ["AA"]),
    (UNSUPPORTED, "AL", "AL", ["CR"]),  # the message itself refused: no application ACK
    (UNSUPPORTED, "ER", "AL", ["CR"]),
])
async def test_enhanced_mode_sends_what_msh15_and_msh16_ask_for(
        make_bridge, name, accept, application, codes):
    bridge = await make_bridge(mllp=MllpSettings(enhanced_ack=["RIS"]))
    acks = await exchange(bridge.server.port, with_modes(name, accept, application, "E-1"),
                          len(codes))
    assert acks == [(code, "E-1") for code in codes]


async def test_senders_not_named_get_the_original_mode_ack(make_bridge):
    bridge = await make_bridge(mllp=MllpSettings(enhanced_ack=["OTHERRIS"]))
    acks = await exchange(bridge.server.port, with_modes(GOOD, "AL", "AL", "O-1"), 1)
    assert acks == [("AA", "O-1")]


async def test_a_resend_gets_both_acks_again(make_bridge):
    bridge = await make_bridge(mllp=MllpSettings(enhanced_ack=["*"]))
    message = with_modes(GOOD, "AL", "AL", "R-1")
    first = await exchange(bridge.server.port, message, 2)
    again = await exchange(bridge.server.port, message, 2)
    assert first == again == [("CA", "R-1"), ("AA", "R-1")]
    assert len(bridge.steps()) == 1


def _msh(accept: str, application: str) -> Segment:
    return parse_header(f"MSH|^~\\&|RIS|H|MWL|R|20261130||ORM^O01|1|P|2.3.1|||{accept}|"
                        f"{application}")


def test_commit_codes_and_modes() -> None:
    assert enhanced_mode(_msh("", "")) is None
    assert enhanced_mode(_msh("al", "")) == ("AL", "AL")  # empty or unknown: AL
    assert enhanced_mode(_msh("XX", "NE")) == ("AL", "NE")
    assert commit_code("AA", ()) == commit_code("AE", ()) == "CA"
    assert commit_code("AR", [ErrorDetail(203, "MSH^1^12", "v9")]) == "CR"
    store_failed = [ErrorDetail(207, "", "message not stored; please resend")]
    assert commit_code("AR", store_failed) == "CE"
    # a store failure (AR 207) is a commit error, and no application ACK follows
    built = enhanced_acks(_msh("AL", "AL"), "AR", store_failed,
                          lambda code, errs: f"{code}:{len(errs)}".encode())
    assert built == [b"CE:1"]
    assert enhanced_acks(_msh("", ""), "AA", (), lambda c, e: c.encode()) == [b"AA"]
