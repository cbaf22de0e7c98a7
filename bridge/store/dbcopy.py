"""A site's whole state from one store into another, empty one: ``mwl-bridge db copy``
(growing out of SQLite into PostgreSQL, issue 11).

Which tables and columns there are is read from the two databases' own catalogues
(``sqlite_master`` and ``PRAGMA``; PostgreSQL's ``information_schema`` and
``pg_constraint``), never from a list kept here: whatever the newest migration
created is copied. Both stores must be at the same schema version (the caller
migrates them) with the same tables and columns. The order follows the foreign
keys (a referenced table first). Every row keeps its id; on PostgreSQL every
serial column's sequence is then set past the highest id copied.

Two tables are not copied as they are, because they describe running processes,
not the site: ``role_lease`` (the maintenance leader's lease: the copy's first
instance takes the role) and the outbox's claims (``claimed_by``, ``lease_until``:
set to '' so that the copy's instances may send at once; a message that was on the
wire when the source stopped goes out again with its MSH-10, as after a crash).
``schema_version`` is the target's own.

The source is read in one snapshot (SQLite: one read transaction; PostgreSQL:
REPEATABLE READ, through a server-side cursor); the target is written in one
transaction (PostgreSQL: ``COPY``, batch by batch), which first locks the tables and
checks that every one is empty. So a copy that fails half-way leaves the target as
empty as it was, and an instance started on the target meanwhile waits for the
commit. The counts are compared table by table after the commit.

Blocking, with connections of its own: run it from a command, never on an event loop.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.store.base import StoreError
from bridge.store.sql import SqlStore
from bridge.store.sqltx import POSTGRESQL, parse_stamp, stamp

# Not copied: the target's migration wrote its own versions; a lease names a process
# of the source, which is not running on the target.
SKIPPED: dict[str, str] = {
    "schema_version": "the target's own migration history",
    "role_lease": "leases of the source's processes; the copy's first instance takes the role",
}
# Columns set to a fixed value on the way: the outbox's claims by the source's
# processes, so that the copy's senders need not wait for their leases to lapse.
RESET: dict[str, dict[str, object]] = {"outbox": {"claimed_by": "", "lease_until": ""},
                                       # the MPPS forwarding queue's claims, likewise
                                       "mpps_forward": {"claimed_by": "", "lease_until": ""}}
# An instance whose heartbeat is this recent (and which did not stop) may be running.
RUNNING_WINDOW_S = 60.0
_NAME = re.compile(r"[a-z_][a-z0-9_]*")

# (table, rows copied so far, rows in the table); called after every batch.
Progress = Callable[[str, int, int], None]


class CopyError(StoreError):
    """The copy was refused or failed; the target is as it was."""


@dataclass(frozen=True, slots=True)
class TableCount:
    table: str
    source: int
    target: int

    @property
    def ok(self) -> bool:
        return self.source == self.target


@dataclass
class CopyReport:
    tables: list[TableCount] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)  # "table.column" -> next value
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables)

    @property
    def rows(self) -> int:
        return sum(t.target for t in self.tables)


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: tuple[str, ...]
    types: tuple[str, ...]  # declared types, lower case (the target's)
    references: frozenset[str]  # tables its foreign keys point to


# --- catalogues ---

def _ident(name: str) -> str:
    """A table or column name from a catalogue, checked before it goes into SQL."""
    if not _NAME.fullmatch(name):
        raise CopyError(f"unexpected table or column name {name!r}")
    return name


def _tables(cur: Any, dialect: str) -> dict[str, _Table]:
    if dialect == POSTGRESQL:
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_type = 'BASE TABLE'")
        names = sorted(str(r[0]) for r in cur.fetchall())
        cur.execute("SELECT table_name, column_name, data_type FROM information_schema.columns"
                    " WHERE table_schema = current_schema() ORDER BY table_name, "
                    "ordinal_position")
        columns: dict[str, list[tuple[str, str]]] = {}
        for t, c, ty in cur.fetchall():
            columns.setdefault(str(t), []).append((str(c), str(ty).lower()))
        cur.execute("SELECT c.relname, p.relname FROM pg_constraint k "
                    "JOIN pg_class c ON c.oid = k.conrelid JOIN pg_class p ON p.oid = k.confrelid"
                    " WHERE k.contype = 'f' AND k.connamespace = "
                    "(SELECT oid FROM pg_namespace WHERE nspname = current_schema())")
        refs: dict[str, set[str]] = {}
        for t, p in cur.fetchall():
            refs.setdefault(str(t), set()).add(str(p))
    else:
        cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        names = sorted(str(r[0]) for r in cur.fetchall())
        columns, refs = {}, {}
        for t in names:
            cur.execute(f"PRAGMA table_info({_ident(t)})")
            columns[t] = [(str(r[1]), str(r[2]).lower()) for r in cur.fetchall()]
            cur.execute(f"PRAGMA foreign_key_list({_ident(t)})")
            refs[t] = {str(r[2]) for r in cur.fetchall()}
    return {t: _Table(_ident(t), tuple(_ident(c) for c, _ in columns.get(t, [])),
                      tuple(ty for _, ty in columns.get(t, [])),
                      frozenset(refs.get(t, set())) - {t})
            for t in names}


def _in_dependency_order(tables: dict[str, _Table]) -> list[_Table]:
    """Referenced tables before the tables that reference them (then by name)."""
    done: list[_Table] = []
    placed: set[str] = set()
    left = dict(sorted(tables.items()))
    while left:
        ready = [t for t in left.values() if t.references <= placed | {
            r for r in t.references if r not in tables}]
        if not ready:
            raise CopyError("the foreign keys between " + ", ".join(left) + " form a cycle")
        for t in ready:
            done.append(t)
            placed.add(t.name)
            del left[t.name]
    return done


def _compare(source: dict[str, _Table], target: dict[str, _Table]) -> None:
    src, dst = set(source) - set(SKIPPED), set(target) - set(SKIPPED)
    problems = []
    if src - dst:
        problems.append("only in the source: " + ", ".join(sorted(src - dst)))
    if dst - src:
        problems.append("only in the target: " + ", ".join(sorted(dst - src)))
    for name in sorted(src & dst):
        a, b = set(source[name].columns), set(target[name].columns)
        if a != b:
            problems.append(f"{name}: columns differ (source only: "
                            f"{', '.join(sorted(a - b)) or '-'}; target only: "
                            f"{', '.join(sorted(b - a)) or '-'})")
    if problems:
        raise CopyError("the two schemas differ: " + "; ".join(problems))


# --- the copy ---

@contextmanager
def _snapshot(store: SqlStore) -> Iterator[Any]:
    """A connection of its own with a read transaction open on it: one consistent view."""
    conn = store._connect(writer=False)
    try:
        if store.dialect.name == POSTGRESQL:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        else:
            conn.execute("BEGIN")  # deferred: the snapshot starts at the first read
        yield conn
    finally:
        try:
            conn.rollback()
        finally:
            conn.close()


def _count(cur: Any, table: str) -> int:
    cur.execute(f"SELECT COUNT(*) FROM {table}")
    return int(cur.fetchone()[0])


def _refuse_running(cur: Any, tables: dict[str, _Table], now: str) -> None:
    if "instance" not in tables:
        return
    cur.execute("SELECT id, host, last_seen FROM instance WHERE stopped_at = '' "
                "ORDER BY last_seen DESC")
    since = parse_stamp(now) - timedelta(seconds=RUNNING_WINDOW_S)
    running = []
    for r in cur.fetchall():
        try:
            seen = parse_stamp(str(r[2]))
        except ValueError:
            continue
        if seen >= since:
            running.append(f"{r[0]} on {r[1]} (last seen {str(r[2])[:19]})")
    if running:
        raise CopyError("an instance may still be running on the source: "
                        + ", ".join(running) + "; stop every instance first (what it "
                        "accepted after the copy began would be missing from the target), "
                        "or pass --allow-running")


def _source_now(cur: Any, dialect: str) -> str:
    if dialect != POSTGRESQL:
        return stamp()
    cur.execute("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', "
                "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    return str(cur.fetchone()[0])


def _converter(types: tuple[str, ...]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Values as the target's column types want them (SQLite's typing is loose: a BLOB
    column may hold text, a TEXT column bytes); the identity when nothing needs it."""
    fixes: list[tuple[int, Callable[[Any], Any]]] = []
    for i, ty in enumerate(types):
        if ty in ("bytea", "blob"):
            fixes.append((i, lambda v: v.encode("utf-8") if isinstance(v, str) else v))
        elif ty in ("text", "character varying"):
            fixes.append((i, lambda v: bytes(v).decode("utf-8", "replace")
                          if isinstance(v, (bytes, memoryview)) else v))
    if not fixes:
        return lambda row: row

    def convert(row: tuple[Any, ...]) -> tuple[Any, ...]:
        values = list(row)
        for i, fix in fixes:
            if values[i] is not None:
                values[i] = fix(values[i])
        return tuple(values)

    return convert


