"""The reasons the outbox sender records, exactly as an operator reads them in
``mwl-bridge outbox list/show`` and the console: a negative ACK's MSA-3/ERR text
(the dead letter's reason), and why a connection or TLS handshake failed (the
pending message's last error). Also when a retry is due (backoff) and ``wake``.

Replies come from real MLLP receivers: a scripted one that answers each message
with the bytes its case names (any separator, segment end or ERR layout), and the
shared MllpReceiver. Connection failures come from real peers (a closed port, a
silent listener, a peer that does not speak TLS, TLS receivers with the wrong
certificate); a few OpenSSL errors no peer here provokes are made by a real
in-memory handshake. Every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta

import pytest

from bridge.hl7 import FrameDecoder, encode_frame, read_header
from bridge.hl7.client import MllpClient
from bridge.outbound.sender import OutboxSender, _connect_error, _describe, _reply_text
from bridge.outbound.settings import OutboundDestination
from bridge.outbound.tls import destination_contexts, server_name
from bridge.store import Store, outbox_tx
from bridge.store.sqltx import parse_stamp
from bridge.telemetry import Metrics
from tests.tlscerts import Pki, make_pki
from tests.waiting import until

from .conftest import destination, queue, rows, running
from .mllp_receiver import MllpReceiver, Received, Reply, reserve_port
from .tls_receiver import TlsMllpReceiver

# The receiver's MSH of most scripted replies (v2.5, "|" and "^~\&").
MSH = "MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RAD|20261128093001||ACK^O01^ACK|R1|P|2.5"
LONG = "order A cannot be updated: " + "the study is locked by another user, " * 20
E207 = "207^Application internal error^HL70357"


def reply(*segments: str, end: str = "\r", msh: str = MSH) -> str:
    return end.join([msh, *segments]) + end


# (case, reply with {cid} for MSA-2, the reason recorded: dead letter or retry)
DEAD_LETTERS: list[tuple[str, str, str]] = [
    ("AEMSA3", reply("MSA|AE|{cid}|unknown order A"), "AE: unknown order A"),
    ("ARBARE", reply("MSA|AR|{cid}"), "AR: no reason given"),
    ("CRMSA3", reply("MSA|CR|{cid}|unsupported message type"),
     "CR: unsupported message type"),
    # v2.3.1: the text is in ERR-1 (a CM: segment^sequence^field^code&text&table).
    ("V231ERR1", reply("MSA|AE|{cid}", "ERR|PID^1^3^101&Required field missing&HL70357"),
     "AE: PID^1^3^101&Required field missing&HL70357"),
    # v2.5 forms: ERR-3 (the HL7 error code) and ERR-8 (the user message), the first
    # two texts of ERR-3, ERR-8 and ERR-1, however many fields the receiver writes.
    ("V25ERR3", reply("MSA|AR|{cid}", "ERR||PID^1^3|101^Required field missing^HL70357"),
     "AR: 101^Required field missing^HL70357"),
    ("V25ERR7", reply("MSA|AE|{cid}", f"ERR||PID^1^3|{E207}|E|||check the order"),
     f"AE: {E207}"),
    ("V25ERR8", reply("MSA|AR|{cid}", f"ERR||ORC^1^1|{E207}|E||||order A is locked"),
     f"AR: {E207} order A is locked"),
    ("V25ERR8PLUS", reply("MSA|AR|{cid}", f"ERR|||{E207}|E||||order A is locked|RIS|"),
     f"AR: {E207} order A is locked"),
    ("V231ERR2", reply("MSA|AE|{cid}", "ERR|^^^207&Application internal error&HL70357|ORC"),
     "AE: ^^^207&Application internal error&HL70357"),
    # Both forms in one ERR (ERR-1 and ERR-3..8): ERR-1 repeats ERR-3, left out.
    ("BOTHFORMS", reply("MSA|AR|{cid}", "ERR|^^^207&Application internal error&HL70357||"
                                        f"{E207}|E||||order A is locked"),
     f"AR: {E207} order A is locked"),
    ("MSA3ANDERR", reply("MSA|AE|{cid}|order A is locked",
                         "ERR|^^^207&Application internal error&HL70357"),
     "AE: order A is locked; ^^^207&Application internal error&HL70357"),
    ("SEVERALERR", reply("MSA|AR|{cid}",
                         "ERR||PID^1^3|101^Required field missing^HL70357|E||||no patient ID",
                         "ERR||PV1^1^2|102^Data type error^HL70357|E||||bad class"),
     "AR: 101^Required field missing^HL70357 no patient ID; "
     "102^Data type error^HL70357 bad class"),
    ("HASHSEP", reply("MSA#AR#{cid}#unknown order A", f"ERR###{E207}#E####order A is closed",
                      msh=MSH.replace("|", "#")),
     f"AR: unknown order A; {E207} order A is closed"),
    ("CRLF", reply("MSA|AE|{cid}|unknown order A", f"ERR|||{E207}|E||||order A is closed",
                   end="\r\n"),
     f"AE: unknown order A; {E207} order A is closed"),
    ("LF", reply("MSA|AE|{cid}|unknown order A", f"ERR|||{E207}|E||||order A is closed",
                 end="\n"),
     f"AE: unknown order A; {E207} order A is closed"),
    # A blank line before MSH: the ACK is still read, and so is its text.
    ("LEADINGEOL", "\r\n" + reply("MSA|AE|{cid}|unknown order A", end="\r\n"),
     "AE: unknown order A"),
    ("EMPTY", reply("MSA|AE|{cid}|", "ERR", "ERR|", "ERR||||||||", "ERR||||||||||"),
     "AE: no reason given"),
    # Cut at 500 characters (the store keeps the reply itself in full).
    ("LONG", reply("MSA|AR|{cid}|" + LONG), "AR: " + LONG[:500]),
    # A receiver in ISO 8859-1 (MSH-18): its text reads as it was written.
    ("LATIN1", reply("MSA|AE|{cid}|Patient M\xfcller unknown", msh=MSH + "||||||8859/1"),
     "AE: Patient M\xfcller unknown"),
    # Without MSH-18: in the destination's charset (UTF-8 here), and text that is not
    # valid in it as Latin-1, which reads any byte.
    ("UTF8BARE", reply("MSA|AE|{cid}|Patient M\xfcller unknown"),
     "AE: Patient M\xfcller unknown"),
    ("UTF8MSH18", reply("MSA|AE|{cid}|Patient M\xfcller unknown",
                        msh=MSH + "||||||UNICODE UTF-8"), "AE: Patient M\xfcller unknown"),
    ("LATIN1BARE", reply("MSA|AE|{cid}|Patient M\xfcller unknown"),
     "AE: Patient M\xfcller unknown"),
    # A blank line before an MSH with its own field separator.
    ("HASHEOL", "\r\n" + reply("MSA#AR#{cid}#unknown order A", msh=MSH.replace("|", "#")),
     "AR: unknown order A"),
]
# The replies sent as UTF-8; the others as Latin-1.
UTF8 = {"UTF8BARE", "UTF8MSH18"}
RETRIES: list[tuple[str, str, str]] = [
    ("CEMSA3", reply("MSA|CE|{cid}|database busy"), "reply CE"),
    ("NOTACK", "ERROR: bad message\r\n", "reply without MSA"),
]


@asynccontextmanager
async def scripted_receiver(replies: dict[str, bytes]) -> AsyncIterator[int]:
    """An MLLP receiver on this loop answering each message with ``replies[MSH-10]``
    ({cid} replaced by that control ID); yields its port."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(1 << 20)
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    header = read_header(getattr(frame, "payload", b"").decode("latin-1"))
                    cid = header.value(10) if header is not None else ""
                    writer.write(encode_frame(replies[cid].replace(b"{cid}", cid.encode())))
                    await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


