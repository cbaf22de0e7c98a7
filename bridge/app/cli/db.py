"""``mwl-bridge db copy``: move a site's whole state into a new database (growing out of
SQLite into PostgreSQL).

    mwl-bridge db copy --from sqlite:PATH --to postgresql:DSN [--batch N] [--allow-running]

``DSN`` is a libpq connection string (``"host=db dbname=mwl user=mwl"``) or a URI
(``--to postgresql://mwl@db/mwl``). Both stores are migrated to this release's schema
first (the source as the daemon would at its next start), then every table is copied
(bridge/store/dbcopy.py): progress on standard error, and at the end the row counts of
both sides per table on standard output. Exit 0 when every count matches; 1 when the
copy was refused (the target is not empty, an instance still runs on the source) or a
count differs; 2 for a usage error. The command does not read the config file.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from bridge.store.dbcopy import CopyReport
    from bridge.store.sql import SqlStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_db_commands(sub: Any) -> None:
    """Register ``db`` on the CLI's subcommand parser."""
    db = sub.add_parser("db", help="database maintenance: copy a site into a new database")
    cmds = db.add_subparsers(dest="db_command", metavar="ACTION")
    db.set_defaults(run=lambda args: _help(db))

    cp = cmds.add_parser(
        "copy", help="copy every table (worklist, message log, patients, MPPS, outbox, audit, "
                     "instances) into a new, empty database, with ids kept",
        description="Copy a site's whole state into a new, empty database, e.g. "
                    "--from sqlite:data/bridge.sqlite3 --to postgresql:'host=db dbname=mwl "
                    "user=mwl'. Stop every instance first.")
    cp.add_argument("--from", dest="source", required=True, metavar="sqlite:PATH",
                    help="the store to copy: sqlite:PATH or postgresql:DSN")
    cp.add_argument("--to", dest="target", required=True, metavar="postgresql:DSN",
                    help="the new, empty database: postgresql:DSN (or sqlite:PATH)")
    cp.add_argument("--batch", type=int, default=5000, help="rows per batch (default 5000)")
    cp.add_argument("--allow-running", action="store_true",
                    help="copy even though an instance's heartbeat on the source is recent")
    cp.set_defaults(run=_copy)

    bk = cmds.add_parser(
        "backup", help="snapshot the configured SQLite store into a new file (0600), "
                       "while the daemon runs; print its size and rows per table",
        description="A consistent copy of the store (SQLite's online backup API) that the "
                    "daemon may keep writing during; verified before it is named PATH. "
                    "PostgreSQL: use pg_dump (docs/operations.md, Security).")
    bk.add_argument("path", type=Path, metavar="PATH", help="the new backup file")
    bk.set_defaults(run=_backup)

    vf = cmds.add_parser(
        "verify", help="check a SQLite store or backup: integrity, schema version, counts")
    vf.add_argument("path", type=Path, metavar="PATH", help="a SQLite file")
    vf.set_defaults(run=_verify)

    for name, text in (
            ("encrypt", "encrypt the configured SQLite store in place with the key that "
                        "store.sqlcipher_key_file/_env give (SQLCipher)"),
            ("decrypt", "turn the configured encrypted store back into plain SQLite"),
            ("rekey", "encrypt the configured store with a new key")):
        cv = cmds.add_parser(name, help=text, description=text + ": a new file is written, "
                             "verified, then renamed over the store. Stop the daemon first.")
        if name == "rekey":
            new = cv.add_mutually_exclusive_group(required=True)
            new.add_argument("--new-key-file", type=Path, help="the new key's file (0600)")
            new.add_argument("--new-key-env", default="", help="the variable holding it")
        cv.set_defaults(run=_convert, action=name)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


class UsageError(Exception):
    pass


