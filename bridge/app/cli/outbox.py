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

from bridge.app.cli.common import (
    add_queue_list,
    add_queue_retry,
    audited_requeue,
    clipped,
    list_queue,
    load_one,
    print_help,
    queue_when,
    requeue_command,
)
from bridge.store import Store
from bridge.store.outbox_tx import OutboxMessage, OutboxState

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG = 0, 1, 2


def add_outbox_commands(sub: Any) -> None:
    """Register ``outbox`` on the CLI's subcommand parser."""
    outbox = sub.add_parser("outbox", help="list, show and retry outbound HL7 status messages")
    cmds = outbox.add_subparsers(dest="outbox_command", metavar="ACTION")
    outbox.set_defaults(run=lambda args: print_help(outbox))

    add_queue_list(cmds, "list messages (default: pending and dead ones)", _list)

    show = cmds.add_parser("show", help="one message: its state, reason, text and ACK")
    show.add_argument("id", type=int)
    show.set_defaults(run=_show)

    add_queue_retry(cmds, _retry)


def _list(args: argparse.Namespace) -> int:
    from bridge.store import outbox_tx

    return list_queue(args, outbox_tx.list_messages, outbox_tx.count_by_state,
                      ("ID", "STATE", "DESTINATION", "EVENT", "TYPE", "CONTROL ID", "TRIES",
                       "WHEN", "REASON"), _row)


def _row(m: OutboxMessage) -> tuple[str, ...]:
    return (str(m.id), m.state, m.destination, m.event, m.message_type, m.control_id,
            str(m.attempts), queue_when(m.state, m.sent_at, m.next_attempt_at, m.updated_at),
            clipped(m.last_error))


def _show(args: argparse.Namespace) -> int:
    from bridge.store import outbox_tx

    m, code = load_one(args, outbox_tx.get_message, "no outbox message")
    if m is None:
        return code
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

    def dead(store: Store, destination: str) -> list[int]:
        return [m.id for m in outbox_tx.list_messages(
            store, states=[OutboxState.DEAD.value], destination=destination, limit=1_000_000)]

    code, skipped = requeue_command(
        args, "message", dead,
        audited_requeue(args, "outbox.retry", "outbox", outbox_tx.requeue),
        outbox_tx.get_message)
    for message_id, row in skipped:
        if row is None:
            print(f"  {message_id}: no such message", file=sys.stderr)
        elif row.state == OutboxState.SENT:
            print(f"  {message_id}: already sent", file=sys.stderr)
        else:
            print(f"  {message_id}: has no message text ({row.last_error}); fix the profile "
                  "and let the next status change produce a new one", file=sys.stderr)
    return code

