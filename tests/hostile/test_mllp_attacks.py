"""Network attacks on the MLLP listener of the real daemon (issue 10, the HL7 side).

One daemon (a subprocess, as an operator runs it) takes each attack in turn.
After every attack, and during it where the attack holds on, a valid order from
an allowed sender still gets AA within VALID_ACK_S, the daemon is still running,
and its resident memory (VmRSS from /proc/PID/status) stays under RSS_BOUND_MB.

The bound: the daemon starts at about 70-90 MB. The listener holds at most
mllp.max_buffered_bytes (32 MiB) of frames, plus 64 KiB per connection that is
not charged (128 connections: 8 MiB) and asyncio's read buffer per connection
(up to 128 KiB each: 16 MiB), plus one large message being decided. Before the
fix, 100 unfinished 4 MB frames took it from 67 to 476 MB.

Only 127.0.0.1/8 is used; every loop and wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.hl7 import MllpClient, ack_code_of, acked_control_id_of
from tests.e2e.conftest import FIXTURES, RunningDaemon, start_daemon, stop_daemon, write_config

RSS_BOUND_MB = 200.0
VALID_ACK_S = 1.0
WAIT_S = 30.0
FRAME_TIMEOUT_S = 3  # mllp.frame_timeout_s of this daemon (default 60): slow attacks end soon
ALLOWED = "127.0.0.0/29"  # mllp.allow.hosts: 127.0.0.1 .. 127.0.0.7 may connect
REFUSED_HOST = "127.0.0.66"
NW = (FIXTURES / "lifecycle-nw.hl7").read_bytes()
_counter = iter(range(1, 1_000_000))


def valid_order() -> tuple[str, bytes]:
    """A new, valid order: its own MSH-10, order numbers, accession and step IDs."""
    n = next(_counter)
    tag = f"{n:04d}".encode()
    first, sep, rest = NW.partition(b"\r")
    fields = first.split(b"|")
    fields[9] = b"VALID-" + tag
    data = b"|".join(fields) + sep + rest
    for old in (b"PLC500501", b"FIL500501", b"ACC20261130501", b"RP20261130501",
                b"SPS20261130501"):
        data = data.replace(old, old[:-4] + tag)
    return f"VALID-{n:04d}", data


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    tmp = tmp_path_factory.mktemp("hostile")
    config = write_config(tmp)
    text = config.read_text(encoding="utf-8")
    base = "mllp:\n  host: 127.0.0.1\n  port: 0\n"
    assert base in text
    config.write_text(text.replace(base, base + f"  frame_timeout_s: {FRAME_TIMEOUT_S}\n"
                                   f"  allow:\n    hosts: [{ALLOWED}]\n"), encoding="utf-8")
    d = start_daemon(config, tmp / "data")
    yield d
    code = stop_daemon(d)
    assert code == 0, "daemon did not stop cleanly:\n" + "\n".join(d.log[-30:])


class RssWatch:
    """The daemon's peak RSS while a block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_mb(pid)

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[RssWatch]:
        async def sample() -> None:
            while True:
                self.peak = max(self.peak, rss_mb(self.pid))
                await asyncio.sleep(0.02)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            self.peak = max(self.peak, rss_mb(self.pid))


async def assert_valid_order_acked(d: RunningDaemon) -> float:
    """Send a valid order from 127.0.0.1; it must be AA within VALID_ACK_S. The latency."""
    control_id, data = valid_order()
    began = time.monotonic()
    client = await MllpClient.connect("127.0.0.1", d.mllp_port, timeout=VALID_ACK_S)
    try:
        ack = await client.send(data, timeout=VALID_ACK_S)
    finally:
        await client.close()
    latency = time.monotonic() - began
    assert (ack_code_of(ack), acked_control_id_of(ack)) == ("AA", control_id), ack
    assert latency < VALID_ACK_S
    return latency


def assert_healthy(d: RunningDaemon, watch: RssWatch) -> None:
    print(f"daemon peak RSS {watch.peak:.0f} MB (bound {RSS_BOUND_MB:.0f} MB)")  # for -s
    assert d.alive(), "\n".join(d.log[-30:])
    assert watch.peak < RSS_BOUND_MB, f"daemon RSS peaked at {watch.peak:.0f} MB"


