"""``mwl-bridge status``: the instances sharing this store, the roles they hold, the
maintenance leader's lease, the schema version and the outbox at a glance.

    mwl-bridge status [--limit N]

An instance is ``alive`` when its last heartbeat is at most three heartbeats
(``store.heartbeat_s``) old by the database's clock, ``stopped`` when it stopped
cleanly, else ``gone`` (killed, or its host lost the database). Reads only; may run
beside the daemons.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from typing import Any

from bridge.app.cli.common import EXIT_CONFIG, EXIT_OK, open_configured_store, settings_from


def add_status_commands(sub: Any) -> None:
    """Register ``status`` on the CLI's subcommand parser."""
    status = sub.add_parser("status", help="the instances on this store, their roles, the "
                                           "maintenance leader and the outbox")
    status.add_argument("--limit", type=int, default=20,
                        help="instances to list, the most recently seen first")
    status.set_defaults(run=_status)


def _status(args: argparse.Namespace) -> int:
    from bridge.store import ha_tx, outbox_tx
    from bridge.store.sqltx import parse_stamp, stamp

    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    store = open_configured_store(settings)
    try:
        now = ha_tx.database_now(store)
        rows = ha_tx.list_instances(store, limit=args.limit)
        leases = ha_tx.list_leases(store)
        counts = outbox_tx.count_by_state(store)
        version = store.schema_version()
    finally:
        store.close()
    fresh = stamp(parse_stamp(now) - timedelta(seconds=3 * settings.store.heartbeat_s))

    def state(r: ha_tx.InstanceRow) -> str:
        if r.stopped_at:
            return "stopped"
        return "alive" if r.last_seen >= fresh else "gone"

    print(f"store: {settings.store.backend}, schema version {version}; "
          f"database time {now}")
    header = ("INSTANCE", "HOST", "PID", "VERSION", "STARTED", "LAST SEEN", "STATE", "ROLES")
    table = [header] + [(r.id, r.host, str(r.pid), r.version, r.started_at[:19],
                         r.last_seen[:19], state(r), ",".join(r.roles) or "-") for r in rows]
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    alive = sum(1 for r in rows if state(r) == "alive")
    print(f"({len(rows)} instance(s) shown, {alive} alive)")
    for lease in leases:
        live = "live" if lease.lease_until >= now else "lapsed"
        print(f"{lease.role} leader: {lease.holder} since {lease.since[:19]} "
              f"(lease until {lease.lease_until[:19]}, {live})")
    if not any(lease.role == ha_tx.MAINTENANCE for lease in leases):
        print("maintenance leader: none")
    print("outbox: " + ", ".join(f"{counts.get(s.value, 0)} {s.value}"
                                 for s in outbox_tx.OutboxState))
    return EXIT_OK
