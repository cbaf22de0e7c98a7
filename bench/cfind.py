"""Worklist query latency: DCMTK findscu/echoscu against the daemon on a large store.

    .venv/bin/python bench/cfind.py [--sizes 10000 100000] [--samples 30]
    .venv/bin/python bench/cfind.py --backend postgresql --sizes 1000000
    .venv/bin/python bench/cfind.py --load-only --sizes 100000 [--backend postgresql]
    .venv/bin/python bench/cfind.py --sizes 100000 --peers wlmscpfs orthanc --peer-samples 5
    .venv/bin/python bench/cfind.py --sizes 1000000 --samples 10 --rss-queries 1000

For each size a fresh store (SQLite, or with ``--backend postgresql`` a new database
on the local server at 127.0.0.1:5432, dropped at the end, VACUUM ANALYZEd after
loading as autovacuum would) is bulk-loaded with realistic worklist items
(20 stations CT01..XA04, each with its modality; ~15 % non-ASCII patient names;
a station-day holds tens of items, so the answer count stays the same while
the history grows), the daemon is started on it, and every sample is a whole
DCMTK client process (start, association, C-ECHO or C-FIND, release, exit),
as a modality console runs it. The query is the one of the peer benchmark
(../shared/bench-peers/query-ct-station-day.dump): station CT01, one day,
modality CT, 13 return keys. TCP_NODELAY=1 is set for the DCMTK clients (the
daemon sets it on its own sockets). The daemon's resident memory (now and peak,
from /proc) is printed after the series. With ``--peers`` the same items are also
written as .wl files and DCMTK wlmscpfs and Orthanc's worklist plugin (bench/peers.py)
answer the same queries in the same run, one server after the other; the script
prints each server's figures, its RSS (the process tree's peak, sampled: wlmscpfs
forks per association) and the issue-16 ratios. With ``--rss-queries N`` the daemon
answers N more station-day queries (each station in turn) before its RSS is read.
Nothing here runs in the test suite.
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

# Run as a script from anywhere: the repo root must be importable for "bench" and "bridge".
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import Dataset, dcmread

from bench import peers as peer_servers
from bench.common import (
    DCMTK,
    PHYSICIANS,
    PROCEDURES,
    STATIONS,
    Person,
    dcmtk_env,
    free_port,
    fresh_database,
    make_people,
    median,
    pct,
    ratio_line,
    rss_mb,
    start_daemon,
    store_yaml,
    vacuum_analyze,
    write_config,
)

TARGET_RATIO = 1.3  # C-FIND p50 / C-ECHO p50 at 100k items (SQLite; issue 16)
TARGET_PER_ANSWER_MS = 0.2  # C-FIND minus the 0-answer C-FIND, per answer (issue 16)
TARGET_RATIO_PG = 2.0  # ... at 1M items on PostgreSQL (issue 11)
TARGET_RSS_MB = 150.0  # the daemon's RSS at 1M items, after 1,000 queries (issues 11, 16)
TARGET_ECHO_VS_WLMSCPFS = 1.1  # own C-ECHO p50 / wlmscpfs C-ECHO p50 (issue 16)
WARMUP = 3
FIRST_DAY = datetime(2025, 6, 1)
QUERY_STATION, QUERY_MODALITY = "CT01", "CT"
QUERY_DATE = (FIRST_DAY + timedelta(days=14)).strftime("%Y%m%d")  # 20250615, as in the dump
EMPTY_DATE = "20990101"  # same query shape, no item on that day
CHUNK = 1000
HIDDEN = ("COMPLETED", "DISCONTINUED", "CANCELED")
UID_ROOT = "1.2.826.0.1.3680043.8.498"

# The peer benchmark's query-ct-station-day.dump, kept here so the benchmark
# needs nothing outside the repository.
QUERY_DUMP = """\
(0008,0050) SH []
(0008,0090) PN []
(0010,0010) PN []
(0010,0020) LO []
(0010,0030) DA []
(0010,0040) CS []
(0020,000d) UI []
(0032,1060) LO []
(0040,0100) SQ
  (fffe,e000) na
    (0008,0060) CS [{modality}]
    (0040,0001) AE [{station}]
    (0040,0002) DA [{date}]
    (0040,0003) TM []
    (0040,0006) PN []
    (0040,0007) LO []
    (0040,0009) SH []
  (fffe,e00d) na
