"""Many new worklist items in one write job: set-based reads, executemany writes.

For ``mwl-bridge import`` and the benchmarks' loaders (bridge/orders/bulk.py). A
batch of items costs a handful of statements instead of a dozen round trips
per item: the keys of the whole batch are looked up at once, then the new
rows go in with ``executemany``. The rows are exactly those
``_SqlTx.upsert_step`` writes (the same index values, item text and one station
row per title), so a bulk-loaded item and one from an HL7 order are alike.

Runs inside ``Store.write`` (the single writer; see the threading rule in
base.py). With several instances on one PostgreSQL database the unique keys
decide races: a batch that loses one fails with a unique violation, and
``SqlStore.write`` runs it again, when its lookups see the other's rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from bridge.store.base import StoreTx
from bridge.store.items import IndexValues, dumps_item, index_values, pad_time
from bridge.store.names import normalise_name
from bridge.store.orders_tx import PatientRecord
from bridge.store.sql import _STEP_COLUMNS
from bridge.store.sqltx import POSTGRESQL, for_update, stamp

_IN_CHUNK = 500  # values in one IN (...) list


@dataclass(frozen=True, slots=True)
class StepRowValues:
    """One new procedure_step row, computed away from the writer (picklable)."""

    values: tuple[str, ...]  # in _STEP_COLUMNS order
    item: str  # the stored item text (DICOM JSON)
    station_aets: tuple[str, ...]
    study_instance_uid: str
    requested_procedure_id: str
    sps_id: str
    accession: str
    patient_id: str
    issuer: str


def step_row(item: Dataset, stored: str | None = None) -> StepRowValues:
    """The row of a new step; ``stored``: its text when the caller has it already
    (``dumps_item(item)``)."""
    idx = index_values(item)
    return StepRowValues(
        values=tuple(getattr(idx, c) for c in _STEP_COLUMNS),
        item=dumps_item(item) if stored is None else stored,
        station_aets=idx.station_aets, study_instance_uid=idx.study_instance_uid,
        requested_procedure_id=idx.requested_procedure_id, sps_id=idx.sps_id,
        accession=idx.accession_number, patient_id=idx.patient_id,
        issuer=idx.issuer_of_patient_id)


class Unusual(Exception):
    """An item whose index values ``index_from_json`` leaves to ``index_values``."""


_SPS_KEY, _PATIENT_NAME_KEY = "00400100", "00100010"
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
_KEYS = {  # IndexValues field -> (in the SPS item, JSON key)
    "modality": (True, "00080060"), "sps_start_date": (True, "00400002"),
    "sps_start_time": (True, "00400003"), "patient_id": (False, "00100020"),
    "issuer_of_patient_id": (False, "00100021"), "accession_number": (False, "00080050"),
    "requested_procedure_id": (False, "00401001"), "study_instance_uid": (False, "0020000D"),
    "sps_id": (True, "00400009"), "sps_status": (True, "00400020"),
    "placer_order_number": (False, "00402016"), "filler_order_number": (False, "00402017"),
}


def _plain(value: Any) -> str:
    if isinstance(value, dict):  # a person name's component groups
        return "=".join(value.get(k, "") for k in _PN_GROUPS).rstrip("=")
    return str(value)


def _one(ds: dict[str, Any], key: str) -> str:
    values = ds.get(key, {}).get("Value") or []
    if not values:
        return ""
    if len(values) > 1:
        raise Unusual(key)
    return _plain(values[0]).strip()


def index_from_json(tree: dict[str, Any]) -> IndexValues:
    """``index_values(loads_item(text))`` for the item ``tree`` (its stored JSON, parsed),
    without making a Dataset: a third of an import's time per item went there. Raises
    Unusual for what it leaves to ``index_values`` (a multi-valued key)."""
    sps_items = tree.get(_SPS_KEY, {}).get("Value") or [{}]
    sps = sps_items[0]
    got = {name: _one(sps if in_sps else tree, key) for name, (in_sps, key) in _KEYS.items()}
    stations = [_plain(v).strip() for v in sps.get("00400001", {}).get("Value") or []]
    aets = tuple(dict.fromkeys(v for v in stations if v))
    names: dict[str, str] = {}
    for prefix, ds in (("", tree), (_SPS_KEY + ".", sps)):
        for key, attr in ds.items():
            values = attr.get("Value") or []
            if attr["vr"] != "PN" or key == _PATIENT_NAME_KEY or len(values) != 1:
                continue
            value = _plain(values[0]).strip()
            if value:
                names[prefix + key] = normalise_name(value)
    date, time = got["sps_start_date"], pad_time(got["sps_start_time"])
    got["sps_start_time"] = time
    return IndexValues(
        **got, names_norm=json.dumps(names, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")),
        station_aets=aets, station_aet=stations[0] if stations else "",
        sps_start=(date + (time or "000000")) if date else "",
        patient_name_norm=normalise_name(_one(tree, _PATIENT_NAME_KEY)))


def step_row_json(tree: dict[str, Any], stored: str) -> StepRowValues:
    """``step_row`` of an item given as its stored text and that text parsed."""
    idx = index_from_json(tree)
    return StepRowValues(
        values=tuple(getattr(idx, c) for c in _STEP_COLUMNS), item=stored,
        station_aets=idx.station_aets, study_instance_uid=idx.study_instance_uid,
        requested_procedure_id=idx.requested_procedure_id, sps_id=idx.sps_id,
        accession=idx.accession_number, patient_id=idx.patient_id,
        issuer=idx.issuer_of_patient_id)


@dataclass(frozen=True, slots=True)
class KnownStep:
    """A stored step a new one may collide with."""

    id: int
    key: tuple[str, str, str]  # Study Instance UID, Requested Procedure ID, SPS ID
    order: tuple[str, str, str]  # Accession Number, Requested Procedure ID, SPS ID
    patient: tuple[str, str]
    item: str


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for lo in range(0, len(values), _IN_CHUNK):
        yield values[lo:lo + _IN_CHUNK]


def steps_touching(tx: StoreTx, study_uids: Iterable[str], accessions: Iterable[str]
                   ) -> list[KnownStep]:
    """Stored steps with any of these Study Instance UIDs or Accession Numbers
    (locked until the commit on PostgreSQL, as the lifecycle's reads are)."""
    found: dict[int, KnownStep] = {}
    lock = for_update(tx)
    for column, wanted in (("study_instance_uid", sorted(set(study_uids) - {""})),
                           ("accession_number", sorted(set(accessions) - {""}))):
        for chunk in _chunks(wanted):
            marks = ", ".join([tx.param] * len(chunk))
            tx.cur.execute(
                "SELECT id, study_instance_uid, requested_procedure_id, sps_id, "
                "accession_number, patient_id, issuer_of_patient_id, item FROM procedure_step"
                f" WHERE {column} IN ({marks}){lock}", list(chunk))
            for r in tx.cur.fetchall():
                found[int(r[0])] = KnownStep(int(r[0]), (r[1], r[2], r[3]), (r[4], r[2], r[3]),
                                             (r[5], r[6]), r[7])
    return list(found.values())


_PATIENT_COLUMNS = ("patient_id, issuer, name, birth_date, sex, attributes, merged_into_id,"
                    " merged_into_issuer, merge_event, flags")


def patients(tx: StoreTx, ids: Iterable[str]) -> dict[tuple[str, str], PatientRecord]:
    """The patient rows of these Patient IDs (every issuer)."""
    out: dict[tuple[str, str], PatientRecord] = {}
    for chunk in _chunks(sorted(set(ids) - {""})):
        marks = ", ".join([tx.param] * len(chunk))
        tx.cur.execute(f"SELECT {_PATIENT_COLUMNS} FROM patient WHERE patient_id IN ({marks})",
                       list(chunk))
        for r in tx.cur.fetchall():
            out[(r[0], r[1])] = PatientRecord(
                patient_id=r[0], issuer=r[1], name=r[2], birth_date=r[3], sex=r[4],
                attributes=r[5], merged_into_id=r[6], merged_into_issuer=r[7],
                merge_event=r[8], flags=r[9])
    return out


def _new_ids(tx: StoreTx, count: int) -> list[int]:
    if tx.dialect == POSTGRESQL:
        # Taken from the table's own sequence: other instances' inserts never collide.
        tx.cur.execute("SELECT nextval(pg_get_serial_sequence('procedure_step', 'id')) "
                       "FROM generate_series(1, %s)", (count,))
        return [int(r[0]) for r in tx.cur.fetchall()]
    # SQLite: the transaction (BEGIN IMMEDIATE) excludes every other writer.
    tx.cur.execute("SELECT COALESCE(MAX(id), 0) FROM procedure_step")
    first = int(tx.cur.fetchone()[0]) + 1
    return list(range(first, first + count))


def executemany(tx: StoreTx, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    """The cursor's executemany (sqlite3 and psycopg both have one; base.Cursor does
    not promise it, so it is looked up here, with a loop as the fallback)."""
    if not rows:
        return
    many = getattr(tx.cur, "executemany", None)
    if many is not None:
        many(sql, rows)
        return
    for row in rows:
        tx.cur.execute(sql, row)


def insert_steps(tx: StoreTx, rows: Sequence[StepRowValues]) -> list[int]:
    """Insert new steps (their keys checked free by the caller); their ids."""
    if not rows:
        return []
    ids = _new_ids(tx, len(rows))
    now = stamp()
    p = tx.param
    cols = ", ".join(("id", *_STEP_COLUMNS, "item", "created_at", "updated_at"))
    marks = ", ".join([p] * (len(_STEP_COLUMNS) + 4))
    executemany(tx, f"INSERT INTO procedure_step ({cols}) VALUES ({marks})",
                [(step_id, *row.values, row.item, now, now)
                 for step_id, row in zip(ids, rows, strict=True)])
    stations = [(step_id, aet, row.values[_DATE], row.values[_TIME])
                for step_id, row in zip(ids, rows, strict=True) for aet in row.station_aets]
    executemany(tx, "INSERT INTO procedure_step_station (step_id, aet, sps_start_date, "
                    f"sps_start_time) VALUES ({p}, {p}, {p}, {p})", stations)
    return ids


_DATE = _STEP_COLUMNS.index("sps_start_date")
_TIME = _STEP_COLUMNS.index("sps_start_time")


def save_patients(tx: StoreTx, new: Sequence[PatientRecord],
                  changed: Sequence[PatientRecord]) -> None:
    """Insert the new patients' rows and update the changed ones."""
    p = tx.param
    now = stamp()

    def values(r: PatientRecord) -> tuple[str, ...]:
        return (r.name, r.birth_date, r.sex, r.attributes, r.merged_into_id,
                r.merged_into_issuer, r.merge_event, r.flags, now)

    executemany(tx, "INSERT INTO patient (name, birth_date, sex, attributes, merged_into_id,"
                    " merged_into_issuer, merge_event, flags, updated_at, patient_id, issuer,"
                    f" created_at) VALUES ({', '.join([p] * 12)})",
                [(*values(r), r.patient_id, r.issuer, now) for r in new])
    executemany(tx, f"UPDATE patient SET name = {p}, birth_date = {p}, sex = {p},"
                    f" attributes = {p}, merged_into_id = {p}, merged_into_issuer = {p},"
                    f" merge_event = {p}, flags = {p}, updated_at = {p}"
                    f" WHERE patient_id = {p} AND issuer = {p}",
                [(*values(r), r.patient_id, r.issuer) for r in changed])
