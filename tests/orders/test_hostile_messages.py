"""Hostile or broken messages over a real MLLP connection into the real intake (issue 10).

Each answer names the real problem (the limit and its setting, the field), the
listener keeps serving, nothing accepted is lost, and nothing a peer sent
reaches the log raw. SQLite only: none of this depends on the backend.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from bridge.hl7 import MllpServer, parse_message
from bridge.hl7.mllp import encode_frame
from bridge.hl7.settings import MllpSettings
from bridge.orders import ingest as ingest_module
from bridge.orders.ingest import Ingest
from bridge.orders.intake import Intake
from bridge.orders.settings import OrdersSettings
from bridge.store import CommitQueue, SqliteStore
from tests.orders.conftest import Ack, Bridge, fixture, read_ack, read_acks, shipped_mappings

NW = fixture("lifecycle-nw.hl7")
WAIT_S = 30.0


def with_control_id(data: bytes, control_id: bytes) -> bytes:
    first, sep, rest = data.partition(b"\r")
    fields = first.split(b"|")
    fields[9] = control_id
    return b"|".join(fields) + sep + rest


def numbered(n: int, data: bytes = NW) -> bytes:
    """A new order: its own MSH-10, placer/filler numbers, accession, RP and SPS IDs."""
    tag = f"{n:04d}".encode()
    out = with_control_id(data, b"HX-" + tag)
    for old in (b"PLC500501", b"FIL500501", b"ACC20261130501", b"RP20261130501",
                b"SPS20261130501"):
        out = out.replace(old, old[:-4] + tag)
    return out


Make = Callable[..., Any]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Make]:
    """The order side on SQLite behind a real listener; keywords: ``mllp`` and ``orders``
    settings overrides."""
    started: list[Bridge] = []
    stores: list[SqliteStore] = []

    async def start(*, mllp: dict[str, Any] | None = None,
                    orders: dict[str, Any] | None = None) -> Bridge:
        store = SqliteStore(tmp_path / f"bridge{len(stores)}.sqlite3")
        store.migrate()
        stores.append(store)
        commits = CommitQueue(store)
        commits.start()
        # ERR-2/3/8 for every version, as these tests read them (see conftest.make_bridge)
        settings = MllpSettings.model_validate({"ack_err_both": ["*"], **(mllp or {})})
        mapping_set = shipped_mappings()
        ingest = Ingest(lambda: mapping_set, commits, settings,
                        orders=OrdersSettings.model_validate(orders or {}))
        await ingest.open()
        server = await MllpServer.start(ingest, host="127.0.0.1", port=0,
                                        max_frame_bytes=settings.max_frame_bytes,
                                        idle_timeout_s=60)
        b = Bridge(store, commits, ingest, server, retention=None)  # type: ignore[arg-type]
        started.append(b)
        return b

    yield start
    for b in started:
        for c in b.clients:
            await c.close()
        await b.server.close(grace_s=10)
        await b.ingest.close()
        b.commits.stop()
    for store in stores:
        store.close()


async def send(b: Bridge, data: bytes) -> Ack:
    client = await b.client()
    return read_ack(await client.send(data, timeout=WAIT_S))


def stored_accessions(b: Bridge) -> set[str]:
    return {str(r.item.AccessionNumber) for r in b.steps()}


# --- MSH-10 ------------------------------------------------------------------------------


async def test_empty_msh10_is_rejected_ar_101_and_kept_as_a_dead_letter(make: Make) -> None:
    b = await make()
    ack = await send(b, with_control_id(NW, b""))
    assert (ack.code, ack.error_code, ack.location) == ("AR", 101, "MSH^1^10")
    assert "MSH-10 (message control ID) is empty" in ack.text
    assert b.steps() == []
    (logged,) = b.messages()
    assert logged.ack_code == "AR"
    assert (await send(b, numbered(1))).code == "AA"  # the next message is served


async def test_blank_msh10_is_empty_too(make: Make) -> None:
    b = await make()
    ack = await send(b, with_control_id(NW, b"   "))
    assert (ack.code, ack.error_code, ack.location) == ("AR", 101, "MSH^1^10")


async def test_overlong_msh10_is_rejected_and_not_echoed_whole_in_err8(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    b = await make()
    control_id = b"C" * 100_000
    with caplog.at_level(logging.INFO, logger="bridge"):
        ack = await send(b, with_control_id(NW, control_id))
    assert (ack.code, ack.error_code, ack.location) == ("AR", 102, "MSH^1^10")
    assert "is 100000 characters; at most 199 are accepted" in ack.text
    assert len(ack.err.raw(8)) < 400  # type: ignore[union-attr]
    assert ack.control_id == control_id.decode()  # MSA-2 still names the message
    assert b.steps() == []
    # The log names the message, cut: no 100 KB log line.
    assert max(len(r.getMessage()) for r in caplog.records) < 1000


# --- limits on the structure -------------------------------------------------------------


def with_pid3(repetitions: int) -> bytes:
    ids = "~".join(f"{i:06d}^^^X" for i in range(repetitions - 1))
    return NW.replace(b"PID|1||LC10001^^^HOSP^MR|", f"PID|1||LC10001^^^HOSP^MR~{ids}|".encode())


async def test_too_many_repetitions_is_ae_102_at_the_field_naming_the_limit(make: Make) -> None:
    b = await make()
    ack = await send(b, with_pid3(101))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^3")
    assert ack.text == ("PID-3 has 101 repetitions; at most 100 are accepted "
                        "(mllp.max_repetitions)")
    assert b.steps() == []
    assert (await send(b, with_control_id(with_pid3(100), b"OK-100"))).code == "AA"


async def test_the_290000_repetition_message_is_answered_without_mapping_it(
        make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    # The finding: 290,000 PID-3 repeats took 37 s and stored a 34.8 MB item.
    mapped: list[int] = []
    real = Intake.prepare

    def prepare(self: Intake, message: Any) -> Any:
        mapped.append(1)
        return real(self, message)

    monkeypatch.setattr(Intake, "prepare", prepare)
    b = await make()
    data = with_pid3(290_000)
    assert len(data) > 3_000_000
    ack = await send(b, data)
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^3")
    assert "290000 repetitions" in ack.text
    assert mapped == [] and b.steps() == []


async def test_too_many_components_and_sub_components(make: Make) -> None:
    b = await make()
    name = "^".join(["GARCIA"] * 101)
    ack = await send(b, NW.replace(b"GARCIA^MARIA^ELENA^^MRS", name.encode()))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^5^1")
    assert "PID-5 (repetition 1) has 101 components; at most 100 are accepted " \
           "(mllp.max_components)" == ack.text
    family = "&".join(["GARCIA"] * 101)
    ack = await send(b, with_control_id(NW.replace(b"GARCIA^MARIA", family.encode() + b"^MARIA"),
                                        b"SUB-1"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^5^1^1")
    assert "PID-5.1 (repetition 1) has 101 sub-components" in ack.text


async def test_too_many_fields_and_segments(make: Make) -> None:
    b = await make(mllp={"max_segments": 50})
    ack = await send(b, NW.replace(b"\rPV1|", b"\rZXX" + b"|" * 300 + b"\rPV1|"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "ZXX^1^257")
    assert ack.text == "segment ZXX has 300 fields; at most 256 are accepted (mllp.max_fields)"
    notes = b"".join(b"\rNTE|%d||note" % i for i in range(1, 60))
    ack = await send(b, with_control_id(NW.replace(b"\rZDS|", notes + b"\rZDS|"), b"SEG-1"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 100, "NTE^46")
    assert ack.text == "the message has more than 50 segments (mllp.max_segments)"
    assert b.steps() == []


async def test_item_larger_than_max_item_bytes_is_ae_104_naming_its_largest_attribute(
        make: Make) -> None:
    b = await make(mllp={"max_repetitions": 1000}, orders={"max_item_bytes": 16384})
    ack = await send(b, with_pid3(400))
    assert (ack.code, ack.error_code) == ("AE", 104)
    assert "more than the 16384 accepted (orders.max_item_bytes)" in ack.text
    assert "its largest attribute is OtherPatientIDsSequence" in ack.text
    assert b.steps() == []
    assert (await send(b, with_control_id(with_pid3(20), b"SMALL-1"))).code == "AA"


async def test_too_many_items_from_one_message_is_ae_100_at_the_first_group_too_many(
        make: Make) -> None:
    # Every item is written in the message's one transaction on the only writer,
    # while other senders' commits wait: a message may make only so many.
    b = await make(orders={"max_items_per_message": 3})
    lines = NW.split(b"\r")
    head = [line for line in lines if line[:3] in (b"MSH", b"PID", b"PV1")]
    orc, obr, zds = (next(line for line in lines if line.startswith(s))
                     for s in (b"ORC", b"OBR", b"ZDS"))
    groups = []
    for i in range(1, 5):
        tag = b"%04d" % i
        groups += [x.replace(b"500501", b"50" + tag).replace(b"20261130501", b"2026113" + tag)
                   for x in (orc, obr.replace(b"OBR|1|", b"OBR|%d|" % i), zds)]
    ack = await send(b, b"\r".join(head + groups) + b"\r")
    assert (ack.code, ack.error_code, ack.location) == ("AE", 100, "ORC^4")
    assert ack.text == ("the message has 4 ORC groups, each making a worklist item; at most 3 "
                        "are accepted from one message (orders.max_items_per_message)")
    assert b.steps() == []
    three = b"\r".join(head + groups[:9]) + b"\r"
    assert (await send(b, with_control_id(three, b"THREE"))).code == "AA"
    assert len(b.steps()) == 3


# --- what the ACK quotes -----------------------------------------------------------------


async def test_a_huge_bad_value_is_quoted_cut_in_err8(make: Make) -> None:
    b = await make()
    value = b"2" * 1_000_000
    ack = await send(b, NW.replace(b"^^20261130100000^^R", b"^^" + value + b"^^R"))
    assert (ack.code, ack.error_code) == ("AE", 102)
    assert "(1000000 characters)" in ack.text
    assert len(ack.raw) < 2000


async def test_bad_scheduled_start_names_the_start_not_the_time_zone(make: Make) -> None:
    b = await make()
    ack = await send(b, NW.replace(b"^^20261130100000^^R", b"^^2026-12-01^^R"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "ORC^1^7^1^4")
    assert ack.text.startswith("ScheduledProcedureStepStartDate (ORC-7.4) is not an HL7 "
                               "date/time")
    assert "TimezoneOffset" not in ack.text
    assert "'2026-12-01'" in ack.text


async def test_broken_encoding_characters_are_named(make: Make) -> None:
    b = await make()
    ack = await send(b, NW.replace(b"MSH|^~\\&|", b"MSH|^^^^|", 1))
    assert (ack.code, ack.error_code, ack.location) == ("AR", 102, "MSH^1^2")
    assert "MSH-2 (encoding characters) '^^^^' must be four different characters" in ack.text
    assert "trigger event" not in ack.text
    assert ack.raw.startswith(b"MSH|^~\\&|")  # the ACK itself has usable delimiters
    assert ack.control_id == "LC-0001"


# --- escapes -----------------------------------------------------------------------------


async def test_escaped_line_break_in_a_text_value_is_stored(make: Make) -> None:
    b = await make()
    data = NW.replace(b"\rZDS|", b"\rNTE|1||first line\\X0D\\second line\rZDS|")
    assert (await send(b, data)).code == "AA"
    (row,) = b.steps()
    assert str(row.item.RequestedProcedureComments) == "first line\rsecond line"


@pytest.mark.parametrize("escape", [b"\\X0B\\", b"\\X1C\\", b"\\X0D\\"])
async def test_escaped_control_character_in_a_name_is_refused_by_name(
        make: Make, escape: bytes) -> None:
    b = await make()
    ack = await send(b, NW.replace(b"GARCIA^MARIA", b"GAR" + escape + b"CIA^MARIA"))
    assert (ack.code, ack.error_code, ack.location) == ("AE", 102, "PID^1^5")
    assert ack.text.startswith("PatientName (PID-5) contains a line break or control character")
    assert b.steps() == []


async def test_escaped_framing_byte_in_msh9_does_not_cost_the_ack(make: Make) -> None:
    # MSH-9.2 is echoed in the ACK's MSH-9: a decoded FS there used to make the
    # ACK unframeable, and the sender got a closed connection instead of an answer.
    b = await make()
    client = await b.client()
    raw = await client.send(NW.replace(b"|ORM^O01|", b"|ORM^O0\\X1C\\1|", 1), timeout=WAIT_S)
    ack = read_ack(raw)
    assert (ack.code, ack.error_code) == ("AR", 201)
    assert b"\x1c" not in raw and b"\\X1C\\" in raw.split(b"\r", 1)[0]
    assert read_ack(await client.send(numbered(2), timeout=WAIT_S)).code == "AA"


# --- logs --------------------------------------------------------------------------------


async def test_peer_strings_are_escaped_and_cut_in_the_log(
        make: Make, caplog: pytest.LogCaptureFixture) -> None:
    b = await make()
    forged = b"X\\X0A\\2026-01-01 INFO forged line" + b"Z" * 150
    with caplog.at_level(logging.INFO, logger="bridge"):
        ack = await send(b, with_control_id(NW.replace(b"|ORM^O01|", b"|ORM^Q\\X0A\\9|", 1),
                                            forged))
        assert ack.code == "AR"
    lines = [r.getMessage() for r in caplog.records]
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    assert any("X\\x0a2026-01-01 INFO forged line" in line for line in lines)
    assert all(len(line) < 1000 for line in lines)
    assert not any("Z" * 100 in line for line in lines)  # cut, not whole


# --- one message must not stall the others -------------------------------------------------


async def test_a_large_frame_is_decided_off_the_event_loop(
        make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """While a large message is being mapped, another connection's order is answered.

    The large message's mapping blocks until the small order's ACK has arrived: on
    the event loop that would deadlock (the test fails after WAIT_S), in a worker
    thread it is what happens.
    """
    small_acked = threading.Event()
    threads: dict[str, str] = {}
    real = Intake.prepare

    def prepare(self: Intake, message: Any) -> Any:
        threads[message.control_id] = threading.current_thread().name
        if message.control_id == "BIG-1":
            assert small_acked.wait(WAIT_S), "the small order was not answered meanwhile"
        return real(self, message)

    monkeypatch.setattr(Intake, "prepare", prepare)
    b = await make()
    notes = b"".join(b"\rZPI|%d|" % i + b"n" * 500 for i in range(1, 200))  # read by no one
    big = with_control_id(NW.replace(b"\rZDS|", notes + b"\rZDS|"), b"BIG-1")
    assert len(big) > ingest_module.INLINE_BYTES
    big_client, small_client = await b.client(), await b.client()
    big_task = asyncio.create_task(big_client.send(big, timeout=WAIT_S))
    await asyncio.sleep(0.05)
    small = read_ack(await small_client.send(numbered(3), timeout=WAIT_S))
    small_acked.set()
    assert small.code == "AA"
    big_ack = read_ack(await big_task)
    assert big_ack.code == "AA" and big_ack.control_id == "BIG-1"
    assert threads["BIG-1"].startswith("hl7-large")
    assert threads["HX-0003"] == threading.main_thread().name  # small: no thread hop
    assert {"ACC2026113" + "0003", "ACC20261130501"} <= stored_accessions(b)


async def test_acks_stay_in_frame_order_on_one_connection(make: Make) -> None:
    b = await make()
    notes = b"".join(b"\rZPI|%d|" % i + b"n" * 500 for i in range(1, 200))  # read by no one
    big = with_control_id(NW.replace(b"\rZDS|", notes + b"\rZDS|"), b"BIG-2")
    reader, writer = await asyncio.open_connection("127.0.0.1", b.server.port)
    try:
        # Pipelined: the large one first (worker thread), the small one right behind it.
        writer.write(encode_frame(big) + encode_frame(numbered(4)))
        acks = await read_acks(reader, 2, WAIT_S)
    finally:
        writer.close()
    assert [(a.code, a.control_id) for a in acks] == [("AA", "BIG-2"), ("AA", "HX-0004")]


async def test_the_daemon_parse_limits_default_to_the_documented_values() -> None:
    defaults = MllpSettings()
    assert (defaults.max_segments, defaults.max_fields, defaults.max_repetitions,
            defaults.max_components) == (2000, 256, 100, 100)
    assert OrdersSettings().max_item_bytes == 262144
    assert OrdersSettings().max_items_per_message == 50
    # parse_message without limits (mapping tools, golden cases) reads anything.
    assert len(parse_message(with_pid3(500).decode()).segments) == 6