async def open_from(d: RunningDaemon, source: str
                    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    try:
        return await asyncio.wait_for(asyncio.open_connection(
            "127.0.0.1", d.mllp_port, local_addr=(source, 0)), WAIT_S)
    except (OSError, TimeoutError):
        return None


async def push(writer: asyncio.StreamWriter, data: bytes, chunk: int = 65536) -> int:
    """Write ``data`` in chunks until done or the daemon hangs up; bytes taken."""
    sent = 0
    try:
        for i in range(0, len(data), chunk):
            writer.write(data[i:i + chunk])
            await asyncio.wait_for(writer.drain(), WAIT_S)
            sent += len(data[i:i + chunk])
    except (OSError, TimeoutError):
        pass
    return sent


async def hung_up(reader: asyncio.StreamReader, within: float = WAIT_S) -> bool:
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


def close_all(conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None]) -> None:
    for conn in conns:
        if conn is not None:
            conn[1].close()


def sources(count: int) -> list[str]:
    """``count`` connections spread over 127.0.0.2..5 (allowed; under 32 per address)."""
    return [f"127.0.0.{2 + i % 4}" for i in range(count)]


# --- the attacks -----------------------------------------------------------------------


async def test_unfinished_4mb_frames_on_100_connections(daemon: RunningDaemon) -> None:
    # The finding: each of 100 connections holds a frame that never ends.
    watch = RssWatch(daemon.proc.pid)
    async with watch.watching():
        conns = [await open_from(daemon, s) for s in sources(100)]
        frame_start = b"\x0b" + valid_order()[1] + b"x" * (4 * 1024 * 1024 - 2048)
        try:
            taken = await asyncio.gather(*(push(c[1], frame_start) for c in conns if c))
            assert sum(taken) > 32 * 1024 * 1024  # the attack really delivered its bytes
            await assert_valid_order_acked(daemon)  # while the attackers hold on
        finally:
            close_all(conns)
        await assert_valid_order_acked(daemon)
    assert_healthy(daemon, watch)
    assert any("mllp.max_buffered_bytes" in line for line in daemon.log)


async def test_slow_frames_are_cut_off_at_the_frame_deadline(daemon: RunningDaemon) -> None:
    watch = RssWatch(daemon.proc.pid)
    async with watch.watching():
        conns = [await open_from(daemon, s) for s in sources(40)]
        live = [c for c in conns if c is not None]
        for _, w in live:
            w.write(b"\x0bMSH|^~\\&|")

        async def trickle(writer: asyncio.StreamWriter) -> None:
            for _ in range(int(WAIT_S / 0.5)):  # a byte every 0.5 s: never idle
                await asyncio.sleep(0.5)
                try:
                    writer.write(b"x")
                except OSError:
                    return

        drips = [asyncio.create_task(trickle(w)) for _, w in live]
        began = time.monotonic()
        try:
            await assert_valid_order_acked(daemon)
            closed = await asyncio.gather(*(hung_up(r) for r, _ in live))
            assert all(closed)
            assert time.monotonic() - began < FRAME_TIMEOUT_S + 5
        finally:
            for task in drips:
                task.cancel()
            close_all(conns)
        await assert_valid_order_acked(daemon)
    assert_healthy(daemon, watch)
    assert any("is not complete (mllp.frame_timeout_s)" in line for line in daemon.log)


async def test_connection_flood_from_one_address(daemon: RunningDaemon) -> None:
    before = sum("refused" in line for line in daemon.log)
    watch = RssWatch(daemon.proc.pid)
    async with watch.watching():
        conns = [await open_from(daemon, "127.0.0.6") for _ in range(300)]
        try:
            live = [c for c in conns if c is not None]
            refused = await asyncio.gather(*(hung_up(r, within=2) for r, _ in live))
            assert sum(refused) >= 300 - 32  # over mllp.max_connections_per_host
            assert sum(not r for r in refused) == 32  # the first 32 are served
            await assert_valid_order_acked(daemon)  # another address is not affected
        finally:
            close_all(conns)
    assert_healthy(daemon, watch)
    refusal_lines = sum("refused" in line for line in daemon.log) - before
    assert 1 <= refusal_lines <= 3  # not one line per refused connection


async def test_refused_address_can_not_make_the_daemon_hold_anything(daemon: RunningDaemon) -> None:
    watch = RssWatch(daemon.proc.pid)
    start = rss_mb(daemon.proc.pid)
    async with watch.watching():
        conns = [await open_from(daemon, REFUSED_HOST) for _ in range(50)]
        try:
            live = [c for c in conns if c is not None]
            await asyncio.gather(*(push(w, b"\x0b" + b"y" * (4 * 1024 * 1024))
                                   for _, w in live))
            assert all(await asyncio.gather(*(hung_up(r, within=5) for r, _ in live)))
            await assert_valid_order_acked(daemon)
        finally:
            close_all(conns)
    assert_healthy(daemon, watch)
    assert watch.peak < start + 16  # nothing of theirs was buffered
    assert any(f"MLLP connection from {REFUSED_HOST}:" in line
               and "refused: address not in mllp.allow.hosts" in line for line in daemon.log)