def counted(metrics: Metrics, outcome: str) -> float | None:
    """The destination's ``mwl_bridge_outbox_<outcome>_total`` counter."""
    return metrics.registry.get_sample_value(f"mwl_bridge_outbox_{outcome}_total",
                                             {"destination": "ris"})


async def test_negative_acks_are_dead_letters_with_the_receivers_text(
        sqlite_store: Store) -> None:
    """Each case is its own order, answered by its own reply; all in one sender run.
    AE/AR/CR: a dead letter whose reason is the code and the MSA-3/ERR text; CE and a
    reply without MSA: pending, retried."""
    cases = DEAD_LETTERS + RETRIES
    queue(sqlite_store, "ris", [(case, "IP") for case, _, _ in cases])
    replies = {f"{case}-IP": text.encode("utf-8" if case in UTF8 else "latin-1")
               for case, text, _ in cases}
    dead = {f"{case}-IP" for case, _, _ in DEAD_LETTERS}

    def settled() -> bool:
        got = rows(sqlite_store)
        return all(got[cid].state == "dead" for cid in dead) and all(
            got[cid].attempts >= 1 for cid in replies if cid not in dead)

    async with scripted_receiver(replies) as port:
        metrics = Metrics(destinations=["ris"])
        sender = OutboxSender(sqlite_store, [destination(port, max_connections=4)],
                              poll_interval_s=0.05, metrics=metrics)
        async with running(sender):
            await until(settled, timeout=20)
    got = rows(sqlite_store)
    assert {cid: (got[cid].state, got[cid].last_error) for cid in replies} == {
        f"{case}-IP": ("dead" if f"{case}-IP" in dead else "pending", reason)
        for case, _, reason in cases}
    assert sender.stats.dead == len(DEAD_LETTERS) and sender.stats.sent == 0
    assert counted(metrics, "dead_letters") == len(DEAD_LETTERS)
    # The dead letter keeps the whole reply, also when its reason was cut.
    assert got["LONG-IP"].ack == replies["LONG-IP"].replace(b"{cid}", b"LONG-IP")


