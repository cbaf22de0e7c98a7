"""``mwl-bridge import``: load the worklist of the server being replaced.

    mwl-bridge import FOLDER|FILE ... [--format auto|wl|hl7] [--dead-letters FILE]
                                      [--workers N] [--no-progress]

A folder is read for worklist files (``*.wl``, as DCMTK ``wlmscpfs`` and
Orthanc's worklist plugin keep them; subfolders too), a ``.wl`` file is one,
any other file is a file of HL7 messages (a batch file, MLLP frames or plain
segments). Worklist files are loaded in batches (bridge/orders/bulk.py); HL7
messages go through the daemon's own intake (bridge/orders/bulk_hl7.py). The
configured store is used, with the daemon running or not. The rejects are
written to a dead-letter file (JSON Lines, 0600) and counted by reason in the
summary; the exit status is 0 when everything was loaded, 1 when something was
rejected or a file had a problem, 2 for a configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.app.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    from_the_store,
    open_configured_store,
    settings_from,
    store_failure,
)

if TYPE_CHECKING:
    from bridge.app.settings import Settings
    from bridge.orders.bulk import ImportReport
    from bridge.store import Store

HL7_BATCH = 500  # messages per transaction of the intake's writer


def add_import_commands(sub: Any) -> None:
    """Register ``import`` on the CLI's subcommand parser."""
    p = sub.add_parser(
        "import", help="load .wl worklist files (wlmscpfs, Orthanc) or HL7 message files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="a folder of .wl files, a .wl file, or a file of HL7 messages")
    p.add_argument("--format", choices=("auto", "wl", "hl7"), default="auto",
                   help="auto (default): folders and *.wl are worklist files, other files HL7")
    p.add_argument("--dead-letters", type=Path, default=None, metavar="FILE",
                   help="where the rejects go (default: DATA_DIR/import-rejects-"
                        "<time>.jsonl)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes reading .wl files (default: the number of cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_import)


def _sort(paths: list[Path], fmt: str) -> tuple[list[Path], list[Path], list[str]]:
    """(worklist files, HL7 files, problems): what each path is."""
    from bridge.orders.bulk import wl_files

    wl: list[Path] = []
    hl7: list[Path] = []
    problems: list[str] = []
    for path in paths:
        if path.is_dir():
            if fmt == "hl7":
                problems.append(f"{path}: a folder; --format hl7 takes files")
                continue
            found = wl_files(path)
            if not found:
                problems.append(f"{path}: no .wl file in this folder")
            wl.extend(found)
        elif not path.is_file():
            problems.append(f"{path}: no such file or folder")
        elif fmt == "wl" or (fmt == "auto" and path.suffix.lower() == ".wl"):
            wl.append(path)
        else:
            hl7.append(path)
    return wl, hl7, problems


@contextmanager
def _progress(total: int, label: str, enabled: bool) -> Iterator[Callable[[int], None]]:
    if not enabled or total == 0:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _import(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    if args.workers < 1:
        print("--workers is 1 or more", file=sys.stderr)
        return EXIT_CONFIG
    wl, hl7, problems = _sort(list(args.paths), args.format)
    mappings = None
    if hl7:
        from bridge.mapping import MappingLoadError
        from bridge.mapping.loader import load_configured

        try:
            mappings = load_configured(settings.mapping)
        except MappingLoadError as exc:
            print("mapping error:", file=sys.stderr)
            for err in exc.errors:
                print(f"  {err}", file=sys.stderr)
            return EXIT_CONFIG
    from bridge.orders.bulk import DeadLetters, ImportReport
    from bridge.store import StoreError
    from bridge.store.private import make_private_dir

    dead = args.dead_letters or (
        settings.data_dir / f"import-rejects-{datetime.now():%Y%m%dT%H%M%S}.jsonl")
    make_private_dir(dead.parent)
    show = not args.no_progress and sys.stderr.isatty()
    wl_report = ImportReport(DeadLetters(dead))
    hl7_report = ImportReport(wl_report.dead_letters)
    try:
        store = open_configured_store(settings)
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    started = time.perf_counter()
    try:
        if wl:
            _import_wl(store, settings, wl, wl_report, args.workers, show)
        wl_seconds = time.perf_counter() - started
        if hl7 and mappings is not None:
            from bridge.app.services import replay_intake
            from bridge.orders.bulk_hl7 import import_hl7

            count = _count_messages(hl7)

            async def run() -> None:
                async with replay_intake(settings, store, mappings,
                                         max_batch=HL7_BATCH) as ingest:
                    with _progress(count, "HL7 messages", show) as advance:
                        adt = settings.orders.adt
                        await import_hl7(hl7, ingest.process, hl7_report,
                                         barrier_events=[*adt.merge_events,
                                                         *adt.change_id_events],
                                         max_bytes=settings.mllp.max_frame_bytes,
                                         advance=advance)

            asyncio.run(run())
    except (BrokenProcessPool, KeyboardInterrupt) as exc:
        what = "interrupted" if isinstance(exc, KeyboardInterrupt) else \
            "a worker process reading .wl files died"
        print(f"{what}; the batches committed before stay loaded: run the import again "
              "(what is already stored counts as unchanged)", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        # A write job's own error (sqlite3's "attempt to write a readonly database")
        # as well as a StoreError; an error of the reading stays a traceback (a bug).
        if not from_the_store(exc):
            raise
        print(store_failure(exc, "the batches committed before it stay loaded"),
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        _audit_import(settings, store, args, wl_report if wl else None,
                      hl7_report if hl7 else None, dead)
        store.close()
        wl_report.dead_letters.close()
    hl7_seconds = time.perf_counter() - started - wl_seconds
    if wl:
        _summary(f"{len(wl)} worklist file(s)", "item(s)", wl_report, wl_seconds)
    if hl7:
        _summary(f"{len(hl7)} HL7 file(s)", "message(s)", hl7_report, hl7_seconds)
    problems += wl_report.problems + hl7_report.problems
    if problems:
        print("problems:")
        for problem in problems:
            print(f"  {problem}")
    if wl_report.dead_letters.count:
        print(f"dead letters: {dead} ({wl_report.dead_letters.count})")
    bad = problems or wl_report.rejected_total or hl7_report.rejected_total
    return EXIT_FAILED if bad else EXIT_OK


def _audit_import(settings: Settings, store: Store, args: argparse.Namespace,
                  wl: ImportReport | None, hl7: ImportReport | None, dead: Path) -> None:
    """One Order Record per run and format (docs/audit.md: not one per item), with the
    OS user as the requestor; also after a failure, with what was committed."""
    from bridge.audit import events
    from bridge.audit.offline import ROLE, OfflineAudit

    audit = OfflineAudit.from_settings(settings)
    paths = tuple(str(p.resolve()) for p in args.paths)
    built = [events.bulk_import(
        audit.local, user=audit.user, host=audit.host, paths=paths, fmt=fmt,
        loaded=r.loaded, unchanged=r.unchanged, rejected=r.rejected_total,
        dead_letters=str(dead) if r.rejected_total else "", role=ROLE)
        for fmt, r in (("wl", wl), ("hl7", hl7)) if r is not None]
    try:
        audit.record(store, built)
    except Exception as exc:
        # Called in _import's finally: a store failure escaping would replace its exit
        # code (and the import's own store error line) with a traceback.
        if not from_the_store(exc):
            raise
        print(store_failure(exc, "the import is not audited"), file=sys.stderr)


def _import_wl(store: Store, settings: Settings, paths: list[Path], report: ImportReport,
               workers: int, show: bool) -> None:
    from bridge.orders.bulk import POOL_FROM, import_wl

    with _progress(len(paths), "worklist files", show) as advance:
        if workers == 1 or len(paths) < POOL_FROM:
            import_wl(store, paths, settings.orders, report, advance=advance)
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the progress bar's thread makes fork unsafe.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")
                                 ) as pool:
            import_wl(store, paths, settings.orders, report, pool=pool, advance=advance)


def _count_messages(files: list[Path]) -> int:
    total = 0
    for path in files:
        try:
            with path.open("rb") as f:
                total += sum(chunk.count(b"MSH") for chunk in iter(lambda: f.read(1 << 20),
                                                                   b""))
        except OSError:
            continue
    return total


def _summary(what: str, unit: str, report: ImportReport, seconds: float) -> None:
    done = report.loaded + report.unchanged + report.rejected_total
    rate = f", {done / seconds:,.0f} {unit}/s" if seconds > 0 and done else ""
    print(f"{what}: {done} {unit} in {seconds:.1f} s{rate}")
    print(f"  loaded     {report.loaded}")
    if report.unchanged:
        print(f"  unchanged  {report.unchanged} (already stored with the same content)")
    for flag, n in sorted(report.flagged.items()):
        print(f"  flagged    {n} {flag}")
    print(f"  rejected   {report.rejected_total}")
    for kind, n in report.rejected.most_common():
        print(f"    {n:>6}  {kind}")
