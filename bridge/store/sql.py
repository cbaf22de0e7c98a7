"""The SQL both backends share: schema upkeep, writes, and query translation.

A backend supplies connections and its dialect's few differences (parameter
style, wildcard operator); everything else lives here once.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from abc import abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydicom import Dataset

from bridge.store import migrations
from bridge.store.base import (
    Cursor,
    InboundMessage,
    StepFilter,
    StepRow,
    Store,
    StoreError,
    StoreTx,
    UpsertOutcome,
)
from bridge.store.items import (
    IndexValues,
    StoredItem,
    dumps_item,
    index_values,
    loads_item,
    name_key,
)
from bridge.store.query import (
    AnyOf,
    Column,
    Exact,
    ItemPath,
    Match,
    NamePath,
    NoneOf,
    Range,
    Target,
    Wildcard,
    WorklistQuery,
)

_STEP_COLUMNS = (
    "station_aet", "modality", "sps_start_date", "sps_start_time", "sps_start", "patient_id",
    "issuer_of_patient_id", "patient_name_norm", "accession_number", "requested_procedure_id",
    "study_instance_uid", "sps_id", "sps_status", "placer_order_number", "filler_order_number",
    "names_norm",
)
_FETCH_BATCH = 200
# Attempts at a batch that keeps losing races with other instances' writers; the
# last one hands the losing job its error (an ingest then answers AR 207).
CONFLICT_ATTEMPTS = 5
_STATION_DAY_COLUMNS = frozenset({Column.SPS_START_DATE, Column.SPS_START_TIME})

T = TypeVar("T")

log = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SqlStore(Store):
    """Store over a DB-API 2 driver. Subclasses provide connections and dialect."""

    dialect: migrations.Dialect
    param: str  # "?" or "%s"

    def __init__(self) -> None:
        self._write_lock = threading.Lock()
        self._writer: Any = None
        self._readers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self.conflict_retries = 0  # batches run again after losing a race (write())

    # --- connections (backend-specific) ---

    @abstractmethod
    def _connect(self, *, writer: bool) -> Any: ...

    @abstractmethod
    def _wildcard_sql(self, column: str, pattern: str) -> tuple[str, list[str]]:
        """SQL and parameters for DICOM wildcard matching on ``column``."""

    def _begin(self, cur: Cursor) -> None:
        """Open the batch's transaction, so releasing a savepoint never commits."""

    def _writer_conn(self) -> Any:
        if self._writer is None:
            self._writer = self._connect(writer=True)
        return self._writer

    @contextmanager
    def _reader(self) -> Iterator[Any]:
        # A small pool instead of one connection per thread: pynetdicom starts
        # a thread per association, and per-thread connections would pile up.
        try:
            conn = self._readers.get_nowait()
        except queue.Empty:
            conn = self._connect(writer=False)
        try:
            yield conn
        except BaseException:
            conn.close()
            raise
        else:
            self._end_read(conn)
            self._readers.put(conn)

    def _end_read(self, conn: Any) -> None:
        conn.rollback()

    # --- schema ---

    def schema_version(self) -> int:
        with self._write_lock:
            return self._read_version(self._writer_conn())

    def _read_version(self, conn: Any) -> int:
        cur = conn.cursor()
        cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        cur.execute("SELECT MAX(version) FROM schema_version")
        row = cur.fetchone()
        conn.commit()
        return int(row[0] or 0)

    @contextmanager
    def _migration_lock(self, conn: Any) -> Iterator[None]:
        """Held while the schema is read and migrated: with several instances on one
        database one migrates and the others wait, then find nothing left to do."""
        yield

    def migrate(self) -> int:
        with self._write_lock:
            conn = self._writer_conn()
            with self._migration_lock(conn):
                current = self._read_version(conn)
                latest = migrations.latest_version()
                if current > latest:
                    raise StoreError(f"the database schema is version {current}, newer than "
                                     f"this program knows ({latest}); upgrade mwl-bridge")
                for version in range(current + 1, latest + 1):
                    cur = conn.cursor()
                    try:
                        for stmt in migrations.statements(version, self.dialect):
                            cur.execute(stmt)
                        cur.execute(f"INSERT INTO schema_version (version) VALUES "
                                    f"({self.param})", (version,))
                        conn.commit()
                    except Exception:
                        conn.rollback()
                        raise
                return latest

    # --- writes ---

    def _is_conflict(self, exc: BaseException) -> bool:
        """True for an error that only says another writer (another instance on the
        same database) got there first: a unique key it just committed, a deadlock,
        a serialization failure. Running the batch again then sees its rows."""
        return False

    def write(self, jobs: Sequence[Callable[[StoreTx], T]]) -> list[T | Exception]:
        with self._write_lock:
            for attempt in range(1, CONFLICT_ATTEMPTS + 1):
                last = attempt == CONFLICT_ATTEMPTS
                conn = self._writer_conn()
                tx = _SqlTx(conn.cursor(), self.param, self.dialect.name)
                results: list[T | Exception] = []
                try:
                    self._begin(tx.cur)
                    for i, job in enumerate(jobs):
                        tx.cur.execute(f"SAVEPOINT job{i}")
                        try:
                            results.append(job(tx))
                        except Exception as exc:  # handed back to the job's caller
                            if not last and self._is_conflict(exc):
                                raise _Conflict() from exc
                            tx.cur.execute(f"ROLLBACK TO SAVEPOINT job{i}")
                            results.append(exc)
                        tx.cur.execute(f"RELEASE SAVEPOINT job{i}")
                    conn.commit()
                except Exception as exc:
                    cause = exc.__cause__ if isinstance(exc, _Conflict) else exc
                    if not last and cause is not None and self._is_conflict(cause):
                        # The whole batch again, from a fresh transaction: rolling back only
                        # the job would keep this batch's other locks, which the other
                        # instance may be waiting for (a deadlock would just repeat).
                        self.conflict_retries += 1
                        log.info("store write lost a race with another writer (%s); running "
                                 "the batch of %d job(s) again", type(cause).__name__,
                                 len(jobs))
                        try:
                            conn.rollback()
                        except Exception:  # noqa: BLE001 - a new connection next attempt
                            self._discard_writer()
                        time.sleep(random.uniform(0.0, 0.005 * attempt))
                        continue
                    self._discard_writer()
                    raise StoreError(f"commit failed: {cause or exc}") from exc
                return results
            raise AssertionError("unreachable: the last attempt returns or raises")

    def _discard_writer(self) -> None:
        try:
            self._writer.rollback()
            self._writer.close()
        except Exception:  # noqa: BLE001 - the connection is being dropped anyway
            pass
        self._writer = None

    # --- reads ---

    def query(self, query: WorklistQuery) -> Iterator[Dataset]:
        for stored in self.query_stored(query):
            yield stored.dataset

    def query_stored(self, query: WorklistQuery) -> Iterator[StoredItem]:
        where, params = self._where(query.matches)
        sql = "SELECT item FROM procedure_step"
        if where:
            sql += " WHERE " + where
        sql += " ORDER BY sps_start, id"
        if query.limit is not None:
            sql += f" LIMIT {int(query.limit)}"
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute(sql, params)
            while True:
                rows = cur.fetchmany(_FETCH_BATCH)
                if not rows:
                    break
                for (text,) in rows:
                    yield StoredItem(text)

    def _where(self, matches: Sequence[Match]) -> tuple[str, list[str]]:
        clauses: list[str] = []
        params: list[str] = []
        # Station matches go through procedure_step_station, which holds every
        # title of a step (VM 1-n) with the day copied in: the day's matches
        # are repeated inside so the subquery is one range of its index.
        day = [m for m in matches if isinstance(m.column, Column)
               and m.column in _STATION_DAY_COLUMNS]
        for m in matches:
            if m.column is Column.STATION_AET and not isinstance(m, NoneOf):
                sub = [self._clause(m, "aet")]
                sub += [self._clause(d, self._target_sql(d.column)) for d in day]
                sql = " AND ".join(c for c, _ in sub if c)
                clauses.append("id IN (SELECT step_id FROM procedure_step_station"
                               + (f" WHERE {sql})" if sql else ")"))
                params.extend(v for _, vals in sub for v in vals)
                continue
            sql, vals = self._clause(m, self._target_sql(m.column))
            if sql and isinstance(m.column, NamePath):
                sql = f"(names_norm IS NULL OR ({sql}))"
            if sql:
                clauses.append(sql)
                params.extend(vals)
        return " AND ".join(clauses), params

    def _target_sql(self, target: Target) -> str:
        """A column name, or the dialect's JSON expression for an item path; both
        come from code (enum values, integer tags), never from user text."""
        if isinstance(target, ItemPath):
            return self._item_text_sql([f"{tag:08X}" for tag in target.tags])
        if isinstance(target, NamePath):
            return self._name_sql(name_key(target.tags))
        return target.value

    @abstractmethod
    def _name_sql(self, key: str) -> str:
        """SQL for the normalised name stored under ``key`` in ``names_norm``."""

    @abstractmethod
    def _item_text_sql(self, tags: list[str]) -> str:
        """SQL for the text of the first value at ``tags`` in the stored item JSON."""

    def _clause(self, m: Match, col: str) -> tuple[str, list[str]]:
        """SQL for one match on ``col`` (from _target_sql, never user text)."""
        p = self.param
        if isinstance(m, Exact):
            return f"{col} = {p}", [m.value]
        if isinstance(m, Wildcard):
            return self._wildcard_sql(col, m.pattern)
        if isinstance(m, Range):
            parts: list[str] = []
            vals: list[str] = []
            if m.low is not None:
                parts.append(f"{col} >= {p}")
                vals.append(m.low)
            if m.high is not None:
                parts.append(f"{col} <= {p}")
                vals.append(m.high)
            if not parts:
                return "", []
            # An item without a value never falls inside a range.
            parts.append(f"{col} <> ''")
            return " AND ".join(parts), vals
        if not m.values:
            return ("1 = 0" if isinstance(m, AnyOf) else "1 = 1"), []
        marks = ", ".join(p for _ in m.values)
        op = "IN" if isinstance(m, AnyOf) else "NOT IN"
        return f"{col} {op} ({marks})", list(m.values)

    def list_steps(self, limit: int = 100) -> list[StepRow]:
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute("SELECT id, item, sps_status, created_at, updated_at FROM procedure_step "
                        f"ORDER BY sps_start, id LIMIT {int(limit)}")
            return [StepRow(id=r[0], item=loads_item(r[1]), sps_status=r[2],
                            created_at=r[3], updated_at=r[4]) for r in cur.fetchall()]

    def _filter_sql(self, where: StepFilter) -> tuple[str, list[str]]:
        p = self.param
        clauses: list[str] = []
        params: list[str] = []
        for column, value in (("modality", where.modality), ("sps_start_date", where.date),
                              ("sps_status", where.status), ("patient_id", where.patient_id),
                              ("accession_number", where.accession)):
            if value:
                clauses.append(f"{column} = {p}")
                params.append(value)
        days: list[str] = []  # the date range, as one range of the day indexes
        for op, value in ((">=", where.date_from), ("<=", where.date_to)):
            if value:
                days.append(f"sps_start_date {op} {p}")
                params.append(value)
        if days:
            clauses.append(" AND ".join([*days, "sps_start_date <> ''"]))
        if where.station:  # every station of a step, not only the first (VM 1-n)
            # The station table holds the day too: station + range is one index range.
            clauses.append("id IN (SELECT step_id FROM procedure_step_station WHERE "
                           + " AND ".join([f"aet = {p}", *days]) + ")")
            params.append(where.station)
            params.extend(v for v in (where.date_from, where.date_to) if v)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def iter_steps(self, where: StepFilter, *, limit: int, offset: int = 0
                   ) -> Iterator[StepRow]:
        sql, params = self._filter_sql(where)
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute("SELECT id, item, sps_status, created_at, updated_at FROM procedure_step"
                        f"{sql} ORDER BY sps_start, id LIMIT {int(limit)} OFFSET {int(offset)}",
                        params)
            while rows := cur.fetchmany(_FETCH_BATCH):
                for r in rows:
                    yield StepRow(id=r[0], item=loads_item(r[1]), sps_status=r[2],
                                  created_at=r[3], updated_at=r[4])

    def count_matching(self, where: StepFilter) -> int:
        sql, params = self._filter_sql(where)
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute(f"SELECT COUNT(*) FROM procedure_step{sql}", params)
            row = cur.fetchone()
            return int(row[0]) if row is not None else 0

    def count_steps(self) -> int:
        with self._reader() as conn:
            cur = conn.cursor()
            cur.execute("SELECT COUNT(*) FROM procedure_step")
            return int(cur.fetchone()[0])

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
        while True:
            try:
                self._readers.get_nowait().close()
            except queue.Empty:
                break