async def test_an_ar_with_err_from_the_receiver_is_the_dead_letters_reason(
        sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """The shared receiver's AR to a v2.3.1 message: MSA-3 and ERR-1 (build_ack). Then
    the order goes on; a dead letter or a delivery ends a run of failures, so the next
    CE waits the initial backoff again. Each outcome is logged and counted."""
    queue(sqlite_store, "ris", [("A", "IP"), ("A", "CM"), ("A", "SC")])
    answered: dict[str, int] = {}

    def respond(msg: Received, _: int) -> Reply:
        answered[msg.control_id] = answered.get(msg.control_id, 0) + 1
        if msg.control_id == "A-IP":
            return Reply(code="AR", error="order A is unknown here")
        return Reply(code="CE" if answered[msg.control_id] == 1 else "AA")

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    metrics = Metrics(destinations=["ris"])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1,
                                                     backoff_initial_s=0.2, backoff_max_s=1)],
                          poll_interval_s=0.05, metrics=metrics)
    caplog.set_level(logging.DEBUG, logger="bridge.outbound.sender")
    async with running(sender, receiver):
        await until(lambda: rows(sqlite_store)["A-SC"].state == "sent", timeout=20)
    refused = rows(sqlite_store)["A-IP"]
    assert (refused.state, refused.attempts) == ("dead", 1)  # refused once, not retried
    assert refused.last_error == ("AR: order A is unknown here; "
                                  "^^^207&Application internal error&HL70357")
    logged = [r.getMessage() for r in caplog.records if r.name == "bridge.outbound.sender"
              and r.getMessage().startswith("status message")]
    assert logged == [
        "status message A-IP refused by ris (AR); kept as a dead letter "
        "(mwl-bridge outbox list --state dead)",
        "status message A-CM to ris not delivered (reply CE); retry 1 in 0.2 s",
        "status message A-CM delivered to ris (AA)",
        "status message A-SC to ris not delivered (reply CE); retry 1 in 0.2 s",
        "status message A-SC delivered to ris (AA)"]
    assert (sender.stats.dead, sender.stats.sent, sender.stats.retries) == (1, 2, 2)
    assert [counted(metrics, o) for o in ("dead_letters", "sent", "retries")] == [1, 2, 2]


def test_a_reply_that_is_not_hl7_has_no_reason_text() -> None:
    # Only MSA-3 and ERR are reasons: a line that merely starts like "ERR" is not one.
    assert _reply_text(b"ERROR: bad message\r\n", "UNICODE UTF-8") == ""
    assert _reply_text(b"<html>ERR</html>", "UNICODE UTF-8") == ""
    # Segments without an MSH still give theirs.
    assert _reply_text(b"MSA|AE|A-IP|unknown order A\rERR|||207^x^HL70357",
                       "UNICODE UTF-8") == "unknown order A; 207^x^HL70357"


