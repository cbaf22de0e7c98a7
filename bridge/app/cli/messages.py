"""``mwl-bridge messages ...``: what came in, what was rejected, and replaying dead letters.

    mwl-bridge messages list [--rejected] [--flagged] [--control-id ID] [--since DATE]
    mwl-bridge messages show ID [--raw]
    mwl-bridge messages replay ID
    mwl-bridge messages purge

The commands open the store directly and may run beside the daemon. ``replay``
runs a rejected message through the same pipeline the daemon uses, with the
mapping files and configuration as they are on disk now (after the fix), and
records the result as a new message that points back at the dead letter.
The operator sees patient data here: these are the operator's own records.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.app.cli.common import (
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_OK,
    open_configured_store,
    settings_from,
    store_failure,
)
from bridge.app.settings import Settings
from bridge.store import Store
from bridge.store.orders_tx import LoggedMessage, OrdersTx

if TYPE_CHECKING:
    from bridge.mapping import MappingSet
    from bridge.orders.apply import Outcome


T = TypeVar("T")


def add_message_commands(sub: Any) -> None:
    """Register ``messages`` on the CLI's subcommand parser."""
    messages = sub.add_parser(
        "messages", help="list, show and replay received HL7 messages (dead letters)")
    cmds = messages.add_subparsers(dest="messages_command", metavar="ACTION")
    messages.set_defaults(run=lambda args: _help(messages))

    ls = cmds.add_parser("list", help="newest messages first, with outcome and reason")
    ls.add_argument("--rejected", action="store_true", help="only rejected ones (dead letters)")
    ls.add_argument("--flagged", action="store_true",
                    help="only accepted ones with a flag (e.g. demographics_conflict)")
    ls.add_argument("--control-id", default="", help="only this MSH-10")
    ls.add_argument("--since", default="", help="received on or after (YYYY-MM-DD[THH:MM])")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(run=_list)

    show = cmds.add_parser("show", help="one message: outcome, reason, text and ACK")
    show.add_argument("id", type=int)
    show.add_argument("--raw", action="store_true", help="write the message bytes to stdout")
    show.set_defaults(run=_show)

    replay = cmds.add_parser("replay",
                             help="run a rejected message again (after a mapping fix)")
    replay.add_argument("id", type=int)
    replay.set_defaults(run=_replay)

    purge = cmds.add_parser("purge", help="purge messages older than orders.messages.*_days")
    purge.set_defaults(run=_purge)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_CONFIG


def _open(args: argparse.Namespace) -> tuple[Settings, Store] | None:
    settings = settings_from(args)
    if settings is None:
        return None
    return settings, open_configured_store(settings)


def _read(store: Store, fn: Callable[[OrdersTx], T]) -> T:
    return store.write_one(lambda tx: fn(OrdersTx(tx)))


def _list(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_CONFIG
    _, store = opened
    try:
        rows: list[LoggedMessage] = _read(store, lambda o: o.list_messages(
            rejected=args.rejected, flagged=args.flagged, control_id=args.control_id,
            since=args.since, limit=args.limit))
    finally:
        store.close()
    header = ("ID", "RECEIVED", "FROM", "CONTROL ID", "TYPE", "ACK", "OUTCOME / REASON")
    table = [header]
    for m in rows:
        if m.ack_code == "AA":
            what = m.outcome + (f" [{m.flags}]" if m.flags else "")
        else:
            what = m.error
        if m.replay_of is not None:
            what = f"replay of #{m.replay_of}: {what}"
        table.append((str(m.id), m.received_at[:19], f"{m.sending_application}/"
                      f"{m.sending_facility}", m.control_id, m.message_type, m.ack_code or "-",
                      _cut(what, 90)))
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        print("  ".join([*(v.ljust(w) for v, w in zip(r, widths, strict=False)), r[-1]]))
    print(f"({len(rows)} message(s))")
    return EXIT_OK


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 3] + "..."


def _text(raw: bytes) -> str:
    from bridge.hl7 import CharsetError, decode_frame

    try:
        return decode_frame(raw, default="iso8859-1", aliases={}).text
    except CharsetError:
        return raw.decode("latin-1")


