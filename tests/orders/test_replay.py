"""Exact resends: the original ACK, no change, and no store work when remembered."""

from __future__ import annotations

from bridge.orders.replay import RecentAcks, ReplayKey, content_hash, replay_key
from tests.orders.conftest import Bridge, fixture, renamed

MSG = fixture("lifecycle-nw.hl7")


def test_content_hash_ignores_line_ends_framing_and_msh7():
    base = content_hash(MSG)
    assert content_hash(MSG.replace(b"\r", b"\r\n")) == base
    assert content_hash(MSG.replace(b"\r", b"\n")) == base
    assert content_hash(b"\x0b" + MSG + b"\x1c\r") == base
    assert content_hash(b"\xef\xbb\xbf" + MSG) == base
    assert content_hash(MSG.replace(b"|20261130080500|", b"|20261130081500|", 1)) == base
    assert content_hash(MSG.replace(b"GARCIA", b"GARCIB")) != base
    assert content_hash(MSG.replace(b"|LC-0001|", b"|LC-0002|")) != base


def test_replay_key_is_msh3_msh4_msh10():
    assert replay_key(MSG) == ReplayKey("RIS", "HOSP", "LC-0001")
    assert replay_key(MSG.replace(b"|LC-0001|", b"||")) is None
    assert replay_key(b"not hl7") is None


def test_recent_acks_keep_the_first_ack_and_forget_the_oldest():
    cache = RecentAcks(2)
    a, b, c = (ReplayKey("R", "H", x) for x in "abc")
    cache.put(a, "h1", b"ack-a")
    cache.put(a, "h2", b"ack-a2")  # a later message under the same key is not the original
    cache.put(b, "h", b"ack-b")
    cache.put(c, "h", b"ack-c")
    assert cache.get(a) is None and cache.get(b) == ("h", b"ack-b") and len(cache) == 2
    off = RecentAcks(0)
    off.put(a, "h", b"x")
    assert off.get(a) is None


async def test_exact_resend_gets_the_original_ack_from_memory(bridge: Bridge):
    first = await bridge.send(MSG)
    steps = [(r.id, r.updated_at) for r in bridge.steps()]
    again = await bridge.send(MSG)
    assert again.raw == first.raw  # byte for byte, ACK control ID and time included
    assert bridge.ingest.cached_resends == 1  # answered before decoding: no store work
    assert [(r.id, r.updated_at) for r in bridge.steps()] == steps
    assert len(bridge.messages()) == 1


async def test_resend_with_other_line_ends_and_message_time_is_a_resend(bridge: Bridge):
    first = await bridge.send(MSG)
    restamped = MSG.replace(b"|20261130080500|", b"|20261130090000|", 1).replace(b"\r", b"\n")
    assert (await bridge.send(restamped)).raw == first.raw
    assert len(bridge.messages()) == 1


async def test_resend_after_restart_is_answered_from_the_warmed_cache(make_bridge):
    first_bridge = await make_bridge()
    first = await first_bridge.send(MSG)
    restarted = await make_bridge()  # a new Ingest on the same store
    assert (await restarted.send(MSG)).raw == first.raw
    assert restarted.ingest.cached_resends == 1
    assert len(restarted.messages()) == 1


async def test_resend_the_cache_forgot_is_found_in_the_message_log(make_bridge):
    bridge = await make_bridge(messages={"replay_cache": 0})
    first = await bridge.send(MSG)
    before = [(r.id, r.updated_at) for r in bridge.steps()]
    assert (await bridge.send(MSG)).raw == first.raw
    assert bridge.ingest.cached_resends == 0
    assert [(r.id, r.updated_at) for r in bridge.steps()] == before
    assert len(bridge.messages()) == 1


async def test_resends_racing_on_several_connections_apply_once(make_bridge):
    import asyncio

    bridge = await make_bridge(messages={"replay_cache": 0})
    clients = [await bridge.client() for _ in range(6)]
    acks = await asyncio.gather(*(bridge.send(MSG, c) for c in clients))
    assert len({a.raw for a in acks}) == 1 and acks[0].code == "AA"
    assert len(bridge.steps()) == 1
    (logged,) = bridge.messages()
    assert logged.outcome == "1 inserted"


async def test_same_control_id_from_another_sender_is_another_message(bridge: Bridge):
    assert (await bridge.send(MSG)).code == "AA"
    other = MSG.replace(b"|RIS|HOSP|", b"|CARERIS|HOSP|", 1)
    ack = await bridge.send(other)
    assert (ack.code, ack.err) == ("AA", None)
    assert len(bridge.messages()) == 2


async def test_a_rejected_message_is_processed_again_when_resent(make_bridge):
    strict = await make_bridge(patients={"sex_codes": ["F", "M"]})
    msg = fixture("lifecycle-nw.hl7").replace(b"|19680214|F|", b"|19680214|U|")
    assert (await strict.send(msg)).code == "AE"
    fixed = await make_bridge()  # the site fixed its configuration
    assert (await fixed.send(msg)).code == "AA"
    assert [m.ack_code for m in fixed.messages()] == ["AA", "AE"]


async def test_new_control_id_same_content_is_not_a_resend(bridge: Bridge):
    assert (await bridge.send(MSG)).code == "AA"
    ack = await bridge.send(renamed("lifecycle-nw.hl7", "LC-NEW"))
    assert ack.control_id == "LC-NEW" and ack.code == "AA"
    assert len(bridge.messages()) == 2