@pytest.mark.parametrize(("msh18", "charset", "data", "reason"), [
    # No MSH-18: the destination's charset, whatever it is.
    pytest.param("", "8859/1", "M\xfcller".encode(), "M\xc3\xbcller", id="destination"),
    pytest.param("", "8859/5", "\u0416".encode("iso8859-5"), "\u0416", id="cyrillic"),
    # The reply's own MSH-18 wins over the destination's charset.
    pytest.param("8859/1", "UNICODE UTF-8", "M\xfcller".encode(), "M\xc3\xbcller",
                 id="msh18-wins"),
    # An MSH-18 that names no charset: the destination's.
    pytest.param("KLINGON", "UNICODE UTF-8", "M\xfcller".encode(), "M\xfcller",
                 id="unknown-msh18"),
    # Neither decodes it: Latin-1 keeps every byte readable.
    pytest.param("UNICODE UTF-8", "UNICODE UTF-8", "M\xfcller".encode("latin-1"),
                 "M\xfcller", id="latin1-last"),
])
def test_a_reason_is_read_in_the_replys_charset_else_the_destinations(
        msh18: str, charset: str, data: bytes, reason: str) -> None:
    ack = f"{MSH}{'|' * 6}{msh18}\r".encode() if msh18 else f"{MSH}\r".encode()
    assert _reply_text(ack + b"MSA|AE|A-IP|" + data + b"\r", charset) == reason


# --- connection and TLS failures -----------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_destination(port: int, **tls: object) -> OutboundDestination:
    return destination(port, connect_timeout_s=0.2,
                       tls={"enabled": True, "handshake_timeout_s": 0.2, **tls})


def first_error(store: Store) -> str:
    (message,) = outbox_tx.list_messages(store)
    assert message.state == "pending"
    return message.last_error


@contextmanager
def silent_listener() -> Iterator[int]:
    """Accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield int(sock.getsockname()[1])


async def connect_error(dest: OutboundDestination) -> str:
    """What a failed connect to ``dest`` is recorded as."""
    with pytest.raises((TimeoutError, OSError)) as info:
        client = await MllpClient.connect(
            dest.host, dest.port, timeout=dest.connect_timeout_s + dest.tls.handshake_timeout_s,
            ssl=destination_contexts([dest])[dest.name], server_hostname=server_name(dest))
        await client.close()
    return _connect_error(dest, info.value)


async def test_a_refused_connection_is_recorded_with_host_and_port(sqlite_store: Store
                                                                  ) -> None:
    port = reserve_port()  # nobody listens
    queue(sqlite_store, "ris", [("A", "IP")])
    sender = OutboxSender(sqlite_store, [destination(port)], poll_interval_s=0.05)
    async with running(sender):
        await until(lambda: outbox_tx.list_messages(sqlite_store)[0].attempts >= 1, timeout=20)
    assert first_error(sqlite_store) == (
        f"cannot connect to 127.0.0.1:{port}: [Errno 111] Connect call failed "
        f"('127.0.0.1', {port})")


async def test_a_tls_handshake_that_times_out_names_host_port_and_time_once(
        sqlite_store: Store) -> None:
    queue(sqlite_store, "ris", [("A", "IP")])
    with silent_listener() as port:
        sender = OutboxSender(sqlite_store, [tls_destination(port)], poll_interval_s=0.05)
        async with running(sender):
            await until(lambda: outbox_tx.list_messages(sqlite_store)[0].attempts >= 1,
                        timeout=20)
    # connect_timeout_s + handshake_timeout_s; the address is in it once, not twice.
    assert first_error(sqlite_store) == f"connecting to 127.0.0.1:{port} took over 0.4 s"


async def test_a_peer_that_does_not_speak_tls_is_a_failed_handshake() -> None:
    async def plain_text(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the ClientHello
        writer.write(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(plain_text, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        reason = await connect_error(tls_destination(port, handshake_timeout_s=5.0))
    finally:
        server.close()
        await server.wait_closed()
    # OpenSSL's reason alone: no verification result to add, and no "None".
    assert reason == "TLS handshake failed: WRONG_VERSION_NUMBER"


async def test_a_receiver_that_hangs_up_in_the_handshake_is_named_by_the_error_kind(
        pki: Pki) -> None:
    """A TLS 1.2-only receiver and a destination that wants 1.3: the receiver drops the
    connection without a word, which has no text of its own."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(pki.server.cert, pki.server.key)
    server_ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    async def serve(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = int(server.sockets[0].getsockname()[1])
    try:
        reason = await connect_error(tls_destination(
            port, ca_file=pki.ca, min_version="1.3", handshake_timeout_s=5.0))
    finally:
        server.close()
        await server.wait_closed()
    assert reason == f"cannot connect to 127.0.0.1:{port}: ConnectionResetError"


@pytest.mark.parametrize(("server_hostname", "server_pair", "expected"), [
    ("", "outsider", "TLS handshake failed: CERTIFICATE_VERIFY_FAILED: unable to get local "
                     "issuer certificate"),
    ("ris.example.org", "server", "TLS handshake failed: CERTIFICATE_VERIFY_FAILED: Hostname "
                                  "mismatch, certificate is not valid for 'ris.example.org'."),
], ids=["untrusted", "hostname-mismatch"])
async def test_a_receiver_certificate_we_refuse_is_named_with_the_verify_result(
        pki: Pki, server_hostname: str, server_pair: str, expected: str) -> None:
    receiver = TlsMllpReceiver(getattr(pki, server_pair), pki.ca)
    port = await receiver.start()
    try:
        reason = await connect_error(tls_destination(
            port, ca_file=pki.ca, server_hostname=server_hostname, handshake_timeout_s=5.0))
    finally:
        await receiver.close()
    assert reason == expected
    assert receiver.sessions == 0


def test_connect_errors_are_prefixed_with_the_address_unless_they_name_it() -> None:
    dest = destination(2575)
    assert _connect_error(dest, ConnectionRefusedError(111, "Connect call failed")) == (
        "cannot connect to 127.0.0.1:2575: [Errno 111] Connect call failed")
    assert _connect_error(dest, TimeoutError()) == "cannot connect to 127.0.0.1:2575: timed out"
    assert _connect_error(dest, ConnectionResetError()) == (
        "cannot connect to 127.0.0.1:2575: ConnectionResetError")
    assert _connect_error(dest, TimeoutError("connecting to 127.0.0.1:2575 took over 1.0 s")
                          ) == "connecting to 127.0.0.1:2575 took over 1.0 s"


def handshake_error(options: int) -> ssl.SSLError:
    """The real OpenSSL error of a client whose peer closes during the handshake."""
    ctx = ssl.create_default_context()
    ctx.options |= options
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname="ris.example.org")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()  # the ClientHello goes out
    incoming.write_eof()
    with pytest.raises(ssl.SSLError) as info:
        tls.do_handshake()
    return info.value