def _show(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_CONFIG
    _, store = opened
    try:
        m: LoggedMessage | None = _read(store, lambda o: o.get_message(args.id))
        replays: list[LoggedMessage] = _read(store, lambda o: o.replays_of(args.id))
    finally:
        store.close()
    if m is None:
        print(f"no message #{args.id}", file=sys.stderr)
        return EXIT_FAILED
    if args.raw:
        sys.stdout.buffer.write(m.raw)
        return EXIT_OK
    print(f"message #{m.id}")
    print(f"  received   {m.received_at} from {m.peer}")
    print(f"  sender     {m.sending_application}/{m.sending_facility}, control ID "
          f"{m.control_id or '-'}, {m.message_type or 'not HL7'}")
    print(f"  ACK        {m.ack_code or '(none: connection closed)'}")
    if m.mapping:
        print(f"  mapping    {m.mapping}")
    if m.outcome:
        print(f"  outcome    {m.outcome}")
    if m.flags:
        print(f"  flags      {m.flags}")
    if m.error:
        print(f"  reason     {m.error}")
    if m.replay_of is not None:
        print(f"  replay of  #{m.replay_of}")
    for r in replays:
        print(f"  replayed   as #{r.id} ({r.received_at[:19]}): {r.ack_code} "
              f"{r.outcome if r.ack_code == 'AA' else r.error}")
    print("message:")
    for line in _text(m.raw).replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if line:
            print(f"  {line}")
    if m.ack:
        print("ACK:")
        for line in _text(m.ack).split("\r"):
            if line:
                print(f"  {line}")
    return EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_CONFIG
    settings, store = opened
    not_replayed = f"message #{args.id} is not replayed"
    try:
        try:
            original: LoggedMessage | None = _read(store, lambda o: o.get_message(args.id))
        except Exception as exc:  # noqa: BLE001 - as write_one: only store work runs there
            print(store_failure(exc, not_replayed), file=sys.stderr)
            return EXIT_FAILED
        if original is None:
            print(f"no message #{args.id}", file=sys.stderr)
            return EXIT_FAILED
        if original.ack_code == "AA":
            print(f"message #{args.id} was accepted; only rejected messages are replayed",
                  file=sys.stderr)
            return EXIT_FAILED
        from bridge.mapping import MappingLoadError
        from bridge.mapping.loader import load_configured

        try:
            mappings = load_configured(settings.mapping)
        except MappingLoadError as exc:
            print("mapping error:", file=sys.stderr)
            for err in exc.errors:
                print(f"  {err}", file=sys.stderr)
            return EXIT_CONFIG
        outcome = asyncio.run(_run_replay(settings, store, mappings, original))
        if outcome.message_id is None and outcome.ack:
            # An ACK for a message the log does not hold: the intake's write failed, and
            # the intake answered AR and logged why (its exception stays there). Nothing
            # changed, so there is no operator action to audit either.
            print(store_failure("the replayed message could not be stored (logged above)",
                                not_replayed), file=sys.stderr)
            return EXIT_FAILED
        try:
            _audit_replay(settings, store, original.id, outcome.message_id)
        except Exception as exc:  # noqa: BLE001 - as write_one: only store work runs there
            # The replay itself is stored: say what it did below all the same.
            print(store_failure(exc, f"the replay of message #{args.id} is not audited"),
                  file=sys.stderr)
    finally:
        store.close()
    if outcome.message_id is None and not outcome.ack:
        print(f"message #{args.id} replayed: not HL7, nothing applied")
        return EXIT_FAILED
    what = outcome.summary if outcome.ack_code == "AA" else (
        outcome.rejection.text if outcome.rejection is not None else outcome.summary)
    print(f"message #{args.id} replayed as #{outcome.message_id}: {outcome.ack_code} {what}")
    for line in _text(outcome.ack).split("\r"):
        if line:
            print(f"  {line}")
    return EXIT_OK if outcome.ack_code == "AA" else EXIT_FAILED


def _audit_replay(settings: Settings, store: Store, replayed: int, as_id: int | None) -> None:
    """The replay as an operator action of the OS user (bridge/audit/offline.py)."""
    from bridge.audit.offline import OfflineAudit

    audit = OfflineAudit.from_settings(settings)
    audit.record(store, [audit.action("message.replay", "message",
                                      [replayed] if as_id is None else [replayed, as_id])])


async def _run_replay(settings: Settings, store: Store, mappings: MappingSet,
                      original: LoggedMessage) -> Outcome:
    from bridge.app.services import replay_intake

    # The daemon's own intake, built by the same wiring (bridge/app/services.py).
    async with replay_intake(settings, store, mappings) as ingest:
        return await ingest.process(original.raw, f"replay of #{original.id}",
                                    replay_of=original.id)


def _purge(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return EXIT_CONFIG
    settings, store = opened
    from bridge.maintenance.retention import purge_now

    try:
        # Only store work runs there (one transaction per batch of the purge),
        # so anything it raises is a store failure, as under requeue_command.
        counts = purge_now(store, settings.orders.messages)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        print(store_failure(exc, "the purge stopped; the batches purged before it stay "
                                 "purged"), file=sys.stderr)
        return EXIT_FAILED
    finally:
        store.close()
    if not counts:
        print("nothing to purge: orders.messages keeps every message (days: 0)")
    for what, n in counts.items():
        print(f"purged {n} {what} message(s)")
    return EXIT_OK
