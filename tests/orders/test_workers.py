"""Frames decided in worker processes (bridge/orders/workers.py), behind a real MLLP
listener, on a real SQLite store, with real worker processes.

A Python hook in the test mapping (mapping.python_hooks) says which process mapped
each item and with which version of the hook file; a ``hold-<control id>`` file
makes it wait in the worker, so a test knows which worker holds which message
without any timing: it waits for the ``busy-<control id>-<pid>`` file the hook
writes, then acts (kills that worker, sends on another connection, reloads).
"""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bridge.hl7 import MllpClient, MllpServer
from bridge.hl7.mllp import encode_frame
from bridge.hl7.settings import MllpSettings
from bridge.mapping import MappingReloader
from bridge.mapping.settings import MappingSettings
from bridge.orders.ingest import Ingest
from bridge.orders.settings import OrdersSettings
from bridge.orders.workers import INLINE_BYTES, DecidePool, Use, pool_size
from bridge.store import CommitQueue, SqliteStore, Store
from bridge.store.orders_tx import LoggedMessage

from .conftest import Ack, OrderSide, ack_of, read_acks

WAIT_S = 60.0

HOOK = '''
import os
import pathlib
import time

HERE = pathlib.Path(__file__).parent
VERSION = "{version}"


def gate(ctx):
    control = ctx.message.control_id
    hold = HERE / f"hold-{{control}}"
    if hold.exists():
        (HERE / f"busy-{{control}}-{{os.getpid()}}").write_text("")
        deadline = time.monotonic() + 60
        while hold.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
    return f"{{VERSION}} {{os.getpid()}}"
'''

MAPPING = """
name: worker-test
match:
  message_type: ORM^O01
group_by: ORC
hooks:
  gate: hooks/gate.py:gate
attributes:
  PatientID: {from: PID-3.1, required: true}
  PatientName: PID-5
  AccessionNumber: OBR-18
  RequestedProcedureID: OBR-19 | OBR-18
  StudyComments: {hook: gate}
  ScheduledProcedureStepSequence:
    - ScheduledProcedureStepID: OBR-20 | OBR-18
      Modality: OBR-24
"""