def copy_store(source: SqlStore, target: SqlStore, *, batch: int = 5000,
               progress: Progress | None = None, allow_running: bool = False) -> CopyReport:
    """Copy every row of ``source`` into ``target``: both migrated to the same schema,
    the target empty. Raises CopyError (the target unchanged) when it is not empty,
    when the schemas differ, or, unless ``allow_running``, when an instance seems to
    run on the source. Returns the per-table counts, compared after the commit."""
    if batch < 1:
        raise ValueError("batch must be 1 or more")
    t0 = time.perf_counter()
    versions = source.schema_version(), target.schema_version()
    if versions[0] != versions[1]:
        raise CopyError(f"the source's schema is version {versions[0]}, the target's "
                        f"{versions[1]}; migrate both to the same version first")
    report = CopyReport(skipped=dict(SKIPPED))
    with _snapshot(source) as src:
        scur = src.cursor()
        src_tables = _tables(scur, source.dialect.name)
        if not allow_running:
            _refuse_running(scur, src_tables, _source_now(scur, source.dialect.name))
        dst = target._connect(writer=True)
        try:
            tcur = dst.cursor()
            dst_tables = _tables(tcur, target.dialect.name)
            _compare(src_tables, dst_tables)
            order = [t for t in _in_dependency_order(dst_tables) if t.name not in SKIPPED]
            _lock_empty_target(tcur, target, order)
            totals = {t.name: _count(scur, t.name) for t in order}
            for table in order:
                _copy_table(src, source, tcur, target, table, totals[table.name], batch,
                            progress)
            report.sequences = _advance_sequences(tcur, target)
            dst.commit()
        except BaseException:
            dst.rollback()
            raise
        finally:
            dst.close()
        with target._reader() as conn:
            vcur = conn.cursor()
            report.tables = [TableCount(t.name, totals[t.name], _count(vcur, t.name))
                             for t in order]
    report.seconds = time.perf_counter() - t0
    return report


