"""Bulk loading of worklist items: many per transaction, through the order checks.

``mwl-bridge import`` (bridge/app/cli/importer.py) loads the ``.wl`` files of
``wlmscpfs`` or Orthanc with this module, and the benchmarks load their stores
with it. Candidates (bridge/orders/wlfile.py: read, converted and checked on
their own, in worker processes) are written in batches: one write job per
batch, in the store's normal transaction (``Store.write``), which

1. looks up every key of the batch at once (bridge/store/bulk_tx.py);
2. applies the checks an order's write job applies (bridge/orders/apply.py),
   against the store and the batch's earlier items:
   - the same step (Study Instance UID, Requested Procedure ID, SPS ID; or
     Accession Number, Requested Procedure ID, SPS ID) already stored: with the
     same content it is left alone (counted as unchanged, so an import can run
     again), with other content it is rejected, as an NW for an existing order
     is (orders.new_order_exists: reject; the import never changes a stored step);
   - an Accession Number of another patient (orders.accession_other_patient);
   - a Patient ID that was merged away or replaced (rejected: the import does not
     redirect, whatever orders.patients.merged_ids says);
   - a known Patient ID with another name and birth date
     (orders.patients.demographics_conflict);
3. inserts the accepted steps and the new patients with ``executemany``.

The daemon may run meanwhile: each batch is one short transaction of the
store's writer. On PostgreSQL other instances may write too: a batch that
loses a race for a key is run again by the store and then finds the other's row.
"""

from __future__ import annotations

import json
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from bridge.orders.patients import same_name
from bridge.orders.settings import OrdersSettings
from bridge.orders.wlfile import Candidate, ItemRules, read_wl
from bridge.store import Store, StoreTx
from bridge.store.bulk_tx import insert_steps, patients, save_patients, steps_touching
from bridge.store.orders_tx import PatientRecord
from bridge.store.private import create_private_file
from bridge.store.sqltx import POSTGRESQL

BATCH = 2_000  # items per transaction: ~0.2 s of the writer on SQLite, so a daemon
# running beside the import holds its HL7 ACKs that long at most (10,000 was
# measured a little faster, at ~1 s per wait: bench/import_wl.py)
FILES_PER_TASK = 200  # .wl files one worker reads per task
POOL_FROM = 400  # fewer files than this are read in this process
AHEAD = 2  # batches read ahead of the writer: reading overlaps writing, memory bounded
SQLITE_CACHE_KIB = 131_072  # the import's page cache: a dozen indexes stay in memory


@dataclass(frozen=True, slots=True)
class WlTuning:
    """How a .wl import is cut into transactions (bench/import_wl.py compares these).

    ``sqlite_cache_kib``: the page cache of the importing connection, for its life
    (0: SQLite's default, 2 MB). With the default the procedure_step indexes no
    longer fit from about 20,000 items on, and every batch re-reads their pages.
    Durability is unchanged: each batch's commit is fsynced (synchronous=FULL)."""

    batch: int = BATCH
    sqlite_cache_kib: int = SQLITE_CACHE_KIB


BEFORE = WlTuning(batch=2000, sqlite_cache_kib=0)  # the tuning before issue 16's rework


@dataclass(frozen=True, slots=True)
class Rejected:
    origin: str
    kind: str
    reason: str
    message: int | None = None  # the message number in an HL7 file
    raw: str = ""  # the HL7 message, for its dead letter


@dataclass(slots=True)
class BatchResult:
    loaded: int = 0
    unchanged: int = 0
    flagged: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)