def test_an_openssl_error_without_a_reason_code_is_named_by_its_kind() -> None:
    # OpenSSL reports a clean close mid-handshake (tolerated EOF) without a reason code.
    closed = handshake_error(ssl.OP_IGNORE_UNEXPECTED_EOF)
    assert isinstance(closed, ssl.SSLZeroReturnError) and closed.reason is None
    assert _describe(closed) == "TLS handshake failed: SSLZeroReturnError"
    assert _describe(handshake_error(0)) == "TLS handshake failed: UNEXPECTED_EOF_WHILE_READING"


# --- backoff and wake ----------------------------------------------------------------


async def test_each_retry_waits_twice_as_long_up_to_the_cap(
        sqlite_store: Store, caplog: pytest.LogCaptureFixture) -> None:
    """CE after CE: the row is pending with one more attempt each time, due again after
    0.2 s, 0.4 s, then 0.7 s (the cap, not 0.8 s), counted from when the attempt failed;
    the log and the retries counter say so too."""
    initial, cap = 0.2, 0.7
    arrivals: list[datetime] = []  # when each attempt reached the receiver

    def respond(_: Received, __: int) -> Reply:
        arrivals.append(datetime.now(UTC))
        return Reply(code="CE")

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    seen: dict[int, tuple[datetime, datetime]] = {}  # attempts -> (next attempt, seen at)

    def watch() -> bool:
        (row,) = outbox_tx.list_messages(sqlite_store)
        if row.attempts and row.attempts not in seen:
            assert (row.state, row.last_error) == ("pending", "reply CE")
            seen[row.attempts] = (parse_stamp(row.next_attempt_at), datetime.now(UTC))
        return len(seen) >= 3 or row.attempts >= 3

    metrics = Metrics(destinations=["ris"])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, backoff_initial_s=initial,
                                                     backoff_max_s=cap)],
                          poll_interval_s=0.05, metrics=metrics)
    caplog.set_level(logging.WARNING, logger="bridge.outbound.sender")
    async with running(sender, receiver):
        await until(watch, timeout=20)
    warnings = [r.getMessage() for r in caplog.records if r.name == "bridge.outbound.sender"]
    assert warnings[:3] == [
        f"status message A-IP to ris not delivered (reply CE); retry {n} in {d} s"
        for n, d in ((1, "0.2"), (2, "0.4"), (3, "0.7"))]
    retries = metrics.registry.get_sample_value("mwl_bridge_outbox_retries_total",
                                                {"destination": "ris"})
    assert retries == sender.stats.retries >= 3
    assert sorted(seen) == [1, 2, 3], "an attempt went by unseen"
    for attempt, delay in ((1, initial), (2, 2 * initial), (3, cap)):
        due, seen_at = seen[attempt]
        # Recorded after the reply arrived and before the row was read.
        step = timedelta(seconds=delay)
        assert arrivals[attempt - 1] + step <= due <= seen_at + step, (attempt, delay)
        if attempt < len(arrivals):
            assert arrivals[attempt] >= due  # not sent again before it was due