def order(n: int, padding: int = 0) -> bytes:
    """A new order numbered ``n``; ``padding`` bytes of Z segments no rule reads."""
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MWLBRIDGE|RAD|20261128083015||ORM^O01|W{n}|P|2.3.1",
        f"PID|1||PAT{n}^^^HOSP^MR||DOE^JOHN",
        f"ORC|NW|PLC{n}|FIL{n}",
        f"OBR|1|PLC{n}|FIL{n}|CT1^Head CT^L||||||||||||||ACC{n}|RP{n}|SPS{n}||||CT",
    ]
    segments += [f"ZPI|{i}|" + "n" * 500 for i in range(1, padding // 500 + 1)]
    return ("\r".join(segments) + "\r").encode()


@dataclass
class Rig(OrderSide):
    folder: Path
    store: Store
    reloader: MappingReloader
    pool: DecidePool
    ingest: Ingest
    server: MllpServer
    clients: list[MllpClient] = field(default_factory=list)

    async def send(self, payload: bytes, client: MllpClient | None = None) -> Ack:
        """``payload`` on ``client``, else on a new connection of its own."""
        return await ack_of(client or await self.client(), payload, WAIT_S)

    def hold(self, n: int) -> None:
        (self.folder / f"hold-W{n}").write_text("")

    def release(self, n: int) -> None:
        (self.folder / f"hold-W{n}").unlink()

    async def busy(self, n: int, count: int = 1) -> list[int]:
        """The pids of the workers that held message ``n`` so far, once ``count`` did."""
        deadline = time.monotonic() + WAIT_S
        while True:
            pids = sorted(int(p.name.rsplit("-", 1)[1])
                          for p in self.folder.glob(f"busy-W{n}-*"))
            if len(pids) >= count:
                return pids
            assert time.monotonic() < deadline, f"no worker took message W{n}"
            await asyncio.sleep(0.01)

    def set_hook(self, version: str) -> None:
        (self.folder / "gate.py").write_text(textwrap.dedent(HOOK.format(version=version)))

    def comments(self) -> dict[str, str]:
        """StudyComments (the hook's "version pid") of every stored item, by accession."""
        return {str(r.item.AccessionNumber): str(r.item.StudyComments)
                for r in self.store.list_steps(limit=1000)}

    def messages(self) -> list[LoggedMessage]:
        return self.read(lambda o: o.list_messages(limit=1000))


RigFactory = Callable[..., Any]


@pytest.fixture
async def make_rig(tmp_path: Path) -> AsyncIterator[RigFactory]:
    rigs: list[tuple[Rig, CommitQueue]] = []

    async def make(workers: int = 2, *, use: Use = "all") -> Rig:
        folder = tmp_path / "mappings"
        folder.mkdir()
        (folder / "orders.yaml").write_text(MAPPING)
        # The hook and its hold/busy files live in a sub-folder: the mapping folder's
        # own listing is part of what the set was built from.
        (folder / "hooks").mkdir()
        store = SqliteStore(tmp_path / "bridge.sqlite3")
        store.migrate()
        commits = CommitQueue(store)
        commits.start()
        rig_folder = folder / "hooks"
        (rig_folder / "gate.py").write_text(textwrap.dedent(HOOK.format(version="V1")))
        reloader = MappingReloader(MappingSettings(paths=[folder], python_hooks=True))
        mllp = MllpSettings(ack_err_both=["*"])
        orders = OrdersSettings()
        pool = DecidePool(workers, reloader, mllp, orders, use=use)
        ingest = Ingest(reloader.current, commits, mllp, orders=orders, pool=pool)
        await ingest.open()
        server = await MllpServer.start(ingest, host="127.0.0.1", port=0,
                                        max_frame_bytes=1 << 20, idle_timeout_s=60)
        rig = Rig(rig_folder, store, reloader, pool, ingest, server)
        rigs.append((rig, commits))
        return rig

    yield make
    for rig, commits in rigs:
        for hold in rig.folder.glob("hold-*"):
            hold.unlink()
        for c in rig.clients:
            await c.close()
        await rig.server.close()
        await rig.ingest.close()
        commits.stop()
        rig.store.close()


def versions(comments: dict[str, str]) -> dict[str, str]:
    return {k: v.split()[0] for k, v in comments.items()}


def pids(comments: dict[str, str]) -> set[int]:
    return {int(v.split()[1]) for v in comments.values()}


async def test_orders_are_mapped_in_worker_processes_and_acked_after_their_commit(
        make_rig: RigFactory) -> None:
    rig = await make_rig()
    client = await rig.client()
    for n in (1, 2, 3):
        ack = await rig.send(order(n), client)
        assert (ack.code, ack.control_id) == ("AA", f"W{n}")
        # The ACK came, so the item is committed: it is in the store now.
        assert f"ACC{n}" in rig.comments()
    comments = rig.comments()
    assert versions(comments) == {"ACC1": "V1", "ACC2": "V1", "ACC3": "V1"}
    assert os.getpid() not in pids(comments)
    assert pids(comments) <= set(rig.pool.pids)
    assert rig.pool.decided == 3
    assert [m.ack_code for m in rig.messages()] == ["AA"] * 3


async def test_a_resend_is_answered_from_the_cache_without_a_worker(
        make_rig: RigFactory) -> None:
    rig = await make_rig()
    client = await rig.client()
    first = await rig.send(order(1), client)
    assert first.code == "AA" and rig.pool.decided == 1
    again = await rig.send(order(1), client)
    assert again.raw == first.raw
    assert rig.pool.decided == 1  # no worker saw the resend
    assert rig.ingest.cached_resends == 1
    assert len(rig.messages()) == 1


async def test_one_connections_messages_are_applied_and_acked_in_arrival_order(
        make_rig: RigFactory) -> None:
    """A large message held in its worker, a small one right behind it on the same
    connection: the small one is applied and answered after the large one."""
    rig = await make_rig()
    big = order(1, padding=INLINE_BYTES + 1000)
    assert len(big) > INLINE_BYTES
    rig.hold(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.server.port)
    try:
        writer.write(encode_frame(big) + encode_frame(order(2)))
        await writer.drain()
        await rig.busy(1)
        rig.release(1)
        acks = await read_acks(reader, 2, WAIT_S)
    finally:
        writer.close()
    assert [(a.code, a.control_id) for a in acks] == [("AA", "W1"), ("AA", "W2")]
    logged = sorted(rig.messages(), key=lambda m: m.id)
    assert [m.control_id for m in logged] == ["W1", "W2"]


async def test_a_large_message_does_not_delay_other_connections_acks(
        make_rig: RigFactory) -> None:
    rig = await make_rig()
    rig.hold(1)
    big_task = asyncio.create_task(rig.send(order(1, padding=INLINE_BYTES + 1000)))
    await rig.busy(1)  # the large message is being mapped, in a worker
    small = await rig.send(order(2))
    assert small.code == "AA"
    assert not big_task.done()
    assert set(rig.comments()) == {"ACC2"}
    rig.release(1)
    big = await big_task
    assert (big.code, big.control_id) == ("AA", "W1")
    assert set(rig.comments()) == {"ACC1", "ACC2"}


async def test_a_mapping_reload_reaches_every_worker(make_rig: RigFactory) -> None:
    rig = await make_rig(workers=2)

    async def two_at_once(a: int, b: int) -> list[int]:
        """Messages a and b held in their workers at the same time: two workers."""
        rig.hold(a)
        rig.hold(b)
        tasks = [asyncio.create_task(rig.send(order(n))) for n in (a, b)]
        held = (await rig.busy(a)) + (await rig.busy(b))
        rig.release(a)
        rig.release(b)
        assert [(await t).code for t in tasks] == ["AA", "AA"]
        return held

    before = await two_at_once(1, 2)
    assert len(set(before)) == 2
    rig.set_hook("VERSION-2")
    assert rig.reloader.reload()
    after = await two_at_once(3, 4)
    assert set(after) == set(before)  # the same two workers, not new ones
    assert versions(rig.comments()) == {"ACC1": "V1", "ACC2": "V1",
                                        "ACC3": "VERSION-2", "ACC4": "VERSION-2"}


async def test_a_worker_that_cannot_build_the_daemons_mappings_leaves_the_message_to_the_daemon(
        make_rig: RigFactory) -> None:
    """The hook file changed again after the reload: a worker would load another set
    than the daemon's, so the daemon maps the message with its own."""
    rig = await make_rig(workers=1)
    assert (await rig.send(order(1))).code == "AA"
    rig.set_hook("VERSION-2")
    assert rig.reloader.reload()
    rig.set_hook("VERSION-THREE")  # not reloaded (yet)
    assert (await rig.send(order(2))).code == "AA"
    comments = rig.comments()
    assert comments["ACC2"] == f"VERSION-2 {os.getpid()}"
    assert rig.pool.stale == 1


async def test_a_killed_worker_is_replaced_and_its_message_answered(
        make_rig: RigFactory) -> None:
    rig = await make_rig(workers=1)
    rig.hold(1)
    task = asyncio.create_task(rig.send(order(1)))
    [victim] = await rig.busy(1)
    os.kill(victim, signal.SIGKILL)
    rig.release(1)
    ack = await task
    assert (ack.code, ack.control_id) == ("AA", "W1")
    comments = rig.comments()
    assert list(comments) == ["ACC1"]
    assert victim not in pids(comments)
    assert rig.pool.replaced == 1 and victim not in rig.pool.pids
    assert (await rig.send(order(2))).code == "AA"  # and the pool goes on


async def test_a_message_whose_workers_die_twice_is_answered_ar_and_kept(
        make_rig: RigFactory) -> None:
    rig = await make_rig(workers=1)
    rig.hold(1)
    task = asyncio.create_task(rig.send(order(1)))
    [first] = await rig.busy(1)
    os.kill(first, signal.SIGKILL)
    second = next(p for p in await rig.busy(1, count=2) if p != first)
    os.kill(second, signal.SIGKILL)
    ack = await task
    assert (ack.code, ack.control_id, ack.error_code) == ("AR", "W1", 207)
    assert "worker process deciding this message stopped" in ack.text
    assert "please resend" in ack.text
    [kept] = rig.messages()
    assert kept.ack_code == "AR" and "stopped" in kept.error
    assert rig.comments() == {}
    rig.release(1)
    assert (await rig.send(order(1))).code == "AA"  # the resend is decided, by a new worker


async def test_auto_decides_a_lone_sender_in_the_daemon_and_starts_no_worker(
        make_rig: RigFactory) -> None:
    rig = await make_rig(use="busy")
    client = await rig.client()
    for n in (1, 2):
        assert (await rig.send(order(n), client)).code == "AA"
    assert rig.pool.pids == [] and rig.pool.decided == 0
    assert pids(rig.comments()) == {os.getpid()}
    # A large frame goes to a worker even alone; the first one starts the worker,
    # and is decided in the daemon (a thread) while it starts.
    assert (await rig.send(order(3, padding=INLINE_BYTES + 1000), client)).code == "AA"
    assert rig.pool.decided == 0 and int(rig.comments()["ACC3"].split()[1]) == os.getpid()
    deadline = time.monotonic() + WAIT_S
    while not rig.pool.pids:
        assert time.monotonic() < deadline, "no worker started"
        await asyncio.sleep(0.01)
    assert (await rig.send(order(4, padding=INLINE_BYTES + 1000), client)).code == "AA"
    assert rig.pool.decided == 1
    assert int(rig.comments()["ACC4"].split()[1]) in rig.pool.pids


@pytest.mark.parametrize("use", ["busy", "large"])
async def test_auto_decides_small_frames_in_the_daemon_while_its_only_worker_is_busy(
        make_rig: RigFactory, use: Use) -> None:
    """``busy`` (more cores) maps in the daemon while every worker is busy; ``large``
    (two cores) keeps small frames in the daemon, in flight beside another or not.
    Either way, with the one worker holding a large frame, two small frames on two
    connections are applied by the daemon before the large one is done."""
    rig = await make_rig(workers=1, use=use)
    big = INLINE_BYTES + 1000
    assert (await rig.send(order(1, padding=big))).code == "AA"  # starts the worker
    deadline = time.monotonic() + WAIT_S
    while not rig.pool.pids:
        assert time.monotonic() < deadline, "no worker started"
        await asyncio.sleep(0.01)
    [worker] = rig.pool.pids
    rig.hold(2)
    held = asyncio.create_task(rig.send(order(2, padding=big)))
    assert await rig.busy(2) == [worker]
    clients = [await rig.client() for _ in range(2)]
    acks = await asyncio.gather(rig.send(order(3), clients[0]), rig.send(order(4), clients[1]))
    assert [a.code for a in acks] == ["AA", "AA"]
    comments = rig.comments()
    assert {k: int(comments[k].split()[1]) for k in ("ACC3", "ACC4")} == {
        "ACC3": os.getpid(), "ACC4": os.getpid()}
    assert "ACC2" not in comments  # still held in the worker
    rig.release(2)
    assert (await held).code == "AA"
    assert int(rig.comments()["ACC2"].split()[1]) == worker
    assert rig.pool.decided == 1


def test_workers_setting() -> None:
    assert OrdersSettings().workers == "auto"
    assert OrdersSettings.model_validate({"workers": 3}).workers == 3
    with pytest.raises(ValueError, match="workers"):
        OrdersSettings.model_validate({"workers": -1})
    with pytest.raises(ValueError, match="workers"):
        OrdersSettings.model_validate({"workers": "many"})
    assert pool_size(0) == (0, "all")
    assert pool_size(4) == (4, "all")
    assert pool_size("auto", 1) == (0, "large")  # no pool
    assert pool_size("auto", 2) == (1, "large")
    assert pool_size("auto", 8) == (7, "busy")
    assert pool_size("auto")[0] == len(os.sched_getaffinity(0)) - 1


def descendants(pid: int) -> set[int]:
    out: set[int] = set()
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = {int(k) for k in children.read_text().split()}
        except OSError:
            continue
        for kid in kids:
            out |= {kid, *descendants(kid)}
    return out


async def test_the_daemon_decides_in_its_workers_and_stops_them_with_itself(
        tmp_path: Path) -> None:
    from tests.e2e.conftest import start_daemon, stop_daemon, write_config

    d = start_daemon(write_config(tmp_path, "orders:\n  workers: 2\n"), tmp_path / "data")
    try:
        clients = [await MllpClient.connect("127.0.0.1", d.mllp_port) for _ in range(3)]
        acks = await asyncio.gather(*(ack_of(c, order(n), WAIT_S)
                                      for n, c in enumerate(clients)))
        assert [a.code for a in acks] == ["AA"] * 3
        for c in clients:
            await c.close()
        workers = descendants(d.proc.pid)  # the forkserver and its decide workers
        assert len(workers) >= 2
    finally:
        code = stop_daemon(d)
    assert code == 0, "\n".join(d.log[-30:])
    # The forkserver sees its daemon gone a moment later; nothing is left behind.
    deadline = time.monotonic() + WAIT_S
    while [pid for pid in workers if alive(pid)]:
        assert time.monotonic() < deadline, [(pid, alive(pid)) for pid in workers]
        await asyncio.sleep(0.05)


def alive(pid: int) -> str:
    """The process's state letter, '' when it is gone or a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""
    return "" if state in ("Z", "X") else state


def exits_at_once(*args: object) -> None:
    """A worker that dies before it is ready (failure injection: a broken install)."""
    os._exit(3)


async def test_workers_that_cannot_start_leave_every_frame_to_the_daemon(
        make_rig: RigFactory, caplog: pytest.LogCaptureFixture) -> None:
    rig = await make_rig(workers=1)
    rig.pool._target = exits_at_once
    for n in (1, 2, 3, 4):
        ack = await rig.send(order(n))
        assert (ack.code, ack.control_id) == ("AA", f"W{n}")
    assert pids(rig.comments()) == {os.getpid()}
    assert rig.pool.failed_starts == 3 and rig.pool.pids == []
    assert "no more are started" in caplog.text
    assert rig.pool.replaced == 0 and rig.pool.decided == 0
