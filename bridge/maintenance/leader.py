"""The maintenance leader, and this instance's heartbeat row.

With several instances on one database, idle rules, purges and message
retention run on one of them only: the holder of the ``maintenance`` role lease
(bridge/store/ha_tx.py). Every ``store.heartbeat_s`` this service, in one
transaction, refreshes this instance's row in the ``instance`` table (with the
roles it holds) and renews the lease, or takes it when the lease has lapsed.

Bounds: a leader that dies keeps its role until its lease runs out
(``store.leader_lease_s``, from its last renewal); a survivor takes it at its
next heartbeat after that, so within ``leader_lease_s + heartbeat_s`` (20 s by
default). A leader that stops cleanly gives the role up at once. A leader that
cannot renew (its store is unreachable) stops acting as leader when its lease
would have run out by its own clock, before anyone else can take over.

The maintenance jobs also check ``holds`` inside their own transaction, so even
a leader that was paused past its lease (and replaced) does nothing twice.

Threads: a task on the daemon's loop; store work through ``submit``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bridge.store import Submit, ha_tx
from bridge.store.base import StoreTx

log = logging.getLogger(__name__)


def instance_info(instance_id: str, version: str) -> ha_tx.InstanceInfo:
    """This process's identity: ``instance_id``, else HOST-PID-RANDOM."""
    host = socket.gethostname()
    pid = os.getpid()
    return ha_tx.InstanceInfo(
        id=instance_id or f"{host}-{pid}-{uuid.uuid4().hex[:6]}", host=host, pid=pid,
        version=version,
        started_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


class Leadership:
    """Elects the maintenance leader and writes the heartbeat; a service."""

    def __init__(self, submit: Submit, me: ha_tx.InstanceInfo, *, heartbeat_s: float = 5.0,
                 lease_s: float = 15.0, roles: Callable[[], Sequence[str]] = tuple,
                 on_elected: Callable[[], None] | None = None) -> None:
        self._submit = submit
        self.me = me
        self._heartbeat = heartbeat_s
        self._lease = lease_s
        self._roles = roles
        self._on_elected = on_elected or (lambda: None)
        self._leader_until = 0.0  # monotonic: our lease, by our own clock
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    def on_elected(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time this instance becomes the leader."""
        self._on_elected = callback

    @property
    def instance(self) -> str:
        return self.me.id

    def is_leader(self) -> bool:
        """This instance holds the maintenance role (as of its last renewal)."""
        return not self._stopped and time.monotonic() < self._leader_until

    def holds(self, tx: StoreTx) -> bool:
        """Inside a maintenance job's transaction: the role is still ours."""
        return ha_tx.holds(tx, ha_tx.MAINTENANCE, self.me.id)

    def roles(self) -> list[str]:
        return [*self._roles(), *([ha_tx.MAINTENANCE] if self.is_leader() else [])]

    async def start(self) -> None:
        await self.beat()  # the first heartbeat (and election) before anything runs
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await self._submit(lambda tx: ha_tx.stopped(tx, self.me.id))
        except Exception as exc:  # noqa: BLE001 - the lease lapses by itself
            log.warning("could not record this instance's stop (%s); its maintenance role "
                        "moves after the lease", type(exc).__name__)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._heartbeat)
            try:
                await self.beat()
            except Exception as exc:  # noqa: BLE001 - try again at the next heartbeat
                log.error("instance heartbeat failed: %s", type(exc).__name__)

    async def beat(self) -> None:
        """One heartbeat: renew or take the role, refresh this instance's row."""
        asked = time.monotonic()
        was = self.is_leader()

        def job(tx: StoreTx) -> ha_tx.RoleLease | None:
            lease = ha_tx.acquire(tx, ha_tx.MAINTENANCE, self.me.id, self._lease)
            leader = lease is not None and lease.holder == self.me.id
            ha_tx.heartbeat(tx, self.me, [*self._roles(),
                                          *([ha_tx.MAINTENANCE] if leader else [])])
            return lease

        lease = await self._submit(job)
        if self._stopped:
            return
        if lease is not None and lease.holder == self.me.id:
            self._leader_until = asked + self._lease
            if not was:
                log.info("this instance (%s) is now the maintenance leader: idle rules, "
                         "purges and message retention run here", self.me.id)
                self._on_elected()
        elif lease is not None:
            if was:
                log.warning("the maintenance role moved to instance %s", lease.holder)
            self._leader_until = 0.0