def open_spec(spec: str, *, must_exist: bool) -> SqlStore:
    """``sqlite:PATH``, ``postgresql:DSN`` or a ``postgresql://`` URI, as a store."""
    kind, sep, rest = spec.partition(":")
    if kind in ("postgresql", "postgres") and sep:
        from bridge.store.postgresql import PostgresStore

        dsn = spec if rest.startswith("//") else rest
        if not dsn.strip():
            raise UsageError(f"{spec!r}: postgresql: needs a DSN, e.g. "
                             "postgresql:'host=db dbname=mwl user=mwl'")
        return PostgresStore(dsn)
    if kind == "sqlite" and sep and rest:
        from bridge.store import SqliteStore

        path = Path(rest)
        if must_exist and not path.is_file():
            raise UsageError(f"{path}: no such SQLite file")
        if not must_exist and path.exists() and path.stat().st_size:
            raise UsageError(f"{path}: exists; the target must be a new file")
        return SqliteStore(path)
    raise UsageError(f"{spec!r}: expected sqlite:PATH or postgresql:DSN")


class ProgressLine:
    """One line per table on standard error, rewritten in place on a terminal;
    elsewhere (a log file) a line at every tenth of a large table and at its end."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._start: dict[str, float] = {}
        self._tenth: dict[str, int] = {}

    def __call__(self, table: str, done: int, total: int) -> None:
        now = time.monotonic()
        start = self._start.setdefault(table, now)
        pct = 100 if total == 0 else done * 100 // total
        text = f"  {table:<24} {done:>11,} / {total:<11,} rows {pct:>3d} %"
        if done >= total and now > start:
            text += f"  ({done / (now - start):,.0f} rows/s)"
        if self.tty:
            self.out.write(f"\r{text}" + ("\n" if done >= total else ""))
            self.out.flush()
            return
        tenth = pct // 10
        if done >= total or (total >= 50_000 and tenth > self._tenth.get(table, 0)):
            self._tenth[table] = tenth
            self.out.write(text + "\n")
            self.out.flush()


def _copy(args: argparse.Namespace) -> int:
    from bridge.store import StoreError
    from bridge.store.dbcopy import copy_store

    try:
        source = open_spec(args.source, must_exist=True)
        target = open_spec(args.target, must_exist=False)
    except UsageError as exc:
        print(f"db copy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.batch < 1:
        print("db copy: --batch is 1 or more", file=sys.stderr)
        return EXIT_USAGE
    err = sys.stderr
    try:
        before = source.schema_version()
        version = source.migrate()
        if before != version:
            print(f"source: schema migrated from version {before} to {version}", file=err)
        target.migrate()
        print(f"copying {_describe(args.source)} -> {_describe(args.target)} "
              f"(schema version {version}, batches of {args.batch:,})", file=err)
        report = copy_store(source, target, batch=args.batch, progress=ProgressLine(err),
                            allow_running=args.allow_running)
    except StoreError as exc:
        print(f"db copy: {exc}", file=err)
        print("db copy: nothing was written to the target", file=err)
        return EXIT_FAILED
    finally:
        source.close()
        target.close()
    _print_report(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _backup(args: argparse.Namespace) -> int:
    from bridge.app.cli.common import EXIT_CONFIG, settings_from
    from bridge.store import StoreError
    from bridge.store.backup import backup_sqlite

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    if settings.store.backend != "sqlite":
        print("db backup: store.backend is postgresql: back it up with pg_dump "
              "(docs/operations.md, Security)", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = backup_sqlite(settings.sqlite_path, args.path, settings.store.sqlcipher_key())
    except (StoreError, OSError) as exc:
        # OSError: the new file's folder refuses it (read-only, full); the store was
        # only read, and backup_sqlite removes its partial copy.
        print(f"db backup: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"backup of {settings.sqlite_path} written to {report.path}")
    _print_verified(report)
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from bridge.app.cli.common import EXIT_CONFIG, settings_from
    from bridge.store import StoreError
    from bridge.store.backup import verify_sqlite

    settings = settings_from(args)  # an encrypted store's key
    if settings is None:
        return EXIT_CONFIG
    try:
        report = verify_sqlite(args.path, settings.store.sqlcipher_key())
    except StoreError as exc:
        print(f"db verify: {exc}", file=sys.stderr)
        return EXIT_FAILED
    _print_verified(report)
    return EXIT_OK if report.ok else EXIT_FAILED


_DONE = {"encrypt": "encrypted", "decrypt": "decrypted", "rekey": "re-keyed"}


def _convert(args: argparse.Namespace) -> int:
    from bridge.app.cli.common import EXIT_CONFIG, settings_from, store_failure
    from bridge.store import StoreError
    from bridge.store.cipher import convert, read_key

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    if settings.store.backend != "sqlite":
        print(f"db {args.action}: SQLCipher is for the SQLite store; PostgreSQL: use the "
              "server's own at-rest encryption (docs/operations.md, Security)", file=sys.stderr)
        return EXIT_USAGE
    try:
        key = settings.store.sqlcipher_key()
        if key is None:
            print(f"db {args.action}: set store.sqlcipher_key_file or store.sqlcipher_key_env "
                  "first", file=sys.stderr)
            return EXIT_USAGE
        old, new = {"encrypt": (None, key), "decrypt": (key, None)}.get(args.action, (key, ""))
        if args.action == "rekey":
            new = read_key("--new-key", file=args.new_key_file, env=args.new_key_env)
            if new == key:
                print("db rekey: the new key is the current one", file=sys.stderr)
                return EXIT_USAGE
        counts = convert(settings.sqlite_path, old, new)
    except StoreError as exc:
        print(f"db {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        # The store's own file or folder refuses the write (read-only, full, immutable):
        # convert replaces the store only by its last step and removes its new copy.
        print(store_failure(exc, f"the store is not {_DONE[args.action]}"), file=sys.stderr)
        return EXIT_FAILED
    done = _DONE[args.action]
    print(f"{settings.sqlite_path} {done}: {sum(counts.values()):,} row(s) in "
          f"{len(counts)} table(s) verified")
    follow = {"encrypt": "keep the key configured; back it up apart from the store",
              "decrypt": "remove store.sqlcipher_key_file/_env from the config before start",
              "rekey": "point store.sqlcipher_key_file/_env at the new key before start"}
    print(f"next: {follow[args.action]}")
    return EXIT_OK


def _print_verified(report: Any) -> None:
    from bridge.store import migrations

    latest = migrations.latest_version()
    known = "" if 0 < report.schema_version <= latest else \
        f" (this release knows versions 1-{latest})"
    print(f"size {report.size:,} bytes; integrity {report.integrity}; "
          f"schema version {report.schema_version}{known}")
    width = max([len("TABLE"), *(len(t) for t in report.tables)])
    print(f"{'TABLE':<{width}}  {'ROWS':>11}")
    for table, count in report.tables.items():
        print(f"{table:<{width}}  {count:>11,}")
    print("verified" if report.ok else "NOT VERIFIED")


def _describe(spec: str) -> str:
    """The spec without a password (key=value or URI form)."""
    import re

    spec = re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", spec)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", spec)


def _print_report(report: CopyReport) -> None:
    width = max([len("TABLE"), *(len(t.table) for t in report.tables)])
    print(f"{'TABLE':<{width}}  {'SOURCE':>11}  {'TARGET':>11}  CHECK")
    for t in report.tables:
        print(f"{t.table:<{width}}  {t.source:>11,}  {t.target:>11,}  "
              f"{'ok' if t.ok else 'DIFFERS'}")
    for name, why in report.skipped.items():
        print(f"{name:<{width}}  {'-':>11}  {'-':>11}  not copied: {why}")
    for column, value in report.sequences.items():
        print(f"sequence of {column}: next value {value:,}")
    bad = [t.table for t in report.tables if not t.ok]
    verdict = "verified: every table's count matches" if not bad else \
        "COUNTS DIFFER: " + ", ".join(bad)
    print(f"{report.rows:,} row(s) in {len(report.tables)} table(s) copied in "
          f"{report.seconds:.1f} s; {verdict}")
