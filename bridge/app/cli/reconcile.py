"""``mwl-bridge reconcile``: completion without MPPS (docs/completion.md).

    mwl-bridge reconcile status              the settings in effect and the loop's state
    mwl-bridge reconcile conflicts [--limit N]   items the PACS contradicts, newest first
    mwl-bridge reconcile retry STEP_ID        have the loop ask for a flagged item again

A conflict (a study under the item's accession with another Study Instance UID,
or for another Patient ID) keeps the item open until an operator decides: fix
the study at the PACS or the order, then ``retry``, or close the item by hand.
Reads only, except ``retry``; may run beside the daemon.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bridge.app.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    open_configured_store,
    settings_from,
    store_failure,
)


def add_reconcile_commands(sub: Any) -> None:
    """Register ``reconcile`` on the CLI's subcommand parser."""
    rec = sub.add_parser("reconcile", help="completion when the study reaches the PACS: "
                                           "status, conflicts, retry")
    cmds = rec.add_subparsers(dest="reconcile_command", required=True)
    status = cmds.add_parser("status", help="the settings in effect and the loop's state")
    status.set_defaults(run=_status)
    conflicts = cmds.add_parser("conflicts", help="items not completed because the PACS "
                                                  "holds a conflicting study")
    conflicts.add_argument("--limit", type=int, default=100)
    conflicts.set_defaults(run=_conflicts)
    retry = cmds.add_parser("retry", help="clear an item's conflict: the loop asks again")
    retry.add_argument("step_id", type=int)
    retry.set_defaults(run=_retry)


def _status(args: argparse.Namespace) -> int:
    from bridge.store import reconcile_tx

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    r = settings.reconcile
    store = open_configured_store(settings)
    try:
        summary = reconcile_tx.summary(store)
    finally:
        store.close()
    print(f"query loop: {'on' if r.enabled else 'off'}; IAN: {'on' if r.ian else 'off'}; "
          f"PACS push: {'on' if settings.admin.enabled else 'off (admin.enabled)'}")
    for p in r.pacs:
        print(f"  PACS {p.label}: AE {p.ae_title} at {p.host}:{p.port}"
              f"{' (TLS)' if p.tls.enabled else ''}")
    print(f"watched: statuses {', '.join(r.statuses)}; stations "
          f"{', '.join(r.stations) or 'any'}; modalities {', '.join(r.modalities) or 'any'}; "
          f"scheduled {r.min_age_min:g} min to {r.max_age_h:g} h ago")
    print(f"bounds: {r.max_items_per_cycle} item(s) per cycle every {r.interval_s:g} s, "
          f"batches of {r.batch_size}, at most {r.max_queries_per_s:g} C-FIND/s; settle: "
          + ("two equal counts" if r.settle == "polls" else f"{r.settle_time_s:g} s unchanged"))
    print(f"state: {summary.watched} item(s) looked for, {summary.found} found and "
          f"settling, {summary.conflicts} conflict(s)")
    return EXIT_OK


def _conflicts(args: argparse.Namespace) -> int:
    from bridge.store import reconcile_tx

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        rows = reconcile_tx.conflicts(store, limit=args.limit)
    finally:
        store.close()
    header = ("STEP", "KIND", "STATUS", "ACCESSION", "PACS", "STUDY AT THE PACS", "SINCE")
    table = [header] + [(str(c.step_id), c.kind, c.sps_status, c.accession, c.pacs,
                         c.found_uid, c.at[:19]) for c in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    for c in rows:
        print(f"  step {c.step_id}: {c.detail}")
    print(f"({len(rows)} conflict(s))")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    from bridge.store import reconcile_tx

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        # write_one raises a failed write, where write would hand the exception back
        # and it would read as "no conflict". Besides StoreError (begin, commit), that
        # is the database driver's own error from the DELETE (e.g. sqlite3's "attempt
        # to write a readonly database"); the drivers share no class, and the job runs
        # nothing else, so anything it raises is a store failure.
        cleared = store.write_one(lambda tx: reconcile_tx.clear_conflict(tx, args.step_id))
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        print(store_failure(exc, f"the conflict of step {args.step_id} is not cleared"),
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    if not cleared:
        print(f"step {args.step_id} has no conflict")
        return EXIT_FAILED
    print(f"step {args.step_id}: conflict cleared; the loop asks the PACS again")
    return EXIT_OK