class DeadLetters:
    """The rejects of one import, one JSON object a line (JSON Lines), made 0600:
    ``source``, ``message`` (HL7: its number in the file), ``kind``, ``reason``, and for
    HL7 the message itself (``hl7``, segments separated by CR) to fix and import again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._file: IO[str] | None = None

    def add(self, r: Rejected) -> None:
        if self._file is None:
            create_private_file(self.path)
            self._file = self.path.open("a", encoding="utf-8")
            os.chmod(self.path, 0o600)
        record: dict[str, Any] = {"source": r.origin, "kind": r.kind, "reason": r.reason}
        if r.message is not None:
            record["message"] = r.message
        if r.raw:
            record["hl7"] = r.raw
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(slots=True)
class ImportReport:
    """What an import did: counts for the summary, the rejects in the dead-letter file."""

    dead_letters: DeadLetters
    loaded: int = 0
    unchanged: int = 0
    rejected: Counter[str] = field(default_factory=Counter)  # kind -> count
    flagged: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # about files, not items

    def add(self, result: BatchResult) -> None:
        self.loaded += result.loaded
        self.unchanged += result.unchanged
        self.flagged.update(result.flagged)
        for r in result.rejected:
            self.reject(r)

    def reject(self, r: Rejected) -> None:
        self.rejected[r.kind] += 1
        self.dead_letters.add(r)

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def rules_of(settings: OrdersSettings) -> ItemRules:
    return ItemRules(patients=settings.patients, max_item_bytes=settings.max_item_bytes)


# --- the write job ------------------------------------------------------------------

def _conflict(known: PatientRecord, facts_name: str, facts_birth: str) -> bool:
    """orders.checks.demographics_conflict, on the facts a candidate carries."""
    if not (known.name and facts_name and known.birth_date and facts_birth):
        return False
    # The birth dates first: equal ones (most items of a known patient) spare the
    # two name normalisations, a tenth of the writer's Python per item.
    return known.birth_date != facts_birth and not same_name(known.name, facts_name)


def load_job(batch: Sequence[Candidate], settings: OrdersSettings, *,
             sqlite_cache_kib: int = 0) -> Callable[[StoreTx], BatchResult]:
    """The write job of one batch; pure in what it returns, so the store may run it
    again after a lost race. ``sqlite_cache_kib``: see WlTuning."""

    def job(tx: StoreTx) -> BatchResult:
        if sqlite_cache_kib > 0 and tx.dialect != POSTGRESQL:
            # Per connection, not per transaction: harmless to set again.
            tx.cur.execute(f"PRAGMA cache_size = -{int(sqlite_cache_kib)}")
        return _load(tx, batch, settings)

    return job


def _load(tx: StoreTx, batch: Sequence[Candidate], s: OrdersSettings) -> BatchResult:
    out = BatchResult()
    good = [c for c in batch if c.row is not None]
    known = steps_touching(tx, (c.row.study_instance_uid for c in good if c.row),
                           (c.row.accession for c in good if c.row))
    by_key = {k.key: (k.item, f"step #{k.id}") for k in known}
    by_order = {k.order: (k.item, f"step #{k.id}") for k in known if k.order[0]}
    owners: dict[str, set[tuple[str, str]]] = {}
    for k in known:
        owners.setdefault(k.order[0], set()).add(k.patient)
    people = patients(tx, (c.row.patient_id for c in good if c.row))
    new_people: dict[tuple[str, str], PatientRecord] = {}
    changed: dict[tuple[str, str], PatientRecord] = {}
    rows = []
    for c in batch:
        if c.row is None or c.patient is None:
            out.rejected.append(Rejected(c.origin, c.kind, c.reason))
            continue
        row, facts = c.row, c.patient
        key = (row.study_instance_uid, row.requested_procedure_id, row.sps_id)
        order = (row.accession, row.requested_procedure_id, row.sps_id)
        pkey = (row.patient_id, row.issuer)
        same = (by_order.get(order) if row.accession else None) or by_key.get(key)
        if same is not None:
            if same[0] == row.item:
                out.unchanged += 1
                continue
            out.rejected.append(Rejected(
                c.origin, "duplicate order",
                f"{c.origin}: the store already holds this procedure step (Accession Number "
                f"{row.accession!r}, Requested Procedure ID {row.requested_procedure_id!r}, "
                f"SPS ID {row.sps_id!r}; {same[1]}) with other content; the import never "
                "changes a stored step (send an XO to change it)"))
            continue
        others = owners.get(row.accession, set()) - {pkey} if row.accession else set()
        flags: list[str] = []
        if others:
            if s.accession_other_patient != "allow_with_warning":
                out.rejected.append(Rejected(
                    c.origin, "accession of another patient",
                    f"{c.origin}: Accession Number {row.accession!r} belongs to an order of "
                    "another patient (orders.accession_other_patient: reject)"))
                continue
            flags.append("accession_other_patient")
        record = people.get(pkey)
        if record is not None and record.merged:
            how = "replaced by" if record.merge_event == "A47" else "merged into"
            out.rejected.append(Rejected(
                c.origin, "merged Patient ID",
                f"{c.origin}: Patient ID {row.patient_id!r} was {how} "
                f"{record.merged_into_id!r} ({record.merge_event}); import the item under "
                "the surviving ID"))
            continue
        conflict = record is not None and _conflict(record, facts.name, facts.birth_date)
        if conflict:
            policy = s.patients.demographics_conflict
            if policy == "reject":
                out.rejected.append(Rejected(
                    c.origin, "demographics conflict",
                    f"{c.origin}: Patient ID {row.patient_id!r} is known with a different "
                    "name and birth date (orders.patients.demographics_conflict: reject)"))
                continue
            if policy == "accept_flag":
                flags.append("demographics_conflict")
        rows.append(row)
        out.loaded += 1
        out.flagged.update(flags)
        stored = (row.item, c.origin)
        by_key[key] = stored
        if row.accession:
            by_order[order] = stored
            owners.setdefault(row.accession, set()).add(pkey)
        mine = PatientRecord(row.patient_id, row.issuer, facts.name, facts.birth_date,
                             facts.sex, facts.attributes)
        if record is None:
            new_people[pkey] = people[pkey] = mine
        elif conflict:
            if "demographics_conflict" in flags and "demographics_conflict" not in \
                    record.flags.split(","):
                flagged = replace(record, flags=",".join(
                    sorted({*filter(None, record.flags.split(",")), "demographics_conflict"})))
                people[pkey] = flagged
                _remember(pkey, flagged, new_people, changed)
        elif (record.name, record.birth_date, record.sex, record.attributes) != (
                mine.name, mine.birth_date, mine.sex, mine.attributes):
            updated = replace(mine, flags=record.flags)
            people[pkey] = updated
            _remember(pkey, updated, new_people, changed)
    insert_steps(tx, rows)
    save_patients(tx, list(new_people.values()), list(changed.values()))
    return out


def _remember(pkey: tuple[str, str], record: PatientRecord,
              new: dict[tuple[str, str], PatientRecord],
              changed: dict[tuple[str, str], PatientRecord]) -> None:
    if pkey in new:
        new[pkey] = record
    else:
        changed[pkey] = record


def load_batch(store: Store, batch: Sequence[Candidate], settings: OrdersSettings, *,
               sqlite_cache_kib: int = 0) -> BatchResult:
    """One batch in one transaction (StoreError when the store fails)."""
    return store.write_one(load_job(batch, settings, sqlite_cache_kib=sqlite_cache_kib))


def load_candidates(store: Store, batches: Iterable[Sequence[Candidate]],
                    settings: OrdersSettings, report: ImportReport,
                    advance: Callable[[int], None] = lambda n: None, *,
                    sqlite_cache_kib: int = 0) -> None:
    """Every batch, each in its transaction; ``advance(n)`` after each."""
    for batch in batches:
        if batch:
            report.add(load_batch(store, batch, settings, sqlite_cache_kib=sqlite_cache_kib))
            advance(len(batch))


# --- worklist files ------------------------------------------------------------------

def wl_files(folder: Path) -> list[Path]:
    """The worklist files under ``folder``, in name order: ``*.wl`` (any case) in it and
    its subfolders (wlmscpfs keeps one folder per AE title)."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() == ".wl" and p.is_file())


