"""What every ``mwl-bridge`` subcommand shares: loading the settings, opening the store,
printing tables; and what the queues' commands share (``outbox``, ``mpps forward``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from bridge.app.settings import ConfigError, Settings, find_config, load_settings
from bridge.store import Store, open_store
from bridge.store.base import StoreTx

R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
EXIT_NOT_FOUND = EXIT_FAILED  # show/retry: no such row


def settings_from(args: argparse.Namespace) -> Settings | None:
    """The settings for ``--config`` (or the defaults); None after printing every error."""
    try:
        return load_settings(find_config(getattr(args, "config", None)))
    except ConfigError as exc:
        print("configuration error:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return None


def open_configured_store(settings: Settings) -> Store:
    """The configured store, migrated; commands may run beside the daemon."""
    return open_store(settings.store, settings.data_dir)


def open_store_from(args: argparse.Namespace) -> Store | None:
    """The configured store for ``--config``; None after printing the settings' errors."""
    settings = settings_from(args)
    return None if settings is None else open_configured_store(settings)


def store_failure(why: BaseException | str, undone: str) -> str:
    """The one line a command prints when the store fails under it, instead of a
    traceback: ``store error: <why>; <undone>`` (``undone``: what did not happen).

    A StoreError (begin, commit) says what failed; anything else a write job raised is
    the database driver's own error (e.g. sqlite3's "attempt to write a readonly
    database"), named by its class, since the drivers share no class to catch and the
    bare text would not say it came from the database. ``why`` as text: a failure
    that reached the command only as text (the replay's intake logged the cause).
    """
    from bridge.store import StoreError

    if isinstance(why, BaseException) and not isinstance(why, StoreError):
        why = f"{type(why).__name__}: {why}"
    return f"store error: {why}; {undone}"


# The database drivers, by top-level package: their errors share no class to catch.
DRIVERS = frozenset({"sqlite3", "sqlcipher3", "psycopg"})


def from_the_store(exc: BaseException) -> bool:
    """Whether ``exc`` is a store failure: a StoreError, or a database driver's own
    error that a write job raised. For a command whose ``try`` also runs other work
    (``import`` reads files): an error of that work stays a traceback, not a
    ``store error`` line that would blame the store for a bug."""
    from bridge.store import StoreError

    return isinstance(exc, StoreError) or type(exc).__module__.split(".")[0] in DRIVERS


def print_help(parser: argparse.ArgumentParser) -> int:
    """A command group run without its action: its help, and the usage exit code."""
    parser.print_help()
    return EXIT_CONFIG


def print_table(table: Sequence[Sequence[str]]) -> None:
    """The rows in columns as wide as their widest cell; the first row is the header."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


# --- the queues' list/retry commands (outbox, mpps forward) ---

QUEUE_STATES = ("pending", "sent", "dead")


def queue_states(text: str) -> list[str] | None:
    """``--state`` of a queue's ``list``: [] for all; None (after saying why) if invalid."""
    if text == "all":
        return []
    states = [s.strip() for s in text.split(",") if s.strip()]
    if states and all(s in QUEUE_STATES for s in states):
        return states
    print(f"--state: one or more of pending, sent, dead (comma-separated), or all; "
          f"not {text!r}", file=sys.stderr)
    return None


def queue_when(state: str, sent_at: str, next_attempt_at: str, updated_at: str) -> str:
    """A queue row's WHEN column: sent, next attempt, or given up."""
    when = sent_at if state == "sent" else (next_attempt_at if state == "pending"
                                            else updated_at)
    return when[:19].replace("T", " ")


def clipped(text: str, most: int = 60) -> str:
    return text if len(text) <= most else text[:most - 3] + "..."


def queue_summary(shown: int, counts: Mapping[str, int]) -> str:
    summary = ", ".join(f"{counts.get(s, 0)} {s}" for s in QUEUE_STATES)
    return f"({shown} shown; {summary})"


def add_queue_list(cmds: Any, summary: str, run: Callable[[argparse.Namespace], int]) -> None:
    """A queue's ``list`` action, with the options list_queue reads."""
    ls = cmds.add_parser("list", help=summary)
    ls.add_argument("--state", default="pending,dead",
                    help="pending, sent, dead, a comma list, or all (default: pending,dead)")
    ls.add_argument("--destination", default="", help="only this destination")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(run=run)