def _lock_empty_target(cur: Any, target: SqlStore, order: list[_Table]) -> None:
    if target.dialect.name == POSTGRESQL:
        # Writers (an instance started on the target meanwhile) wait for the commit.
        cur.execute("LOCK TABLE " + ", ".join(t.name for t in order) + " IN EXCLUSIVE MODE")
    else:
        cur.execute("BEGIN IMMEDIATE")
    filled = [(t.name, n) for t in order if (n := _count(cur, t.name))]
    if filled:
        raise CopyError("the target database is not empty (" + ", ".join(
            f"{name}: {n:,} row(s)" for name, n in filled) + "); copy only into a new, "
            "empty database (e.g. createdb), never over a site's data")


def _copy_table(src: Any, source: SqlStore, tcur: Any, target: SqlStore, table: _Table,
                total: int, batch: int, progress: Progress | None) -> None:
    cols = table.columns
    reset = RESET.get(table.name, {})
    select = ", ".join(f"{c}" if c not in reset else f"NULL AS {c}" for c in cols)
    order = " ORDER BY id" if "id" in cols else ""
    sql = f"SELECT {select} FROM {table.name}{order}"
    fixed = [(i, reset[c]) for i, c in enumerate(cols) if c in reset]
    convert = _converter(table.types)
    if source.dialect.name == POSTGRESQL:  # a server-side cursor: never all rows in memory
        scur = src.cursor(name=f"copy_{table.name}")
        scur.itersize = batch
    else:
        scur = src.cursor()
    scur.execute(sql)
    done = 0
    if progress is not None:
        progress(table.name, 0, total)
    while rows := scur.fetchmany(batch):
        out = []
        for row in rows:
            values = convert(tuple(row))
            if fixed:
                as_list = list(values)
                for i, v in fixed:
                    as_list[i] = v
                values = tuple(as_list)
            out.append(values)
        _insert(tcur, target, table, out)
        done += len(out)
        if progress is not None:
            progress(table.name, done, total)
    scur.close()


def _insert(cur: Any, target: SqlStore, table: _Table, rows: list[tuple[Any, ...]]) -> None:
    names = ", ".join(table.columns)
    if target.dialect.name == POSTGRESQL:
        try:
            with cur.copy(f"COPY {table.name} ({names}) FROM STDIN") as cp:
                for row in rows:
                    cp.write_row(row)
        except Exception as exc:
            raise CopyError(f"{table.name}: cannot write rows {_ids(table, rows)}: "
                            f"{exc}") from exc
        return
    marks = ", ".join([target.param] * len(table.columns))
    try:
        cur.executemany(f"INSERT INTO {table.name} ({names}) VALUES ({marks})", rows)
    except Exception as exc:
        raise CopyError(f"{table.name}: cannot write rows {_ids(table, rows)}: {exc}") from exc


def _ids(table: _Table, rows: list[tuple[Any, ...]]) -> str:
    if "id" not in table.columns or not rows:
        return f"(a batch of {len(rows)})"
    i = table.columns.index("id")
    return f"with id {rows[0][i]} to {rows[-1][i]}"


def _advance_sequences(cur: Any, target: SqlStore) -> dict[str, int]:
    """PostgreSQL: each serial column's sequence continues after the highest id copied
    (the ids were written explicitly, which never advances a sequence)."""
    if target.dialect.name != POSTGRESQL:
        return {}  # SQLite: an INTEGER PRIMARY KEY continues after the highest rowid
    cur.execute("SELECT table_name, column_name, pg_get_serial_sequence("
                "quote_ident(table_name), column_name) FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%' "
                "ORDER BY table_name, column_name")
    out: dict[str, int] = {}
    for table, column, sequence in cur.fetchall():
        if sequence is None:
            continue
        t, c = _ident(str(table)), _ident(str(column))
        cur.execute(f"SELECT setval(%s, COALESCE((SELECT MAX({c}) FROM {t}), 0) + 1, false)",
                    (str(sequence),))
        out[f"{t}.{c}"] = int(cur.fetchone()[0])
    return out