def read_wl_files(paths: Sequence[Path], rules: ItemRules) -> list[Candidate]:
    """Worker task: the candidates of some files."""
    return [c for path in paths for c in read_wl(path, rules)]


def _wl_tasks(paths: Sequence[Path], rules: ItemRules, pool: Executor | None,
              batch: int = BATCH) -> Iterator[list[Candidate]]:
    tasks = [paths[lo:lo + FILES_PER_TASK] for lo in range(0, len(paths), FILES_PER_TASK)]
    if pool is None:
        for task in tasks:
            yield read_wl_files(task, rules)
        return
    # In file order (the first of two files with one step is the one loaded), at most
    # AHEAD batches ahead of the writer, so the workers read the next batch while it
    # writes one: Executor.map would submit every task at once and hold all the
    # candidates of a slow store in memory (~2.5 kB each).
    ahead = max(2, AHEAD * -(-batch // FILES_PER_TASK))
    pending: deque[Future[list[Candidate]]] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(read_wl_files, task, rules))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:  # the writer failed: read no further
            future.cancel()


def rebatch(parts: Iterable[Sequence[Candidate]], size: int = BATCH
            ) -> Iterator[list[Candidate]]:
    batch: list[Candidate] = []
    for part in parts:
        batch.extend(part)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_wl(store: Store, paths: Sequence[Path], settings: OrdersSettings,
              report: ImportReport, *, pool: Executor | None = None,
              advance: Callable[[int], None] = lambda n: None,
              tuning: WlTuning = WlTuning()) -> None:
    """Load worklist files: read and checked (in ``pool`` when given, while the
    writer writes the batch before), then in batches of ``tuning.batch``."""
    parts = _wl_tasks(paths, rules_of(settings), pool, tuning.batch)
    # Progress counts files; a file may hold several steps (SPS items).
    counted = _counting(parts, advance)
    load_candidates(store, rebatch(counted, tuning.batch), settings, report,
                    sqlite_cache_kib=tuning.sqlite_cache_kib)


def _counting(parts: Iterable[list[Candidate]], advance: Callable[[int], None]
              ) -> Iterator[list[Candidate]]:
    for part in parts:
        yield part
        advance(len({c.origin.split(" (SPS item", 1)[0] for c in part}))