async def test_a_huge_message_does_not_stall_other_senders(daemon: RunningDaemon) -> None:
    # The finding: a 3.77 MB ORM with 290,000 PID-3 repeats took 37 s to ACK, and a
    # 1.4 MB one delayed another sender's order by 14.7 s.
    ids = "~".join(f"{i:06d}^^^X" for i in range(290_000))
    huge = valid_order()[1].replace(b"^^^HOSP^MR|", b"^^^HOSP^MR~" + ids.encode() + b"|", 1)
    notes = b"".join(b"\rZPI|%d|" % i + b"n" * 2000 for i in range(1, 1900))
    big_control_id, big_valid = valid_order()
    big_valid = big_valid.replace(b"\rZDS|", notes + b"\rZDS|")
    assert len(huge) > 3_000_000 and len(big_valid) > 3_500_000
    watch = RssWatch(daemon.proc.pid)
    latencies: list[float] = []
    async with watch.watching():
        async def big(data: bytes) -> bytes:
            client = await MllpClient.connect("127.0.0.1", daemon.mllp_port)
            try:
                return await client.send(data, timeout=WAIT_S)
            finally:
                await client.close()

        huge_task = asyncio.create_task(big(huge))
        big_task = asyncio.create_task(big(big_valid))
        while not (huge_task.done() and big_task.done()) or len(latencies) < 5:
            assert len(latencies) < 400, "the large messages were not answered"
            latencies.append(await assert_valid_order_acked(daemon))
            await asyncio.sleep(0.05)
        huge_ack, big_ack = huge_task.result(), big_task.result()
    assert ack_code_of(huge_ack) == "AE" and b"290001 repetitions" in huge_ack
    assert (ack_code_of(big_ack), acked_control_id_of(big_ack)) == ("AA", big_control_id)
    assert max(latencies) < VALID_ACK_S
    assert_healthy(daemon, watch)


async def test_oversize_frames_are_answered_from_their_head(daemon: RunningDaemon) -> None:
    watch = RssWatch(daemon.proc.pid)
    async with watch.watching():
        _, data = valid_order()
        oversize = data + b"ZPI|" + b"o" * (6 * 1024 * 1024) + b"\r"

        async def one() -> bytes:
            client = await MllpClient.connect("127.0.0.1", daemon.mllp_port)
            try:
                return await client.send(oversize, timeout=WAIT_S)
            finally:
                await client.close()

        # Six at once: up to max_frame_bytes of each is held until it is known to be
        # too big, and six of them fit in mllp.max_buffered_bytes (more would be closed).
        acks = await asyncio.gather(*(one() for _ in range(6)))
        await assert_valid_order_acked(daemon)
    # ERR code 207: in ERR-1 (ELD) for this v2.3.1 order, in ERR-3 from v2.5 on.
    assert all(ack_code_of(a) == "AR" and re.search(rb"\rERR\|[^\r]*\b207[&^]", a)
               for a in acks), acks[0]
    assert_healthy(daemon, watch)


async def test_hostile_control_ids_do_not_forge_or_flood_log_lines(daemon: RunningDaemon) -> None:
    before = len(daemon.log)

    async def send(control_id: bytes) -> bytes:
        _, data = valid_order()
        first, sep, rest = data.partition(b"\r")
        fields = first.split(b"|")
        fields[9] = control_id
        client = await MllpClient.connect("127.0.0.1", daemon.mllp_port)
        try:
            return await client.send(b"|".join(fields) + sep + rest, timeout=WAIT_S)
        finally:
            await client.close()

    long_ack = await send(b"L" * 100_000)
    forged_ack = await send(b"F\\X0A\\2026-11-30 12:00:00 INFO FORGED ready: MLLP on 0.0.0.0:1")
    empty_ack = await send(b"")
    assert ack_code_of(long_ack) == "AR" and ack_code_of(empty_ack) == "AR"
    assert ack_code_of(forged_ack) == "AA"  # odd, but a valid control ID: stored, logged safely
    deadline = time.monotonic() + 5
    while len(daemon.log) < before + 3 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    new = daemon.log[before:]
    assert new and all(len(line) < 1000 for line in new)
    assert not any(line.lstrip().startswith("2026-11-30 12:00:00 INFO FORGED") for line in new)
    assert any("F\\x0a2026-11-30" in line for line in new)
    await assert_valid_order_acked(daemon)
