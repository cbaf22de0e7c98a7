"""The store interface shared by the SQLite and PostgreSQL backends.

Threading rule (the one place where asyncio and pynetdicom's threads meet):
every Store method is synchronous and safe to call from any thread. Reads
(``query``, ``list_steps``) use a small pool of connections (not one per
thread: pynetdicom starts a thread per association). Writes go through
``write``, which a single writer serialises; the asyncio side never calls
``write`` on the event loop but through ``CommitQueue`` (commit_queue.py),
which runs batches on its own thread and resolves futures on the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from pydicom import Dataset

from bridge.store.items import StoredItem
from bridge.store.query import WorklistQuery

T = TypeVar("T")


class UpsertOutcome(StrEnum):
    INSERTED = "inserted"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One HL7 message as received, kept whole (accepted or rejected)."""

    received_at: datetime
    peer: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    raw: bytes
    ack_code: str  # AA, AE or AR
    ack: bytes
    error: str = ""
    mapping: str = ""


@dataclass(frozen=True, slots=True)
class StepRow:
    """A stored Scheduled Procedure Step, for listings (not for C-FIND answers)."""

    id: int
    item: Dataset
    sps_status: str
    created_at: str
    updated_at: str


class Cursor(Protocol):
    """The part of a DB-API 2 cursor the store's SQL uses (sqlite3's and psycopg's).

    Rows are sequences of column values whose types depend on the column and the
    driver, so ``fetch*`` stay untyped: each caller converts the values it reads.
    """

    @property
    def rowcount(self) -> int: ...

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> object: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int = ...) -> list[Any]: ...


@dataclass(frozen=True, slots=True)
class StepFilter:
    """Which steps a listing shows; empty fields restrict nothing. Every field is an
    indexed column, so a filtered listing never reads the other items."""

    station: str = ""  # any of the step's Scheduled Station AE Titles
    modality: str = ""
    date: str = ""  # SPS start date, YYYYMMDD
    status: str = ""
    patient_id: str = ""
    accession: str = ""
    date_from: str = ""  # SPS start date on or after, YYYYMMDD (with date_to: a range)
    date_to: str = ""  # SPS start date on or before, YYYYMMDD


class StoreTx(Protocol):
    """What a write job may do inside its transaction (the one ``Store.write`` opens).

    Valid only while the job runs. Besides the typed operations below, the store
    modules that keep their own tables (orders_tx.py, mpps_tx.py, outbox_tx.py) run
    their SQL on ``cur``, with ``param`` as the backend's parameter mark.
    """

    @property
    def cur(self) -> Cursor:
        """The transaction's cursor (SQL in the subset SQLite and PostgreSQL share)."""

    @property
    def param(self) -> str:
        """The backend's parameter mark: ``?`` or ``%s``."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``: for the few statements that differ (row locks,
        the database clock, notifications; see sqltx.py)."""

    def record_message(self, message: InboundMessage, *, content_hash: str = "",
                       flags: str = "", outcome: str = "", replay_of: int | None = None
                       ) -> int: ...

    def upsert_step(self, item: Dataset, message_id: int | None = None) -> UpsertOutcome:
        """Insert the step, or update the one with its key (Study Instance UID,
        Requested Procedure ID, SPS ID)."""

    def replace_step(self, step_id: int, item: Dataset, message_id: int | None = None
                     ) -> UpsertOutcome:
        """Replace the stored step ``step_id`` in place, index values included."""


class StoreError(Exception):
    """The store could not do what was asked (connection lost, disk full, ...)."""


class Store(ABC):
    """Persistent worklist items and the message log."""

    @abstractmethod
    def migrate(self) -> int:
        """Bring the schema to the newest version; return that version."""

    @abstractmethod
    def schema_version(self) -> int: ...

    @abstractmethod
    def write(self, jobs: Sequence[Callable[[StoreTx], T]]) -> list[T | Exception]:
        """Run jobs in one transaction, each in its own savepoint.

        Returns one entry per job: its result, or the exception it raised (that
        job's changes are rolled back, the others are kept). Returns only after
        the commit is durable.
        """

    @abstractmethod
    def query(self, query: WorklistQuery) -> Iterator[Dataset]:
        """Stored items matching ``query``, ordered by SPS start then insertion.

        Items are full MWL items (top level plus one Scheduled Procedure Step
        Sequence item) with Unicode text and no Specific Character Set.
        """

    @abstractmethod
    def query_stored(self, query: WorklistQuery) -> Iterator[StoredItem]:
        """``query``'s items as stored (text, decoded on first use), in its order."""

    @abstractmethod
    def list_steps(self, limit: int = 100) -> list[StepRow]: ...

    @abstractmethod
    def iter_steps(self, where: StepFilter, *, limit: int, offset: int = 0
                   ) -> Iterator[StepRow]:
        """Steps matching ``where`` in schedule order, read in batches as they are
        consumed (a listing of a large store starts printing at once)."""

    @abstractmethod
    def count_matching(self, where: StepFilter) -> int: ...

    @abstractmethod
    def count_steps(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...

    def listen(self, channel: str, on_notify: Callable[[str], None]) -> Callable[[], None]:
        """Call ``on_notify`` when another connection NOTIFYs ``channel`` (PostgreSQL;
        other backends never call it: their callers poll). Returns the function that
        stops listening."""
        return lambda: None

    # Conveniences built on write(); backends need not override them.

    def write_one(self, job: Callable[[StoreTx], T]) -> T:
        """Run one job in a transaction of its own and return its result; raise what
        the job raised (its changes rolled back), or StoreError as ``write`` does."""
        (result,) = self.write([job])
        if isinstance(result, BaseException):
            raise result
        return result

    def upsert_steps(self, items: Sequence[Dataset]) -> list[UpsertOutcome]:
        def job(tx: StoreTx) -> list[UpsertOutcome]:
            return [tx.upsert_step(item) for item in items]

        return self.write_one(job)
