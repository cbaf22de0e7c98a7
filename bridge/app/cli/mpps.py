"""``mwl-bridge mpps ...``: the MPPS instances the modalities reported (as the
console's MPPS page and ``POST /api/mpps/search``).

    mwl-bridge mpps list [--status "IN PROGRESS"|COMPLETED|DISCONTINUED] [--limit N] [--page N]
    mwl-bridge mpps show ID [--json]
    mwl-bridge mpps forward list [--state pending|sent|dead|all] [--destination NAME]
    mwl-bridge mpps forward show ID
    mwl-bridge mpps forward retry ID... | --dead [--destination NAME]

``list`` is newest first; ``show`` prints the instance, the worklist items it is
linked to, and its data set (DICOM JSON with ``--json``, else the attributes as
pydicom prints them). ``forward`` is the queue of N-CREATE/N-SET requests
forwarded to other MPPS SCPs (bridge/mpps/forward.py), like ``outbox``: ``retry``
re-queues dead letters (and makes waiting requests due now); a running daemon
picks them up within ``mpps.forward.poll_interval_s``. The commands work on the
store directly and may run beside the daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from bridge.app.cli.common import (
    add_queue_list,
    add_queue_retry,
    audited_requeue,
    clipped,
    list_queue,
    load_one,
    open_store_from,
    print_help,
    print_table,
    queue_when,
    requeue_command,
)
from bridge.store import Store

if TYPE_CHECKING:
    from bridge.store.mpps_forward_tx import ForwardRow

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG = 0, 1, 2
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")


def add_mpps_commands(sub: Any) -> None:
    """Register ``mpps`` on the CLI's subcommand parser."""
    mpps = sub.add_parser("mpps", help="list and show MPPS instances")
    cmds = mpps.add_subparsers(dest="mpps_command", metavar="ACTION")
    mpps.set_defaults(run=lambda args: print_help(mpps))

    ls = cmds.add_parser("list", help="list MPPS instances, newest first")
    ls.add_argument("--status", default="", help="IN PROGRESS, COMPLETED or DISCONTINUED")
    ls.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    ls.add_argument("--page", type=int, default=1, help="which page (default 1)")
    ls.set_defaults(run=_list)

    show = cmds.add_parser("show", help="one instance: status, linked items, data set")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="the data set as DICOM JSON")
    show.set_defaults(run=_show)

    forward = cmds.add_parser("forward", help="list, show and retry MPPS forwarded to other "
                                              "MPPS SCPs")
    fcmds = forward.add_subparsers(dest="forward_command", metavar="ACTION")
    forward.set_defaults(run=lambda args: print_help(forward))
    add_queue_list(fcmds, "list forwarded requests (default: pending and dead)", _forward_list)
    fshow = fcmds.add_parser("show", help="one request: its state, the peer's status, its "
                                          "data set")
    fshow.add_argument("id", type=int)
    fshow.set_defaults(run=_forward_show)
    add_queue_retry(fcmds, _forward_retry)


