"""Several instances on one database: the instances' heartbeat rows and role leases
(see sqltx.py for the threading rule).

``instance``: one row per daemon that ever ran on this database (id, host, pid,
version, started, last seen, the roles it held at its last heartbeat, stopped).
``role_lease``: one row per role that only one instance may hold at a time
(``MAINTENANCE``: idle rules, purges, message retention). The holder renews its
lease every heartbeat; another instance takes the role when the lease has
lapsed, so a dead leader's role moves within one lease plus one heartbeat.
Every time is a store timestamp from the database's clock (``sqltx.clock``), so
hosts with drifting clocks still agree on whose lease is live.

On PostgreSQL the lease row is locked while it is judged (``FOR UPDATE SKIP
LOCKED``: an instance that finds it locked leaves it for this heartbeat), and a
leader's maintenance job checks ``holds`` in its own transaction with a row lock
(``FOR SHARE``), so the role cannot pass to another instance while a job of the
old leader is still running. SQLite has one writer at a time, which does the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.store.base import Store, StoreTx
from bridge.store.sqltx import POSTGRESQL, clock, reading, sql_store, stamp

MAINTENANCE = "maintenance"


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    """What an instance says about itself."""

    id: str
    host: str
    pid: int
    version: str
    started_at: str


@dataclass(frozen=True, slots=True)
class InstanceRow:
    id: str
    host: str
    pid: int
    version: str
    started_at: str
    last_seen: str
    roles: tuple[str, ...]
    stopped_at: str


@dataclass(frozen=True, slots=True)
class RoleLease:
    role: str
    holder: str
    lease_until: str
    since: str


# --- inside a write transaction ---

def heartbeat(tx: StoreTx, me: InstanceInfo, roles: Sequence[str]) -> str:
    """Insert or refresh ``me``'s row; returns the database's time of it."""
    cur, p = tx.cur, tx.param
    (now,) = clock(tx)
    text = ",".join(roles)
    # The same id again (a configured store.instance_id) is a restart: its new pid etc.
    cur.execute(f"UPDATE instance SET host = {p}, pid = {p}, version = {p}, started_at = {p}, "
                f"last_seen = {p}, roles = {p}, stopped_at = '' WHERE id = {p}",
                (me.host, me.pid, me.version, me.started_at, now, text, me.id))
    if not cur.rowcount:
        cur.execute("INSERT INTO instance (id, host, pid, version, started_at, last_seen, "
                    f"roles, stopped_at) VALUES ({', '.join([p] * 7)}, '')",
                    (me.id, me.host, me.pid, me.version, me.started_at, now, text))
    return now


def stopped(tx: StoreTx, instance: str) -> None:
    """``instance`` stopped cleanly: no roles, and its leases end now."""
    cur, p = tx.cur, tx.param
    (now,) = clock(tx)
    cur.execute(f"UPDATE instance SET last_seen = {p}, roles = '', stopped_at = {p} "
                f"WHERE id = {p}", (now, now, instance))
    cur.execute(f"DELETE FROM role_lease WHERE holder = {p}", (instance,))


def acquire(tx: StoreTx, role: str, holder: str, lease_s: float) -> RoleLease | None:
    """Renew ``holder``'s lease on ``role``, or take the role if nobody holds a live
    lease on it. Returns the lease as it is now (None: it is being judged by another
    instance at this very moment; try at the next heartbeat)."""
    cur, p = tx.cur, tx.param
    now, until = clock(tx, lease_s)
    cur.execute(f"INSERT INTO role_lease (role, holder, lease_until, since) VALUES "
                f"({p}, {p}, {p}, {p}) ON CONFLICT (role) DO NOTHING",
                (role, holder, until, now))
    if cur.rowcount:
        return RoleLease(role, holder, until, now)
    lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == POSTGRESQL else ""
    cur.execute(f"SELECT holder, lease_until, since FROM role_lease WHERE role = {p}{lock}",
                (role,))
    row = cur.fetchone()
    if row is None:
        return None
    current = RoleLease(role, str(row[0]), str(row[1]), str(row[2]))
    if current.holder == holder:
        cur.execute(f"UPDATE role_lease SET lease_until = {p} WHERE role = {p}",
                    (until, role))
        return RoleLease(role, holder, until, current.since)
    if current.lease_until < now:  # lapsed: the previous holder is gone
        cur.execute(f"UPDATE role_lease SET holder = {p}, lease_until = {p}, since = {p} "
                    f"WHERE role = {p}", (holder, until, now, role))
        return RoleLease(role, holder, until, now)
    return current


def holds(tx: StoreTx, role: str, holder: str) -> bool:
    """``holder``'s lease on ``role`` is live, and stays its own until this
    transaction ends (PostgreSQL: a share lock on the row, which a takeover waits for)."""
    cur, p = tx.cur, tx.param
    (now,) = clock(tx)
    lock = " FOR SHARE" if tx.dialect == POSTGRESQL else ""
    cur.execute(f"SELECT holder, lease_until FROM role_lease WHERE role = {p}{lock}", (role,))
    row = cur.fetchone()
    return row is not None and row[0] == holder and str(row[1]) >= now


def release(tx: StoreTx, role: str, holder: str) -> None:
    cur, p = tx.cur, tx.param
    cur.execute(f"DELETE FROM role_lease WHERE role = {p} AND holder = {p}", (role, holder))


# --- reads (any thread; blocking) ---

def _instance(r: Sequence[Any]) -> InstanceRow:
    return InstanceRow(id=str(r[0]), host=str(r[1]), pid=int(r[2]), version=str(r[3]),
                       started_at=str(r[4]), last_seen=str(r[5]),
                       roles=tuple(x for x in str(r[6]).split(",") if x),
                       stopped_at=str(r[7]))


def database_now(store: Store) -> str:
    """The database's clock as a store timestamp (this process's clock on SQLite)."""
    s = sql_store(store)
    if s.dialect.name != POSTGRESQL:
        return stamp()
    with reading(store) as (cur, _):
        cur.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                    "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
        return str(cur.fetchone()[0])


def list_instances(store: Store, limit: int = 100) -> list[InstanceRow]:
    """Instances, the most recently seen first."""
    with reading(store) as (cur, _):
        cur.execute("SELECT id, host, pid, version, started_at, last_seen, roles, stopped_at "
                    f"FROM instance ORDER BY last_seen DESC LIMIT {int(limit)}")
        return [_instance(r) for r in cur.fetchall()]


def list_leases(store: Store) -> list[RoleLease]:
    with reading(store) as (cur, _):
        cur.execute("SELECT role, holder, lease_until, since FROM role_lease ORDER BY role")
        return [RoleLease(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in cur.fetchall()]