class _Conflict(Exception):
    """A job lost a race with another writer: the batch runs again (SqlStore.write)."""


class _SqlTx:
    """The StoreTx handed to write jobs; valid only inside ``SqlStore.write``."""

    def __init__(self, cur: Cursor, param: str, dialect: str) -> None:
        self.cur = cur
        self.param = param
        self.dialect = dialect

    def record_message(self, message: InboundMessage, *, content_hash: str = "",
                       flags: str = "", outcome: str = "", replay_of: int | None = None) -> int:
        p = self.param
        self.cur.execute(
            "INSERT INTO message_log (received_at, peer, sending_application, sending_facility,"
            " control_id, message_type, ack_code, error, mapping, raw, ack, content_hash,"
            f" flags, outcome, replay_of) VALUES ({', '.join([p] * 15)}) RETURNING id",
            (message.received_at.isoformat(), message.peer, message.sending_application,
             message.sending_facility, message.control_id, message.message_type,
             message.ack_code, message.error, message.mapping, message.raw, message.ack,
             content_hash, flags, outcome, replay_of))
        return int(self.cur.fetchone()[0])

    def upsert_step(self, item: Dataset, message_id: int | None = None) -> UpsertOutcome:
        p = self.param
        idx = index_values(item)
        text = dumps_item(item)
        self.cur.execute(
            "SELECT id, item FROM procedure_step WHERE study_instance_uid = "
            f"{p} AND requested_procedure_id = {p} AND sps_id = {p}",
            (idx.study_instance_uid, idx.requested_procedure_id, idx.sps_id))
        row = self.cur.fetchone()
        values = [getattr(idx, c) for c in _STEP_COLUMNS]
        now = _now()
        if row is None:
            cols = ", ".join(_STEP_COLUMNS)
            marks = ", ".join([p] * (len(_STEP_COLUMNS) + 4))
            self.cur.execute(
                f"INSERT INTO procedure_step ({cols}, item, created_at, updated_at, message_id)"
                f" VALUES ({marks}) RETURNING id", (*values, text, now, now, message_id))
            self._sync_stations(int(self.cur.fetchone()[0]), idx, new=True)
            return UpsertOutcome.INSERTED
        if row[1] == text:
            return UpsertOutcome.UNCHANGED
        sets = ", ".join(f"{c} = {p}" for c in _STEP_COLUMNS)
        self.cur.execute(
            f"UPDATE procedure_step SET {sets}, item = {p}, updated_at = {p}, message_id = {p}"
            f" WHERE id = {p}", (*values, text, now, message_id, row[0]))
        self._sync_stations(row[0], idx)
        return UpsertOutcome.UPDATED

    def replace_step(self, step_id: int, item: Dataset, message_id: int | None = None
                     ) -> UpsertOutcome:
        """Replace the stored step ``step_id`` in place (the order lifecycle: XO, status
        changes, patient updates and merges), index values included."""
        p = self.param
        idx = index_values(item)
        text = dumps_item(item)
        self.cur.execute(f"SELECT item FROM procedure_step WHERE id = {p}", (step_id,))
        row = self.cur.fetchone()
        if row is None:
            raise StoreError(f"no procedure step with id {step_id}")
        if row[0] == text:
            return UpsertOutcome.UNCHANGED
        sets = ", ".join(f"{c} = {p}" for c in _STEP_COLUMNS)
        self.cur.execute(
            f"UPDATE procedure_step SET {sets}, item = {p}, updated_at = {p}, message_id = {p}"
            f" WHERE id = {p}",
            (*[getattr(idx, c) for c in _STEP_COLUMNS], text, _now(), message_id, step_id))
        self._sync_stations(step_id, idx)
        return UpsertOutcome.UPDATED

    def _sync_stations(self, step_id: int, idx: IndexValues, *, new: bool = False) -> None:
        p = self.param
        if not new:
            self.cur.execute(f"DELETE FROM procedure_step_station WHERE step_id = {p}",
                             (step_id,))
        for aet in idx.station_aets:
            self.cur.execute(
                "INSERT INTO procedure_step_station (step_id, aet, sps_start_date, "
                f"sps_start_time) VALUES ({p}, {p}, {p}, {p})",
                (step_id, aet, idx.sps_start_date, idx.sps_start_time))