def _list(args: argparse.Namespace) -> int:
    from bridge.store import browse

    status = args.status.upper().replace("_", " ")
    if status and status not in STATUSES:
        print(f"--status: one of {', '.join(STATUSES)}; not {args.status!r}", file=sys.stderr)
        return EXIT_CONFIG
    if args.limit < 1 or args.page < 1:
        print("--limit and --page are 1 or more", file=sys.stderr)
        return EXIT_CONFIG
    store = open_store_from(args)
    if store is None:
        return EXIT_CONFIG
    try:
        page = browse.search_mpps(store, status=status, limit=args.limit,
                                  offset=(args.page - 1) * args.limit)
    finally:
        store.close()
    header = ("ID", "STATUS", "CALLING AE", "STATION", "MOD", "ITEMS", "CHANGED",
              "SOP INSTANCE UID")
    table = [header] + [
        (str(m.id), m.status, m.calling_aet, m.station_aet, m.modality,
         ",".join(map(str, m.step_ids)) or ("-" if m.scheduled else "unscheduled"),
         m.updated_at[:19].replace("T", " "), m.sop_instance_uid) for m in page.rows]
    print_table(table)
    print(f"({len(page.rows)} of {page.total} instance(s))")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from bridge.store import browse
    from bridge.store.items import dumps_item

    m, code = load_one(args, browse.get_mpps_by_id, "no MPPS instance")
    if m is None:
        return code
    for label, value in (("id", m.id), ("sop instance uid", m.sop_instance_uid),
                         ("status", m.status), ("calling AE", m.calling_aet),
                         ("station", m.station_aet), ("modality", m.modality),
                         ("scheduled", "yes" if m.scheduled else "no (unscheduled)"),
                         ("worklist items", ", ".join(map(str, m.step_ids)) or "-"),
                         ("note", m.note or "-"), ("created", m.created_at),
                         ("changed", m.updated_at)):
        print(f"{label + ':':18} {value}")
    print()
    if args.json:
        print(json.dumps(json.loads(dumps_item(m.item)), indent=1, ensure_ascii=False))
    else:
        print(m.item)
    return EXIT_OK


# --- mwl-bridge mpps forward ... ---

def _forward_list(args: argparse.Namespace) -> int:
    from bridge.store import mpps_forward_tx

    return list_queue(args, mpps_forward_tx.list_rows, mpps_forward_tx.count_by_state,
                      ("ID", "STATE", "DESTINATION", "REQUEST", "SOP INSTANCE UID", "TRIES",
                       "STATUS", "WHEN", "REASON"), _forward_row)


def _forward_row(r: ForwardRow) -> tuple[str, ...]:
    return (str(r.id), r.state, r.destination, r.operation, r.sop_instance_uid,
            str(r.attempts), "-" if r.peer_status is None else f"0x{r.peer_status:04X}",
            queue_when(r.state, r.sent_at, r.next_attempt_at, r.updated_at),
            clipped(r.last_error))


def _forward_show(args: argparse.Namespace) -> int:
    from io import BytesIO

    from pydicom.uid import UID
    from pynetdicom.dsutils import decode

    from bridge.store import mpps_forward_tx

    r, code = load_one(args, mpps_forward_tx.get_row, "no forwarded MPPS request")
    if r is None:
        return code
    status = "-" if r.peer_status is None else f"0x{r.peer_status:04X}"
    for label, value in (("id", r.id), ("state", r.state), ("destination", r.destination),
                         ("request", r.operation), ("sop instance uid", r.sop_instance_uid),
                         ("mpps row", r.mpps_id or "-"), ("attempts", r.attempts),
                         ("peer status", status), ("created", r.created_at),
                         ("next attempt", r.next_attempt_at), ("sent", r.sent_at or "-"),
                         ("reason", r.last_error or "-"),
                         ("transfer syntax", r.transfer_syntax)):
        print(f"{label + ':':18} {value}")
    print()
    syntax = UID(r.transfer_syntax)
    try:
        print(decode(BytesIO(r.payload), syntax.is_implicit_VR, syntax.is_little_endian,
                     syntax.is_deflated))
    except Exception as exc:  # noqa: BLE001 - show what we can
        print(f"(the data set cannot be decoded: {type(exc).__name__})")
    return EXIT_OK


def _forward_retry(args: argparse.Namespace) -> int:
    from bridge.store import mpps_forward_tx

    def dead(store: Store, destination: str) -> list[int]:
        return [r.id for r in mpps_forward_tx.list_rows(
            store, states=["dead"], destination=destination, limit=1_000_000)]

    code, skipped = requeue_command(
        args, "request", dead,
        audited_requeue(args, "mpps.forward.retry", "mpps-forward", mpps_forward_tx.requeue),
        mpps_forward_tx.get_row)
    for row_id, row in skipped:
        print(f"  {row_id}: " + ("no such request" if row is None else "already sent"),
              file=sys.stderr)
    return code
