"""Replies the outbox sender must retry, against a real MLLP receiver: a CE (commit error)
and a reply without MSA. Each retry is recorded (attempts, last_error) before the message
is sent again; neither is taken for a delivery nor for a dead letter."""

from __future__ import annotations

from bridge.hl7 import encode_frame
from bridge.outbound.sender import OutboxSender
from bridge.store import outbox_tx
from tests.waiting import until

from .conftest import destination, pending, queue, running
from .mllp_receiver import MllpReceiver, Received, Reply


def only(store) -> outbox_tx.OutboxMessage:
    (msg,) = outbox_tx.list_messages(store)
    return msg


async def test_ce_is_retried_and_the_retry_is_recorded(sqlite_store):
    queue(sqlite_store, "ris", [("A", "IP")])
    answer = {"code": "CE"}

    def respond(msg: Received, _: int) -> Reply:
        return Reply(code=answer["code"])

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.2)
    async with running(sender, receiver):
        # The CE is on record before anything else happens: pending, one attempt, why.
        await until(lambda: only(sqlite_store).attempts >= 1)
        msg = only(sqlite_store)
        assert (msg.state, msg.last_error) == ("pending", "reply CE")
        assert sender.stats.retries >= 1 and sender.stats.sent == 0 and sender.stats.dead == 0
        answer["code"] = "CA"
        await until(lambda: pending(sqlite_store) == 0)
    msg = only(sqlite_store)
    assert msg.state == "sent" and msg.last_error == "" and msg.attempts >= 2
    assert sender.stats.sent == 1 and sender.stats.dead == 0


async def test_a_reply_without_msa_is_retried_and_recorded(sqlite_store):
    queue(sqlite_store, "ris", [("A", "IP")])
    receiver = MllpReceiver(respond=lambda m, _: Reply())
    receiver.start()
    original = receiver._serve
    bare = {"on": True}

    # While "on", each connection answers with an ACK that has no MSA segment.
    def serve(sock) -> None:
        if bare["on"]:
            receiver.connections += 1
            sock.recv(65536)
            sock.sendall(encode_frame(b"MSH|^~\\&|RIS|H|B|R|20261128||ACK|X|P|2.3.1\r"))
            sock.close()
            return
        original(sock)

    receiver._serve = serve  # type: ignore[method-assign]
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.2)
    async with running(sender, receiver):
        await until(lambda: only(sqlite_store).attempts >= 1)
        msg = only(sqlite_store)
        assert (msg.state, msg.last_error) == ("pending", "reply without MSA")
        assert sender.stats.sent == 0 and sender.stats.dead == 0
        bare["on"] = False
        await until(lambda: pending(sqlite_store) == 0)
    msg = only(sqlite_store)
    assert msg.state == "sent" and msg.attempts >= 2
    assert sender.stats.sent == 1 and sender.stats.dead == 0
