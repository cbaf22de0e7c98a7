"""Ingest's own error answers, through the real listener and store: a message whose body
cannot be parsed (AR 100) and a fault while mapping (AR 207). Nothing is applied; the
message is kept whole as a dead letter with its reason."""

from __future__ import annotations

import logging

from bridge.mapping import MappingSet
from tests.orders.conftest import Bridge, fixture, shipped_mappings


async def test_a_body_that_cannot_be_parsed_gets_ar_100(make_bridge):
    bridge: Bridge = await make_bridge()
    empty = bridge.state()
    # MSH is readable, the second segment is not a segment at all.
    raw = fixture("lifecycle-nw.hl7").replace(b"\rPID|1", b"\r\x00\x01 not a segment\rPID|1", 1)
    ack = await bridge.send(raw)
    assert (ack.code, ack.control_id, ack.error_code) == ("AR", "LC-0001", 100), ack
    assert ack.text == "cannot parse message: segment 2 has no valid segment id"
    assert bridge.state() == empty
    (dead,) = bridge.messages(rejected=True)
    assert dead.ack_code == "AR" and dead.error.startswith("100 ")
    assert "cannot parse message: segment 2 has no valid segment id" in dead.error
    assert bridge.read(lambda o: o.get_message(dead.id)).raw == raw
    # The listener goes on: the message as it should have been is accepted.
    assert (await bridge.send("lifecycle-nw.hl7")).code == "AA"


class FaultyMappings(MappingSet):
    """The shipped mappings, with a bug in routing: an unexpected exception, not a
    MappingError."""

    def __init__(self) -> None:
        self.__dict__.update(shipped_mappings().__dict__)

    def route(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("a bug in the mapping code")


async def test_a_fault_while_mapping_gets_ar_207_and_is_kept(make_bridge, caplog):
    bridge: Bridge = await make_bridge(mappings=FaultyMappings())
    empty = bridge.state()
    with caplog.at_level(logging.ERROR, logger="bridge.orders.ingest"):
        ack = await bridge.send("lifecycle-nw.hl7")
    assert (ack.code, ack.control_id, ack.error_code, ack.location) == ("AR", "LC-0001", 207,
                                                                         ""), ack
    assert ack.text == "internal error while mapping: ZeroDivisionError"
    # The traceback is logged for a bug report; the value is not sent to the peer.
    (record,) = [r for r in caplog.records if "preparing message" in r.getMessage()]
    assert record.exc_info is not None and record.exc_info[0] is ZeroDivisionError
    assert "a bug in the mapping code" not in ack.raw.decode("latin-1")
    assert bridge.state() == empty
    (dead,) = bridge.messages(rejected=True)
    assert (dead.ack_code, dead.error) == ("AR", "207 internal error while mapping: "
                                                 "ZeroDivisionError")
    assert bridge.read(lambda o: o.get_message(dead.id)).raw == fixture("lifecycle-nw.hl7")