async def test_a_failing_receiver_pauses_the_destination_not_only_the_message(
        sqlite_store: Store) -> None:
    """Three orders due at once, one connection, CE to everything: after a failure no
    message of the destination goes out before the backoff is over, whichever order it
    is for (B and C are due all along), so the receiver gets one attempt per step."""
    receiver = MllpReceiver(respond=lambda _, __: Reply(code="CE"))
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP"), ("B", "IP"), ("C", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1,
                                                     backoff_initial_s=0.2,
                                                     backoff_max_s=0.2)],
                          poll_interval_s=0.05)
    async with running(sender, receiver):
        got = await asyncio.to_thread(receiver.wait_for, 3, 20.0)
    assert got[0].control_id == "A-IP"
    gaps = [later.arrived - earlier.arrived for earlier, later in itertools.pairwise(got[:3])]
    assert min(gaps) >= 0.2, gaps


def test_wake_before_start_and_after_the_loop_closed_does_nothing(
        sqlite_store: Store, receiver: MllpReceiver) -> None:
    """An MPPS commit may call wake() before the sender started or after the daemon's
    loop is gone: it must neither raise nor lose the message."""
    sender = OutboxSender(sqlite_store, [destination(receiver.port)], poll_interval_s=0.05)
    queue(sqlite_store, "ris", [("A", "IP")])
    sender.wake()
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(sender.start())
        loop.run_until_complete(until(lambda: rows(sqlite_store)["A-IP"].state == "sent",
                                      timeout=20))
        loop.run_until_complete(sender.stop())
    finally:
        loop.close()
    queue(sqlite_store, "ris", [("B", "IP")])
    sender.wake()
    assert rows(sqlite_store)["B-IP"].state == "pending"
    assert [m.control_id for m in receiver.messages] == ["A-IP"]


async def test_a_plain_receiver_hanging_up_gets_no_tls_hint_and_a_new_connection(
        sqlite_store: Store) -> None:
    """A plain MLLP receiver that closes instead of answering: the reason says just that
    (the client-certificate hint is for TLS destinations only), and the next attempt,
    on the same worker, opens a new connection and is delivered."""
    answered: list[str] = []

    def respond(msg: Received, _: int) -> Reply:
        answered.append(msg.control_id)
        return Reply(code="" if len(answered) == 1 else "AA")  # "" closes at once

    receiver = MllpReceiver(respond=respond)
    receiver.start()
    queue(sqlite_store, "ris", [("A", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1,
                                                     backoff_initial_s=0.5, backoff_max_s=0.5)],
                          poll_interval_s=0.05)
    async with running(sender, receiver):
        await until(lambda: outbox_tx.list_messages(sqlite_store)[0].attempts >= 1, timeout=20)
        assert first_error(sqlite_store) == "the peer closed the connection before replying"
        await until(lambda: rows(sqlite_store)["A-IP"].state == "sent", timeout=20)
    assert answered == ["A-IP", "A-IP"] and receiver.connections == 2


async def test_an_idle_connection_is_replaced_by_a_new_one(sqlite_store: Store,
                                                           receiver: MllpReceiver) -> None:
    queue(sqlite_store, "ris", [("A", "IP")])
    sender = OutboxSender(sqlite_store, [destination(receiver.port, max_connections=1,
                                                     idle_close_s=0.1)],
                          poll_interval_s=0.05)
    async with running(sender):
        await until(lambda: rows(sqlite_store)["A-IP"].state == "sent", timeout=20)
        # Idle for longer than idle_close_s: the time itself is what is tested here.
        await asyncio.sleep(0.3)
        queue(sqlite_store, "ris", [("B", "IP")])
        sender.wake()
        await until(lambda: rows(sqlite_store)["B-IP"].state == "sent", timeout=20)
    assert [m.control_id for m in receiver.messages] == ["A-IP", "B-IP"]
    assert receiver.connections == 2  # the idle one was closed, not reused
