"""``mwl-bridge outbox ...``: what the status loop has queued, sent and given up on.

    mwl-bridge outbox list [--state pending|sent|dead|all] [--destination NAME]
    mwl-bridge outbox show ID
    mwl-bridge outbox retry ID... | --dead [--destination NAME]

``retry`` re-queues dead letters (and makes waiting messages due now); a
running daemon picks them up within ``outbound.poll_interval_s``. The commands
work on the store directly and may run beside the daemon.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.app.cli.common import open_configured_store, settings_from
from bridge.store import Store
from bridge.store.outbox_tx import OutboxMessage, OutboxState

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG = 0, 1, 2


def add_outbox_commands(sub: Any) -> None:
    """Register ``outbox`` on the CLI's subcommand parser."""
    outbox = sub.add_parser("outbox", help="list, show and retry outbound HL7 status messages")
    cmds = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    outbox.set_defaults(run=lambda args: _help(outbox))

    ls = cmds.add_parser("list", help="list messages (default: pending and dead ones)")
    ls.add_argument("--state", default="pending,dead",
                    help="pending, sent, dead, a comma list, or all (default: pending,dead)")
    ls.add_argument("--destination", default="", help="only this destination")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(run=_list)

    show = cmds.add_parser("show", help="one message: its state, reason, text and ACK")
    show.add_argument("id", type=int)
    show.set_defaults(run=_show)

    retry = cmds.add_parser("retry", help="re-queue dead letters (or make waiting ones due)")
    retry.add_argument("ids", type=int, nargs="*", metavar="ID")
    retry.add_argument("--dead", action="store_true", help="every dead letter")
    retry.add_argument("--destination", default="", help="with --dead: only this destination")
    retry.set_defaults(run=_retry)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_CONFIG


def _open(args: argparse.Namespace) -> Store | None:
    settings = settings_from(args)
    return None if settings is None else open_configured_store(settings)


def _states(text: str) -> list[str] | None:
    if text == "all":
        return []
    states = [s.strip() for s in text.split(",") if s.strip()]
    known = {s.value for s in OutboxState}
    return states if states and all(s in known for s in states) else None


def _list(args: argparse.Namespace) -> int:
    from bridge.store import outbox_tx

    states = _states(args.state)
    if states is None:
        print(f"--state: one or more of pending, sent, dead (comma-separated), or all; "
              f"not {args.state!r}", file=sys.stderr)
        return EXIT_CONFIG
    store = _open(args)
    if store is None:
        return EXIT_CONFIG
    try:
        rows = outbox_tx.list_messages(store, states=states, destination=args.destination,
                                       limit=args.limit)
        counts = outbox_tx.count_by_state(store)
    finally:
        store.close()
    header = ("ID", "STATE", "DESTINATION", "EVENT", "TYPE", "CONTROL ID", "TRIES", "WHEN",
              "REASON")
    table = [header] + [_row(m) for m in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    summary = ", ".join(f"{counts.get(s.value, 0)} {s.value}" for s in OutboxState)
    print(f"({len(rows)} shown; {summary})")
    return EXIT_OK


def _row(m: OutboxMessage) -> tuple[str, ...]:
    when = m.sent_at if m.state == OutboxState.SENT else (
        m.next_attempt_at if m.state == OutboxState.PENDING else m.updated_at)
    reason = m.last_error if len(m.last_error) <= 60 else m.last_error[:57] + "..."
    return (str(m.id), m.state, m.destination, m.event, m.message_type, m.control_id,
            str(m.attempts), when[:19].replace("T", " "), reason)


def _show(args: argparse.Namespace) -> int:
    from bridge.store import outbox_tx

    store = _open(args)
    if store is None:
        return EXIT_CONFIG
    try:
        m = outbox_tx.get_message(store, args.id)
    finally:
        store.close()
    if m is None:
        print(f"no outbox message {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    for label, value in (("id", m.id), ("state", m.state), ("destination", m.destination),
                         ("order", m.order_key), ("event", m.event),
                         ("type", m.message_type), ("control id", m.control_id),
                         ("attempts", m.attempts), ("created", m.created_at),
                         ("next attempt", m.next_attempt_at), ("sent", m.sent_at or "-"),
                         ("reason", m.last_error or "-"), ("mpps row", m.mpps_id or "-"),
                         ("step row", m.step_id or "-")):
        print(f"{label:13} {value}")
    for title, data in (("message", m.payload), ("ack", m.ack)):
        if data:
            print(f"--- {title}")
            for line in data.replace(b"\r\n", b"\r").split(b"\r"):
                if line:
                    print("    " + line.decode("utf-8", errors="replace"))
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    from bridge.store import outbox_tx

    if not args.ids and not args.dead:
        print("give message IDs, or --dead for every dead letter", file=sys.stderr)
        return EXIT_CONFIG
    store = _open(args)
    if store is None:
        return EXIT_CONFIG
    try:
        ids = list(args.ids)
        if args.dead:
            ids += [m.id for m in outbox_tx.list_messages(
                store, states=[OutboxState.DEAD.value], destination=args.destination,
                limit=1_000_000)]
        (changed,) = store.write([lambda tx: outbox_tx.requeue(tx, ids)])
        if isinstance(changed, BaseException):
            raise changed
        skipped = sorted(set(ids) - set(changed))
        skipped_rows = [outbox_tx.get_message(store, i) for i in skipped]
    finally:
        store.close()
    print(f"re-queued {len(changed)} message(s)" + (f": {', '.join(map(str, changed))}"
                                                     if changed else ""))
    for message_id, row in zip(skipped, skipped_rows, strict=True):
        if row is None:
            print(f"  {message_id}: no such message", file=sys.stderr)
        elif row.state == OutboxState.SENT:
            print(f"  {message_id}: already sent", file=sys.stderr)
        else:
            print(f"  {message_id}: has no message text ({row.last_error}); fix the profile "
                  "and let the next status change produce a new one", file=sys.stderr)
    return EXIT_OK if not skipped else EXIT_NOT_FOUND
