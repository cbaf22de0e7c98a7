"""``mwl-bridge audit ...``: the local copy of the ATNA audit trail (docs/audit.md).

    mwl-bridge audit list [--patient ID] [--user NAME] [--ae AE] [--event CODE|NAME]
                          [--days N | --since DATE] [--limit N]
    mwl-bridge audit show ID

The audit trail is where patient identifiers are recorded, so its listing shows them:
it is for the people who review access to patient data. Works on the store directly
and may run beside the daemon.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.app.cli.common import open_configured_store, settings_from

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG = 0, 1, 2
_OUTCOMES = {0: "success", 4: "minor failure", 8: "serious failure", 12: "major failure"}


def add_audit_commands(sub: Any) -> None:
    """Register ``audit`` on the CLI's subcommand parser."""
    audit = sub.add_parser("audit", help="the local copy of the ATNA audit trail")
    cmds = audit.add_subparsers(dest="audit_command", metavar="ACTION")
    audit.set_defaults(run=lambda args: (audit.print_help(), EXIT_CONFIG)[1])

    ls = cmds.add_parser("list", help="audit events, newest first")
    ls.add_argument("--patient", default="", help="events naming this patient ID")
    ls.add_argument("--user", default="", help="events of this operator (console user)")
    ls.add_argument("--ae", default="",
                    help="events of this AE title, or HL7 sender APPLICATION|FACILITY")
    ls.add_argument("--event", default="", help="an EventID code (110112) or name (Query)")
    ls.add_argument("--days", type=int, default=0, help="only the last N days")
    ls.add_argument("--since", default="", help="only from this date (YYYY-MM-DD) on")
    ls.add_argument("--limit", type=int, default=100)
    ls.set_defaults(run=_list)

    show = cmds.add_parser("show", help="one event: its audit message (XML)")
    show.add_argument("id", type=int)
    show.set_defaults(run=_show)


def _since(args: argparse.Namespace) -> str | None:
    from bridge.store.sqltx import stamp

    if args.days:
        return stamp(datetime.now(UTC) - timedelta(days=args.days))
    if not args.since:
        return ""
    try:
        return stamp(datetime.strptime(args.since, "%Y-%m-%d").replace(tzinfo=UTC))
    except ValueError:
        return None


def _list(args: argparse.Namespace) -> int:
    from bridge.store import atna_tx

    since = _since(args)
    if since is None:
        print(f"--since: a date as YYYY-MM-DD, not {args.since!r}", file=sys.stderr)
        return EXIT_CONFIG
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        rows, total = atna_tx.search(store, patient=args.patient, user=args.user, ae=args.ae,
                                     event=args.event, since=since, limit=args.limit)
    finally:
        store.close()
    header = ("ID", "WHEN", "EVENT", "TYPE", "ACTION", "OUTCOME", "WHO AND WHAT", "PENDING")
    table = [header] + [(str(e.id), e.at[:19].replace("T", " "), e.event_name, e.type_codes,
                         e.action, _OUTCOMES.get(e.outcome, str(e.outcome)),
                         " ".join(f"{k}={v}" for k, v in e.subjects),
                         ",".join(e.pending) or "-") for e in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"({len(rows)} of {total} event(s))")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from bridge.store import atna_tx

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        event = atna_tx.get_event(store, args.id)
    finally:
        store.close()
    if event is None:
        print(f"no audit event {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
    print(event.message.decode("utf-8"))
    return EXIT_OK
