"""``mwl-bridge mpps ...``: the MPPS instances the modalities reported (as the
console's MPPS page and ``POST /api/mpps/search``).

    mwl-bridge mpps list [--status "IN PROGRESS"|COMPLETED|DISCONTINUED] [--limit N] [--page N]
    mwl-bridge mpps show ID [--json]

``list`` is newest first; ``show`` prints the instance, the worklist items it is
linked to, and its data set (DICOM JSON with ``--json``, else the attributes as
pydicom prints them). The commands read the store and may run beside the daemon.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from bridge.app.cli.common import open_configured_store, settings_from

EXIT_OK, EXIT_NOT_FOUND, EXIT_CONFIG = 0, 1, 2
STATUSES = ("IN PROGRESS", "COMPLETED", "DISCONTINUED")


def add_mpps_commands(sub: Any) -> None:
    """Register ``mpps`` on the CLI's subcommand parser."""
    mpps = sub.add_parser("mpps", help="list and show MPPS instances")
    cmds = mpps.add_subparsers(dest="mpps_command", metavar="ACTION")
    mpps.set_defaults(run=lambda args: _help(mpps))

    ls = cmds.add_parser("list", help="list MPPS instances, newest first")
    ls.add_argument("--status", default="", help="IN PROGRESS, COMPLETED or DISCONTINUED")
    ls.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    ls.add_argument("--page", type=int, default=1, help="which page (default 1)")
    ls.set_defaults(run=_list)

    show = cmds.add_parser("show", help="one instance: status, linked items, data set")
    show.add_argument("id", type=int)
    show.add_argument("--json", action="store_true", help="the data set as DICOM JSON")
    show.set_defaults(run=_show)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_CONFIG


def _list(args: argparse.Namespace) -> int:
    from bridge.store import browse

    status = args.status.upper().replace("_", " ")
    if status and status not in STATUSES:
        print(f"--status: one of {', '.join(STATUSES)}; not {args.status!r}", file=sys.stderr)
        return EXIT_CONFIG
    if args.limit < 1 or args.page < 1:
        print("--limit and --page are 1 or more", file=sys.stderr)
        return EXIT_CONFIG
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
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
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    print(f"({len(page.rows)} of {page.total} instance(s))")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    from bridge.store import browse
    from bridge.store.items import dumps_item

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        m = browse.get_mpps_by_id(store, args.id)
    finally:
        store.close()
    if m is None:
        print(f"no MPPS instance {args.id}", file=sys.stderr)
        return EXIT_NOT_FOUND
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