(fffe,e0dd) na
(0040,1001) SH []
"""


def code_item(code: str, meaning: str) -> Dataset:
    ds = Dataset()
    ds.CodeValue = code
    ds.CodingSchemeDesignator = "99ORD"
    ds.CodeMeaning = meaning
    return ds


def make_item(i: int, rng: random.Random, person: Person, days: int) -> Dataset:
    """One stored MWL item: Unicode text, no Specific Character Set (the store's form)."""
    station, modality, station_name, location = rng.choice(STATIONS)
    code, text = rng.choice(PROCEDURES[modality])
    slot = rng.randrange(7 * 4, 19 * 4)
    status_roll = rng.random()
    status = ("COMPLETED" if status_roll < 0.05 else "CANCELED" if status_roll < 0.06
              else "SCHEDULED")
    ref = "^".join(rng.choice(PHYSICIANS)) + "^^DR"
    ds = Dataset()
    ds.AccessionNumber = f"A{i:09d}"
    ds.InstitutionName = "GENERAL HOSPITAL"
    ds.ReferringPhysicianName = ref
    ds.PatientName = person.dicom_name
    ds.PatientID = person.id
    ds.IssuerOfPatientID = "HOSP"
    ds.PatientBirthDate = person.birth
    ds.PatientSex = person.sex
    ds.StudyInstanceUID = f"{UID_ROOT}.9.{i}"
    ds.RequestingPhysician = ref
    ds.RequestedProcedureDescription = text
    ds.RequestedProcedureCodeSequence = [code_item(code, text)]
    ds.RequestedProcedureID = f"RP{i:09d}"
    ds.RequestedProcedurePriority = rng.choice(("ROUTINE",) * 7 + ("HIGH", "STAT", "LOW"))
    ds.PlacerOrderNumberImagingServiceRequest = f"PLC{i:09d}"
    ds.FillerOrderNumberImagingServiceRequest = f"FIL{i:09d}"
    sps = Dataset()
    sps.Modality = modality
    sps.ScheduledStationAETitle = station
    sps.ScheduledProcedureStepStartDate = (
        FIRST_DAY + timedelta(days=rng.randrange(days))).strftime("%Y%m%d")
    sps.ScheduledProcedureStepStartTime = f"{slot // 4:02d}{slot % 4 * 15:02d}00"
    sps.ScheduledPerformingPhysicianName = "^".join(rng.choice(PHYSICIANS)) + "^^DR"
    sps.ScheduledProcedureStepDescription = text
    sps.ScheduledProtocolCodeSequence = [code_item(code, text)]
    sps.ScheduledProcedureStepID = f"SPS{i:09d}"
    sps.ScheduledStationName = station_name
    sps.ScheduledProcedureStepLocation = location
    sps.ScheduledProcedureStepStatus = status
    ds.ScheduledProcedureStepSequence = [sps]
    return ds


def is_hit(ds: Dataset) -> bool:
    sps = ds.ScheduledProcedureStepSequence[0]
    return is_file_hit(ds) and str(sps.ScheduledProcedureStepStatus) not in HIDDEN


def is_file_hit(ds: Dataset) -> bool:
    """A hit for the file-based servers: they do not hide completed or canceled steps."""
    sps = ds.ScheduledProcedureStepSequence[0]
    return bool(sps.ScheduledStationAETitle == QUERY_STATION
                and sps.Modality == QUERY_MODALITY
                and sps.ScheduledProcedureStepStartDate == QUERY_DATE)


@dataclass
class Loaded:
    items: int
    days: int
    seconds: float
    expected: dict[str, str]  # accession -> patient name, of the standard query's answers
    file_hits: set[str] | None = None  # accessions the file-based servers answer (--peers)


def open_bench_store(db: Path, dsn: str | None) -> Any:
    """The store the daemon will use: SQLite at ``db``, or PostgreSQL at ``dsn``."""
    from bridge.store import SqliteStore
    from bridge.store.postgresql import PostgresStore

    return PostgresStore(dsn) if dsn else SqliteStore(db)


LOADS = ("import", "copy", "upsert")


def bulk_load(db: Path, n: int, per_station_day: int, seed: int, dsn: str | None = None,
              *, load: str | None = None, wl_dir: Path | None = None) -> Loaded:
    """Load ``n`` items: ``import`` through mwl-bridge import's bulk path (the order
    checks, batches with executemany; bridge/orders/bulk.py), ``copy`` with PostgreSQL
    COPY (no checks), ``upsert`` one Store.upsert_step per item (1,000 per commit).
    By default ``copy`` on PostgreSQL, ``import`` on SQLite. With ``wl_dir`` (import
    only) every item is also written there as a .wl file, for the file-based peers."""
    if load is None:
        load = "copy" if dsn is not None else "import"
    if load == "import":
        return bulk_load_import(db, n, per_station_day, seed, dsn, wl_dir=wl_dir)
    if wl_dir is not None:
        raise ValueError("writing .wl files for the peers needs --load import")
    if dsn is not None:
        return bulk_load_postgresql(dsn, n, per_station_day, seed)
    days = max(30, math.ceil(n / (len(STATIONS) * per_station_day)))
    rng = random.Random(seed * 7919 + n)
    people = make_people(rng, max(1, n * 6 // 10))
    store = open_bench_store(db, dsn)
    store.migrate()
    expected: dict[str, str] = {}
    t0 = time.perf_counter()
    try:
        for lo in range(0, n, CHUNK):
            chunk = [make_item(i, rng, rng.choice(people), days)
                     for i in range(lo, min(lo + CHUNK, n))]
            expected.update((ds.AccessionNumber, str(ds.PatientName))
                            for ds in chunk if is_hit(ds))

            def job(tx: Any, chunk: list[Dataset] = chunk) -> None:
                for ds in chunk:
                    tx.upsert_step(ds)

            store.write_one(job)
            done = lo + len(chunk)
            if done % 100_000 == 0 and done < n:
                elapsed = time.perf_counter() - t0
                print(f"  ... {done:,} items in {elapsed:.0f} s ({done / elapsed:,.0f}/s)",
                      flush=True)
        count = store.count_steps()
    finally:
        store.close()
    if count != n:
        raise RuntimeError(f"store holds {count} items after loading {n}")
    return Loaded(n, days, time.perf_counter() - t0, expected)


# PostgreSQL: the items are made in worker processes (making and serialising an item
# is ~0.4 ms of Python) and written with COPY, the rows exactly as SqlStore.upsert_step
# writes them (the same index values and item text, one station row per title).
PG_CHUNK = 5000
_worker_people: list[Person] = []
_worker_wl: Path | None = None


def _init_worker(n: int, seed: int, wl_dir: Path | None = None) -> None:
    global _worker_people, _worker_wl
    _worker_people = make_people(random.Random(seed * 7919 + n), max(1, n * 6 // 10))
    _worker_wl = wl_dir


def _make_rows(task: tuple[int, int, int, int, int]) -> tuple[
        list[tuple[Any, ...]], list[tuple[Any, ...]], dict[str, str]]:
    from bridge.store.items import dumps_item, index_values
    from bridge.store.sql import _STEP_COLUMNS

    lo, hi, n, seed, days = task
    rng = random.Random((seed * 7919 + n) * 1_000_003 + lo)
    now = "2025-06-01T00:00:00.000000Z"
    steps, stations, expected = [], [], {}
    for i in range(lo, hi):
        ds = make_item(i, rng, rng.choice(_worker_people), days)
        if is_hit(ds):
            expected[str(ds.AccessionNumber)] = str(ds.PatientName)
        idx = index_values(ds)
        step_id = i + 1
        steps.append((step_id, *(getattr(idx, c) for c in _STEP_COLUMNS), dumps_item(ds),
                      now, now))
        stations.extend((step_id, aet, idx.sps_start_date, idx.sps_start_time)
                        for aet in idx.station_aets)
    return steps, stations, expected


def _progress(done: int, reported: int, n: int, t0: float) -> int:
    """A line every 100,000 items loaded; the count last reported."""
    if done - reported < 100_000 or done >= n:
        return reported
    elapsed = time.perf_counter() - t0
    print(f"  ... {done:,} items in {elapsed:.0f} s ({done / elapsed:,.0f}/s)", flush=True)
    return done


def _make_candidates(task: tuple[int, int, int, int, int]) -> tuple[
        list[Any], dict[str, str], set[str]]:
    """Worker: items made, and checked as ``mwl-bridge import`` checks a .wl file's
    (and written as .wl files when the peers run: the same items)."""
    import json

    from bridge.orders.wlfile import ItemRules, check_tree
    from bridge.store.items import dumps_item

    lo, hi, n, seed, days = task
    rng = random.Random((seed * 7919 + n) * 1_000_003 + lo)
    rules = ItemRules()
    out, expected, file_hits = [], {}, set()
    for i in range(lo, hi):
        ds = make_item(i, rng, rng.choice(_worker_people), days)
        if is_hit(ds):
            expected[str(ds.AccessionNumber)] = str(ds.PatientName)
        if _worker_wl is not None:
            peer_servers.write_wl(_worker_wl, i, ds)
            if is_file_hit(ds):
                file_hits.add(str(ds.AccessionNumber))
        text = dumps_item(ds)  # then checked as the lean .wl reader's items are
        out.append(check_tree(json.loads(text), text, f"bench item {i}", rules))
    return out, expected, file_hits


def bulk_load_import(db: Path, n: int, per_station_day: int, seed: int, dsn: str | None,
                     *, wl_dir: Path | None = None) -> Loaded:
    """The bulk path of ``mwl-bridge import`` (bridge/orders/bulk.py): items made and
    checked in two worker processes, written in batches through Store.write."""
    import multiprocessing

    from bridge.orders.bulk import BATCH, SQLITE_CACHE_KIB, DeadLetters, ImportReport, load_batch
    from bridge.orders.settings import OrdersSettings

    days = max(30, math.ceil(n / (len(STATIONS) * per_station_day)))
    store = open_bench_store(db, dsn)
    store.migrate()
    settings = OrdersSettings()
    report = ImportReport(DeadLetters(db.parent / "bench-rejects.jsonl"))
    tasks = [(lo, min(lo + BATCH, n), n, seed, days) for lo in range(0, n, BATCH)]
    expected: dict[str, str] = {}
    file_hits: set[str] = set()
    if wl_dir is not None:
        wl_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    done, reported = 0, 0
    try:
        with multiprocessing.get_context("fork").Pool(
                2, initializer=_init_worker, initargs=(n, seed, wl_dir)) as pool:
            for batch, hits, fhits in pool.imap(_make_candidates, tasks):
                report.add(load_batch(store, batch, settings, sqlite_cache_kib=SQLITE_CACHE_KIB))
                expected.update(hits)
                file_hits |= fhits
                done += len(batch)
                reported = _progress(done, reported, n, t0)
        count = store.count_steps()
    finally:
        store.close()
        report.dead_letters.close()
    if report.rejected_total or count != n:
        raise RuntimeError(f"store holds {count} items after loading {n}; rejected: "
                           f"{dict(report.rejected)}")
    return Loaded(n, days, time.perf_counter() - t0, expected,
                  file_hits if wl_dir is not None else None)


def bulk_load_postgresql(dsn: str, n: int, per_station_day: int, seed: int) -> Loaded:
    import multiprocessing

    import psycopg

    from bridge.store.postgresql import PostgresStore
    from bridge.store.sql import _STEP_COLUMNS

    days = max(30, math.ceil(n / (len(STATIONS) * per_station_day)))
    store = PostgresStore(dsn)
    store.migrate()
    store.close()
    tasks = [(lo, min(lo + PG_CHUNK, n), n, seed, days) for lo in range(0, n, PG_CHUNK)]
    expected: dict[str, str] = {}
    step_cols = ", ".join(("id", *_STEP_COLUMNS, "item", "created_at", "updated_at"))
    t0 = time.perf_counter()
    done, reported = 0, 0
    with psycopg.connect(dsn) as conn, multiprocessing.get_context("fork").Pool(
            2, initializer=_init_worker, initargs=(n, seed)) as pool:
        cur = conn.cursor()
        for steps, stations, hits in pool.imap(_make_rows, tasks):
            with cur.copy(f"COPY procedure_step ({step_cols}) FROM STDIN") as cp:
                for row in steps:
                    cp.write_row(row)
            with cur.copy("COPY procedure_step_station (step_id, aet, sps_start_date, "
                          "sps_start_time) FROM STDIN") as cp:
                for row in stations:
                    cp.write_row(row)
            conn.commit()
            expected.update(hits)
            done += len(steps)
            reported = _progress(done, reported, n, t0)
        cur.execute("SELECT setval(pg_get_serial_sequence('procedure_step', 'id'), %s)",
                    (max(n, 1),))
        count = int(cur.execute("SELECT COUNT(*) FROM procedure_step").fetchone()[0])
        conn.commit()
    if count != n:
        raise RuntimeError(f"store holds {count} items after loading {n}")
    return Loaded(n, days, time.perf_counter() - t0, expected)


# --- DCMTK clients ---

def query_file(folder: Path, date: str) -> Path:
    dump = folder / f"query-{date}.dump"
    dump.write_text(QUERY_DUMP.format(modality=QUERY_MODALITY, station=QUERY_STATION,
                                      date=date), encoding="ascii")
    out = folder / f"query-{date}.dcm"
    subprocess.run([str(DCMTK / "dump2dcm"), "--write-xfer-little", str(dump), str(out)],
                   check=True, capture_output=True)
    return out


def client_args(aec: str) -> list[str]:
    return ["-aec", aec, "-to", "60", "-ta", "60", "-td", "600"]


def timed(cmd: list[str], *, expect_ok: bool = True) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, env=dcmtk_env())
    elapsed = time.perf_counter() - t0
    if expect_ok and res.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({res.returncode}): "
                           f"{res.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def series(fn: Callable[[], float], samples: int) -> list[float]:
    for _ in range(WARMUP):
        fn()
    return [fn() * 1000 for _ in range(samples)]


def answers(port: int, aec: str, query: Path, folder: Path) -> dict[str, str]:
    """accession -> decoded patient name of every answer, extracted by findscu -X."""
    out = folder / f"answers-{time.monotonic_ns()}"
    out.mkdir()
    subprocess.run([str(DCMTK / "findscu"), "-W", "-X", "-od", str(out), *client_args(aec),
                    "127.0.0.1", str(port), str(query)],
                   check=True, capture_output=True, env=dcmtk_env())
    result = {}
    for path in sorted(out.glob("rsp*.dcm")):
        ds = dcmread(path)
        result[str(ds.AccessionNumber)] = str(ds.PatientName)
    return result


def store_query_ms(db: Path, query: Path, samples: int, dsn: str | None = None
                   ) -> tuple[float, float, int]:
    """The store's share of the query, in-process: (total ms, JSON decode ms, rows).

    The identifier goes through the worklist's own planner, so the store sees
    exactly the query the SCP gives it; SQL time is total minus decode.
    """
    from bridge.store.items import dumps_item, loads_item
    from bridge.worklist.query import build_query
    from bridge.worklist.settings import WorklistSettings

    planned = build_query(dcmread(query), WorklistSettings())
    store = open_bench_store(db, dsn)
    try:
        times, rows = [], []
        for _ in range(samples + WARMUP):
            t0 = time.perf_counter()
            rows = list(store.query(planned.query))
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        store.close()
    texts = [dumps_item(ds) for ds in rows]
    t0 = time.perf_counter()
    for _ in range(samples):
        for text in texts:
            loads_item(text)
    decode = (time.perf_counter() - t0) * 1000 / samples
    return median(times[WARMUP:]), decode, len(rows)


def analyze(db: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute("ANALYZE")
        conn.commit()
    finally:
        conn.close()


def floor(samples: int, query: Path) -> tuple[list[float], list[float]]:
    """The clients alone: same commands against a loopback port nobody listens on."""
    port = free_port()
    echo = [str(DCMTK / "echoscu"), *client_args("NOBODY"), "127.0.0.1", str(port)]
    find = [str(DCMTK / "findscu"), "-W", "-sr", *client_args("NOBODY"), "127.0.0.1",
            str(port), str(query)]
    return (series(lambda: timed(echo, expect_ok=False), samples),
            series(lambda: timed(find, expect_ok=False), samples))


@dataclass
class SizeResult:
    loaded: Loaded
    echo: list[float]
    find: list[float]
    find_empty: list[float]
    answers_ok: bool
    answer_count: int
    names_ok: bool
    server_cpu_ms_per_find: float
    store_ms: float
    decode_ms: float
    rss_mb: float = 0.0  # the daemon's, after the series
    peak_rss_mb: float = 0.0
    rss_queries: int = 0  # station-day queries answered before rss_mb was read
    peers: list[PeerResult] = field(default_factory=list)
    echo_side: list[float] = field(default_factory=list)  # ours, alternating with the peers'


@dataclass
class PeerResult:
    """A file-based server on the same items and queries (bench/peers.py)."""
    name: str
    echo: list[float] = field(default_factory=list)
    find: list[float] = field(default_factory=list)
    find_empty: list[float] = field(default_factory=list)
    answer_count: int = 0
    answers_ok: bool = False
    peak_rss_mb: float = 0.0  # the process tree's, sampled during the series
    skipped: str = ""  # why it did not run


def db_size_mb(db: Path, dsn: str | None) -> float:
    if dsn is None:
        return db.stat().st_size / 1e6
    import psycopg

    with psycopg.connect(dsn) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())")
                   .fetchone()[0]) / 1e6


@dataclass
class Extra:
    """What runs beside the daemon's series: the peers, the RSS queries."""
    peers: tuple[str, ...] = ()
    peer_samples: int = 10
    rss_queries: int = 0


def run_size(root: Path, n: int, samples: int, per_station_day: int, seed: int,
             queries: tuple[Path, Path], *, with_analyze: bool, backend: str = "sqlite",
             load: str | None = None, extra: Extra | None = None) -> SizeResult:
    if backend == "postgresql":
        with fresh_database("bench_cfind") as dsn:
            return _run_size(root, n, samples, per_station_day, seed, queries,
                             with_analyze=with_analyze, dsn=dsn, load=load, extra=extra)
    return _run_size(root, n, samples, per_station_day, seed, queries,
                     with_analyze=with_analyze, dsn=None, load=load, extra=extra)


def _run_size(root: Path, n: int, samples: int, per_station_day: int, seed: int,
              queries: tuple[Path, Path], *, with_analyze: bool, dsn: str | None,
              load: str | None = None, extra: Extra | None = None) -> SizeResult:
    extra = extra or Extra()
    folder = root / f"n{n}"
    data = folder / "data"
    data.mkdir(parents=True)
    db = data / "bridge.sqlite3"
    print(f"[{n:,} items] loading{' (+ .wl files)' if extra.peers else ''} ...", flush=True)
    loaded = bulk_load(db, n, per_station_day, seed, dsn, load=load,
                       wl_dir=peer_servers.wl_folder(folder) if extra.peers else None)
    print(f"[{n:,} items] loaded ({load or 'default'}) in {loaded.seconds:.1f} s "
          f"({n / loaded.seconds:,.0f} items/s), "
          f"{loaded.days} days x {len(STATIONS)} stations, "
          f"{len(loaded.expected)} expected answers; DB {db_size_mb(db, dsn):,.0f} MB",
          flush=True)
    if dsn is not None:
        vacuum_analyze(dsn)
    elif with_analyze:
        analyze(db)
    store_ms, decode_ms, store_n = store_query_ms(db, queries[0], samples, dsn)
    daemon = start_daemon(write_config(folder, data, store_yaml(dsn)), data)
    try:
        port, aec = daemon.dicom_port, daemon.ae_title
        got = answers(port, aec, queries[0], folder)
        echo_cmd = [str(DCMTK / "echoscu"), *client_args(aec), "127.0.0.1", str(port)]

        def find_cmd(q: Path) -> list[str]:
            return [str(DCMTK / "findscu"), "-W", "-sr", *client_args(aec), "127.0.0.1",
                    str(port), str(q)]

        echo = series(lambda: timed(echo_cmd), samples)
        cpu0 = daemon.cpu()
        find = series(lambda: timed(find_cmd(queries[0])), samples)
        cpu1 = daemon.cpu()
        find_empty = series(lambda: timed(find_cmd(queries[1])), samples)
        if extra.rss_queries:
            rss_series(port, aec, folder, extra.rss_queries)
        rss, peak = rss_mb(daemon.proc.pid)
        # The peers run while the daemon is still up: their C-ECHOs alternate with its.
        peer_results, echo_side = run_peers(extra, folder, queries, samples, loaded,
                                            lambda: timed(echo_cmd))
    finally:
        rc = daemon.stop()
    if rc != 0:
        print(f"warning: daemon exit code {rc}; last log lines:", *daemon.log[-10:], sep="\n  ")
    if store_n != len(loaded.expected):
        print(f"warning: in-process store query returned {store_n}, expected "
              f"{len(loaded.expected)}")
    return SizeResult(
        loaded=loaded, echo=echo, find=find, find_empty=find_empty,
        answers_ok=set(got) == set(loaded.expected), answer_count=len(got),
        names_ok=got == loaded.expected,
        server_cpu_ms_per_find=(cpu1 - cpu0) * 1000 / (samples + WARMUP), store_ms=store_ms,
        decode_ms=decode_ms, rss_mb=rss, peak_rss_mb=peak, rss_queries=extra.rss_queries,
        peers=peer_results, echo_side=echo_side)


def station_queries(folder: Path) -> list[Path]:
    """One query file per station: that station, its modality, the benchmark day."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for station, modality, *_ in STATIONS:
        dump = folder / f"q-{station}.dump"
        dump.write_text(QUERY_DUMP.format(modality=modality, station=station, date=QUERY_DATE),
                        encoding="ascii")
        out = folder / f"q-{station}.dcm"
        subprocess.run([str(DCMTK / "dump2dcm"), "--write-xfer-little", str(dump), str(out)],
                       check=True, capture_output=True)
        paths.append(out)
    return paths


def rss_series(port: int, aec: str, folder: Path, count: int) -> None:
    """``count`` station-day queries, each station in turn (~17 answers each), two
    consoles at a time: the daemon's memory after a working day's polls."""
    import threading

    paths = station_queries(folder / "rss-queries")
    failures: list[str] = []

    def console(k: int) -> None:
        for i in range(k, count, 2):
            cmd = [str(DCMTK / "findscu"), "-W", *client_args(aec), "127.0.0.1", str(port),
                   str(paths[i % len(paths)])]
            try:
                timed(cmd)
            except RuntimeError as exc:
                failures.append(str(exc))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=console, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"  {count:,} station-day queries in {time.perf_counter() - t0:.0f} s, "
          f"{len(failures)} failed", flush=True)
    if failures:
        raise RuntimeError(f"{len(failures)} queries failed: {failures[0]}")


def run_peers(extra: Extra, folder: Path, queries: tuple[Path, Path], samples: int,
              loaded: Loaded, our_echo: Callable[[], float]
              ) -> tuple[list[PeerResult], list[float]]:
    """The file-based servers on the same items (bench/peers.py), all started at once:
    ``samples`` rounds of C-ECHO alternating ours and each peer's (side by side: the
    machine's drift reaches all alike), then each peer's C-FIND series, its process
    tree's RSS sampled meanwhile. Returns the peers' results and our alternated echoes."""
    results = [PeerResult(name, skipped=peer_servers.missing(name) or "")
               for name in extra.peers]
    for r in results:
        if r.skipped:
            print(f"[{r.name}] skipped: {r.skipped}", flush=True)
    running: list[tuple[PeerResult, peer_servers.Peer]] = []
    echo_side: list[float] = []
    try:
        for r in results:
            if not r.skipped:
                print(f"[{r.name}] starting on {loaded.items:,} .wl files ...", flush=True)
                running.append((r, peer_servers.start(r.name, folder)))
        if not running:
            return results, echo_side

        def echo_of(p: peer_servers.Peer) -> Callable[[], float]:
            cmd = [str(DCMTK / "echoscu"), *client_args(p.ae_title), "127.0.0.1", str(p.port)]
            return lambda: timed(cmd)

        echoes = [echo_of(p) for _, p in running]
        for k in range(WARMUP + samples):
            ours = our_echo() * 1000
            theirs = [fn() * 1000 for fn in echoes]
            if k >= WARMUP:
                echo_side.append(ours)
                for (r, _), t in zip(running, theirs, strict=True):
                    r.echo.append(t)
        for r, p in running:
            print(f"[{r.name}] C-FIND series ...", flush=True)
            got = answers(p.port, p.ae_title, queries[0], folder)
            r.answer_count = len(got)
            r.answers_ok = set(got) == (loaded.file_hits or set())

            def find_cmd(q: Path, p: peer_servers.Peer = p) -> list[str]:
                return [str(DCMTK / "findscu"), "-W", "-sr", *client_args(p.ae_title),
                        "127.0.0.1", str(p.port), str(q)]

            with peer_servers.RssSampler(p.proc.pid) as rss:
                r.find = series(lambda: timed(find_cmd(queries[0])), extra.peer_samples)
                r.find_empty = series(lambda: timed(find_cmd(queries[1])), extra.peer_samples)
            r.peak_rss_mb = rss.peak
    finally:
        for _, p in running:
            p.stop()
    return results, echo_side


def load_only(sizes: Sequence[int], per_station_day: int, seed: int, backend: str,
              load: str) -> int:
    """Bulk load alone: items/s for each size, on a fresh store each time."""
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
            db = Path(tmp) / "bridge.sqlite3"
            if backend == "postgresql":
                with fresh_database("bench_load") as dsn:
                    loaded = bulk_load(db, n, per_station_day, seed, dsn, load=load)
            else:
                loaded = bulk_load(db, n, per_station_day, seed, None, load=load)
        print(f"{n:,} items, {backend}, load {load}: {loaded.seconds:.1f} s, "
              f"{n / loaded.seconds:,.0f} items/s", flush=True)
    return 0


def print_peers(results: list[SizeResult]) -> bool:
    """The file-based servers next to ours, per size; False if one answered wrongly."""
    ok = True
    for r in results:
        if not r.peers:
            continue
        n = r.loaded.items
        print()
        print(f"{n:,} items, the same items and queries; C-ECHO rounds alternate the "
              f"servers ({len(r.echo_side)} rounds), C-FIND one server after the other "
              f"(peers: {len(r.peers[0].find) or '-'} samples); FIND/ECHO of each server "
              "uses its alternated C-ECHO; RSS: ours the daemon's peak, the peers' process "
              "tree's peak (sampled)")
        print(f"{'server':<10} {'answers':>8} {'C-ECHO p50':>10} {'C-FIND p50':>10} "
              f"{'0-ans p50':>9} {'FIND/ECHO':>9} {'ms/answer':>9} {'RSS MB':>7}")
        rows = [("ours", r.echo_side or r.echo, r.find, r.find_empty,
                 f"{r.answer_count}/{len(r.loaded.expected)}", r.peak_rss_mb,
                 len(r.loaded.expected))]
        file_hits = len(r.loaded.file_hits or ())
        for p in r.peers:
            if p.skipped:
                print(f"{p.name:<10} skipped: {p.skipped}")
                continue
            ok &= p.answers_ok
            rows.append((p.name, p.echo, p.find, p.find_empty,
                         f"{p.answer_count}/{file_hits}", p.peak_rss_mb, file_hits))
        for name, echo, find, empty, ans, rss, hits in rows:
            print(f"{name:<10} {ans:>8} {median(echo):>10.1f} {median(find):>10.1f} "
                  f"{median(empty):>9.1f} {median(find) / median(echo):>9.2f} "
                  f"{(median(find) - median(empty)) / max(1, hits):>9.2f} {rss:>7.0f}")
        for p in r.peers:
            if p.skipped:
                continue
            echo = r.echo_side or r.echo
            print(f"  ours / {p.name}: C-ECHO p50 {median(echo) / median(p.echo):.2f}, "
                  f"C-FIND p50 {median(r.find) / median(p.find):.3f} "
                  f"({median(p.find) / median(r.find):.1f}x faster), "
                  f"RSS {r.peak_rss_mb / max(p.peak_rss_mb, 0.1):.1f}x"
                  f"{'' if p.answers_ok else '  WRONG ANSWERS'}")
            if p.name == "wlmscpfs":
                print(ratio_line(f"own C-ECHO p50 / wlmscpfs C-ECHO p50 at {n:,} items",
                                 median(echo) / median(p.echo), TARGET_ECHO_VS_WLMSCPFS,
                                 higher_is_better=False))
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--per-station-day", type=int, default=17,
                    help="average items per station and day; sets the number of days "
                         "(at least 30)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                    help="the daemon's store; postgresql: a new database per size on "
                         "127.0.0.1:5432 (dropped afterwards)")
    ap.add_argument("--analyze", action="store_true",
                    help="what-if: run SQLite ANALYZE on the loaded store before starting the "
                         "daemon (the daemon does not do this itself)")
    ap.add_argument("--load", choices=LOADS, default=None,
                    help="how the store is filled: import (default on SQLite): mwl-bridge "
                         "import's bulk path, with the order checks; copy (default on "
                         "PostgreSQL): COPY without checks; upsert: one upsert_step per item")
    ap.add_argument("--load-only", action="store_true",
                    help="only load each size and print items/s (no daemon, no queries)")
    ap.add_argument("--peers", nargs="*", choices=peer_servers.PEERS, default=None,
                    help="file-based servers run on the same items and queries (bench/"
                         "peers.py); default: both with --load import, none otherwise; "
                         "--peers with no name: none")
    ap.add_argument("--peer-samples", type=int, default=5,
                    help="samples per series for each peer (they read every .wl file per "
                         "query: seconds each at 100k)")
    ap.add_argument("--rss-queries", type=int, default=0,
                    help="station-day queries the daemon answers before its RSS is read "
                         "(issue 16: 1,000 at 1M items, RSS <= 150 MB)")
    args = ap.parse_args(argv)
    if args.load is None:
        args.load = "copy" if args.backend == "postgresql" else "import"
    if args.load == "copy" and args.backend != "postgresql":
        ap.error("--load copy needs --backend postgresql")
    if args.peers is None:
        args.peers = list(peer_servers.PEERS) if args.load == "import" else []
    elif args.peers and args.load != "import":
        ap.error("--peers needs --load import (the .wl files are written by that path)")
    if args.load_only:
        return load_only(args.sizes, args.per_station_day, args.seed, args.backend, args.load)
    print(f"C-FIND benchmark: DCMTK 3.6.7 clients as whole processes, TCP_NODELAY=1; "
          f"query {QUERY_STATION} / {QUERY_DATE} / {QUERY_MODALITY} with 13 return keys; "
          f"{WARMUP} warm-ups + {args.samples} samples per series; "
          f"{'PostgreSQL' if args.backend == 'postgresql' else 'SQLite'} store"
          f"{' (ANALYZE run after loading)' if args.analyze else ''}")
    results: list[SizeResult] = []
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-cfind-") as tmp:
        root = Path(tmp)
        queries = (query_file(root, QUERY_DATE), query_file(root, EMPTY_DATE))
        echo_floor, find_floor = floor(args.samples, queries[0])
        for n in args.sizes:
            results.append(run_size(root, n, args.samples, args.per_station_day, args.seed,
                                    queries, with_analyze=args.analyze,
                                    backend=args.backend, load=args.load,
                                    extra=Extra(tuple(args.peers), args.peer_samples,
                                                args.rss_queries)))
    print()
    print(f"client floor (nothing listening): echoscu p50 {median(echo_floor):.1f} ms, "
          f"findscu p50 {median(find_floor):.1f} ms")
    print(f"{'items':>8} {'answers':>8} {'C-ECHO p50/p95':>15} {'C-FIND p50/p95':>15} "
          f"{'0-answer FIND':>14} {'FIND/ECHO':>9} {'srv CPU':>8} {'store':>7} "
          f"{'RSS/peak':>11}")
    print(f"{'':>8} {'got/exp':>8} {'ms':>15} {'ms':>15} {'p50 ms':>14} {'p50':>9} "
          f"{'ms/find':>8} {'ms':>7} {'MB':>11}")
    for r in results:
        exp = len(r.loaded.expected)
        ok &= r.answers_ok and r.names_ok
        print(f"{r.loaded.items:>8,} {f'{r.answer_count}/{exp}':>8} "
              f"{f'{median(r.echo):.1f}/{pct(r.echo, 95):.1f}':>15} "
              f"{f'{median(r.find):.1f}/{pct(r.find, 95):.1f}':>15} "
              f"{median(r.find_empty):>14.1f} {median(r.find) / median(r.echo):>9.2f} "
              f"{r.server_cpu_ms_per_find:>8.1f} {r.store_ms:>7.2f} "
              f"{f'{r.rss_mb:.0f}/{r.peak_rss_mb:.0f}':>11}"
              f"{'' if r.answers_ok else '  WRONG ANSWERS'}"
              f"{'' if r.names_ok or not r.answers_ok else '  NAMES DIFFER'}")
    print()
    for r in results:
        n = max(1, len(r.loaded.expected))
        per_answer = (median(r.find) - median(r.find_empty)) / n
        print(f"{r.loaded.items:,} items: C-FIND - C-ECHO = "
              f"{median(r.find) - median(r.echo):.1f} ms, of which the store in-process "
              f"{r.store_ms:.2f} ms (SQL {r.store_ms - r.decode_ms:.2f} + JSON decode "
              f"{r.decode_ms:.2f}); per answer {per_answer:.2f} ms (vs the 0-answer query)")
    big = max(results, key=lambda r: r.loaded.items)
    pg = args.backend == "postgresql"
    print(ratio_line(f"C-FIND p50 / C-ECHO p50 at {big.loaded.items:,} items",
                     median(big.find) / median(big.echo),
                     TARGET_RATIO_PG if pg else TARGET_RATIO, higher_is_better=False))
    print(ratio_line(f"cost per answer (ms) at {big.loaded.items:,} items",
                     (median(big.find) - median(big.find_empty))
                     / max(1, len(big.loaded.expected)),
                     TARGET_PER_ANSWER_MS, higher_is_better=False))
    if pg or big.rss_queries:
        print(ratio_line(f"daemon peak RSS (MB) at {big.loaded.items:,} items, after "
                         f"{big.rss_queries + 3 * (args.samples + WARMUP) + 1:,} queries "
                         "and echoes", big.peak_rss_mb, TARGET_RSS_MB, higher_is_better=False))
    ok &= print_peers(results)
    print("check: answers = expected accession numbers, names decoded (ISO_IR 192):",
          "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