def add_queue_retry(cmds: Any, run: Callable[[argparse.Namespace], int]) -> None:
    """A queue's ``retry`` action, with the options requeue_command reads."""
    retry = cmds.add_parser("retry", help="re-queue dead letters (or make waiting ones due)")
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--dead", action="store_true", help="every dead letter")
    retry.add_argument("--destination", default="", help="with --dead: only this destination")
    retry.set_defaults(run=run)


class QueueRows(Protocol[R_co]):
    """A queue's listing: outbox_tx.list_messages, mpps_forward_tx.list_rows."""

    def __call__(self, store: Store, *, states: Collection[str] = ..., destination: str = ...,
                 limit: int = ...) -> Sequence[R_co]: ...


def list_queue(args: argparse.Namespace, rows: QueueRows[R],
               counts: Callable[[Store], Mapping[str, int]],
               header: Sequence[str], row: Callable[[R], Sequence[str]]) -> int:
    """A queue's ``list [--state ...] [--destination NAME] [--limit N]``: its rows as a
    table (``row``: one row's cells, in ``header``'s order), then the counts by state."""
    states = queue_states(args.state)
    if states is None:
        return EXIT_CONFIG
    store = open_store_from(args)
    if store is None:
        return EXIT_CONFIG
    try:
        found = rows(store, states=states, destination=args.destination, limit=args.limit)
        by_state = counts(store)
    finally:
        store.close()
    print_table([header] + [row(r) for r in found])
    print(queue_summary(len(found), by_state))
    return EXIT_OK


def requeue_command(args: argparse.Namespace, noun: str,
                    dead: Callable[[Store, str], list[int]],
                    requeue: Callable[[StoreTx, list[int]], list[int]],
                    get: Callable[[Store, int], R | None]
                    ) -> tuple[int, list[tuple[int, R | None]]]:
    """A queue's ``retry ID... | --dead [--destination NAME]``: re-queue in one
    transaction (``dead``: the ids of the dead letters, of one destination if given)
    and say how many. Returns the exit code and the ids that did not change with
    their rows (None: no such row), for the caller to say why each was skipped."""
    if not args.ids and not args.dead:
        print(f"give {noun} IDs, or --dead for every dead letter", file=sys.stderr)
        return EXIT_CONFIG, []
    store = open_store_from(args)
    if store is None:
        return EXIT_CONFIG, []
    try:
        ids = list(args.ids)
        if args.dead:
            ids += dead(store, args.destination)
        try:
            # write_one raises what the job raised: only store work runs there (the
            # UPDATEs, and the audit row when audit is on), so it is a store failure.
            changed = store.write_one(lambda tx: requeue(tx, ids))
        except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
            print(store_failure(exc, f"no {noun} is re-queued"), file=sys.stderr)
            return EXIT_FAILED, []
        skipped = [(i, get(store, i)) for i in sorted(set(ids) - set(changed))]
    finally:
        store.close()
    print(f"re-queued {len(changed)} {noun}(s)" + (f": {', '.join(map(str, changed))}"
                                                    if changed else ""))
    return (EXIT_NOT_FOUND if skipped else EXIT_OK), skipped


def load_one(args: argparse.Namespace, get: Callable[[Store, int], R | None], missing: str
             ) -> tuple[R | None, int]:
    """The row ``args.id`` from the configured store, and EXIT_OK; or None and the exit
    code, after saying why (``missing``: what is not there, e.g. "no outbox message")."""
    store = open_store_from(args)
    if store is None:
        return None, EXIT_CONFIG
    try:
        row = get(store, args.id)
    finally:
        store.close()
    if row is None:
        print(f"{missing} {args.id}", file=sys.stderr)
        return None, EXIT_NOT_FOUND
    return row, EXIT_OK


def audited_requeue(args: argparse.Namespace, action: str, kind: str,
             requeue: Callable[[StoreTx, list[int]], list[int]]
             ) -> Callable[[StoreTx, list[int]], list[int]]:
    """``requeue``, recording the re-queue as an operator action (the OS user) when
    audit is enabled (bridge/audit/offline.py)."""
    settings = settings_from(args)
    if settings is None:
        return requeue  # requeue_command reports the configuration error
    from bridge.audit.offline import OfflineAudit

    return OfflineAudit.from_settings(settings).audited_requeue(action, kind, requeue)
