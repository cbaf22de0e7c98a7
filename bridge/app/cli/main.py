"""The ``mwl-bridge`` command line."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.app.cli.admin import add_admin_commands
from bridge.app.cli.audit import add_audit_commands
from bridge.app.cli.common import EXIT_CONFIG, open_configured_store, settings_from
from bridge.app.cli.db import add_db_commands
from bridge.app.cli.importer import add_import_commands
from bridge.app.cli.mapping import add_mapping_commands
from bridge.app.cli.messages import add_message_commands
from bridge.app.cli.mpps import add_mpps_commands
from bridge.app.cli.outbox import add_outbox_commands
from bridge.app.cli.reconcile import add_reconcile_commands
from bridge.app.cli.status import add_status_commands

if TYPE_CHECKING:
    from bridge.store import StepRow
from bridge.app.settings import DEFAULT_CONFIG_NAME, Settings, find_config

DESCRIPTION = """\
mwl-bridge: an HL7 v2 to DICOM Modality Worklist bridge.

It listens for HL7 orders over MLLP (default 127.0.0.1:2575), maps them with
the files in mappings/ into Scheduled Procedure Steps, stores them (SQLite by
default, in ./data), and answers modality worklist queries (C-FIND) as a DICOM
SCP (default AE title MWLBRIDGE on 127.0.0.1:11112).

Quick start:
  mwl-bridge serve                                  start with the defaults
  mwl-bridge send fixtures/hl7/orm-o01-ihe-ct.hl7   send an order, print the ACK
  mwl-bridge worklist                               list what is scheduled
  findscu -W -k ScheduledProcedureStepSequence[0].Modality=CT \\
          -aec MWLBRIDGE 127.0.0.1 11112             query it as a modality would
"""

EPILOG = f"""\
Configuration: --config FILE, else ./{DEFAULT_CONFIG_NAME} when present, else
built-in defaults. Any setting can be overridden by an environment variable:
MWL_BRIDGE_<SECTION>__<KEY>, e.g. MWL_BRIDGE_MLLP__PORT=2576.
See mwl-bridge.example.yaml and docs/operations.md.
"""

EXIT_NACK = 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_CONFIG
    return int(args.run(args) or 0)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mwl-bridge", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-c", "--config", type=Path, default=None,
                   help=f"config file (default: ./{DEFAULT_CONFIG_NAME} if present)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the daemon (MLLP listener and worklist SCP)")
    serve.set_defaults(run=_serve)

    check = sub.add_parser("check-config",
                           help="validate the config and the mapping files, then exit")
    check.set_defaults(run=_check_config)

    send = sub.add_parser("send", help="send HL7 files over MLLP and print each ACK")
    send.add_argument("files", nargs="+", type=Path, metavar="FILE",
                      help="HL7 file(s); a file may hold several messages")
    send.add_argument("--host", default=None, help="default: mllp.host from the config")
    send.add_argument("--port", type=int, default=None, help="default: mllp.port")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for an ACK")
    send.set_defaults(run=_send)

    wl = sub.add_parser("worklist", help="list stored worklist items as a table, in schedule "
                                         "order, streamed page by page")
    wl.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    wl.add_argument("--page", type=int, default=1, help="which page (default 1)")
    wl.add_argument("--station", default="", help="only this Scheduled Station AE Title")
    wl.add_argument("--modality", default="", help="only this modality")
    wl.add_argument("--date", default="", help="only this SPS start date (YYYYMMDD)")
    wl.add_argument("--date-from", default="", help="SPS start date on or after (YYYYMMDD)")
    wl.add_argument("--date-to", default="", help="SPS start date on or before (YYYYMMDD)")
    wl.add_argument("--status", default="", help="only this SPS status (e.g. SCHEDULED)")
    wl.add_argument("--patient-id", default="", help="only this Patient ID")
    wl.add_argument("--accession", default="", help="only this Accession Number")
    wl.set_defaults(run=_worklist)

    add_outbox_commands(sub)
    add_mpps_commands(sub)
    add_status_commands(sub)
    add_reconcile_commands(sub)
    add_db_commands(sub)

    add_mapping_commands(sub)

    add_message_commands(sub)

    add_admin_commands(sub)

    add_import_commands(sub)

    add_audit_commands(sub)
    return p


def _setup_logging(settings: Settings) -> None:
    from bridge.app.logs import setup_logging

    # logging.format text or json (bridge/app/logs.py); pynetdicom and pydicom
    # stay quiet unless the operator has asked for patient data in the logs.
    setup_logging(settings.logging.level, fmt=settings.logging.format,
                  log_phi=settings.logging.log_phi)


def _stderr(settings: Settings) -> Callable[[str], None]:
    """How serve reports why it stops: a line of text, or with logging.format json
    an ERROR record (so that every line on standard error is JSON)."""
    if settings.logging.format != "json":
        return lambda text: print(text, file=sys.stderr)
    return logging.getLogger("bridge.app").error


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    _setup_logging(settings)
    say = _stderr(settings)
    from bridge.app.daemon import Daemon
    from bridge.app.services import StartupError
    from bridge.mapping import MappingLoadError
    from bridge.store import StoreError
    from bridge.tls import TlsConfigError

    daemon = Daemon(settings)
    try:
        asyncio.run(daemon.run())
    except TlsConfigError as exc:
        say(f"TLS configuration error: {exc}")
        return EXIT_CONFIG
    except MappingLoadError as exc:
        say("mapping error:")
        for err in exc.errors:
            say(f"  {err}")
        return EXIT_CONFIG
    except (StartupError, StoreError) as exc:
        say(f"cannot start: {exc}")
        return EXIT_CONFIG
    except OSError as exc:
        say(f"cannot start: {exc}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # one line for the operator, the details at DEBUG
        when = "stopped" if daemon.ready else "cannot start"
        logging.getLogger("bridge").debug("daemon failure", exc_info=exc)
        # Only the type and the message: no traceback in the operator's terminal
        # (run with logging.level DEBUG to see it).
        say(f"{when}: {type(exc).__name__}: {exc}")
        return EXIT_CONFIG if not daemon.ready else EXIT_NACK
    return 0


def _check_config(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    from bridge.mapping import MappingLoadError, load_mappings

    try:
        mappings = load_mappings(settings.mapping.paths,
                                 default_station_aet=settings.mapping.default_station_aet,
                                 python_hooks=settings.mapping.python_hooks)
    except MappingLoadError as exc:
        print("mapping error:", file=sys.stderr)
        for err in exc.errors:
            print(f"  {err}", file=sys.stderr)
        return EXIT_CONFIG
    from bridge.audit.service import transport_for
    from bridge.mpps.forward import destination_contexts as forward_contexts
    from bridge.outbound.tls import destination_contexts
    from bridge.reconcile.query import pacs_contexts
    from bridge.tls import TlsConfigError, check_listeners
    try:
        check_listeners(settings.dicom.tls, settings.mllp.tls)
        destination_contexts(settings.outbound.destinations)
        forward_contexts(settings.mpps.forward)
        pacs_contexts(settings.reconcile.pacs)  # the PACS the reconciliation loop asks
        for i, repository in enumerate(settings.audit.repositories):  # the audit trail's ARRs
            transport_for(repository, i).close()
    except TlsConfigError as exc:
        print(f"TLS configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    from bridge.store import StoreError
    try:  # the secrets' files and variables, as serve reads them (never printed)
        settings.store.postgresql_password()
        settings.store.sqlcipher_key()
    except StoreError as exc:
        print(f"store error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    source = find_config(args.config) or "built-in defaults"
    print(f"config OK ({source})")
    print(f"  MLLP     {settings.mllp.host}:{settings.mllp.port}")
    print(f"  DICOM    {settings.dicom.ae_title} on {settings.dicom.host}:{settings.dicom.port}")
    store = (settings.sqlite_path if settings.store.backend == "sqlite"
             else "postgresql")
    print(f"  store    {store}")
    print(f"  mappings {', '.join(mappings.names)}")
    return 0


def _send(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    from bridge.hl7 import ack_code_of, split_messages

    host = args.host or settings.mllp.host
    port = args.port or settings.mllp.port
    batches: list[tuple[Path, list[bytes]]] = []
    for path in args.files:
        try:
            batches.append((path, split_messages(path.read_bytes())))
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            return EXIT_CONFIG
    try:
        replies = asyncio.run(_send_all(host, port, batches, args.timeout))
    except (OSError, TimeoutError) as exc:
        print(f"cannot reach {host}:{port}: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_NACK
    worst = 0
    for (path, index), ack in replies:
        code = ack_code_of(ack)
        print(f"{path} #{index}: {code or 'no ACK'}")
        for line in ack.replace(b"\r\n", b"\r").split(b"\r"):
            if line:
                print("    " + line.decode("latin-1"))
        if code not in ("AA", "CA"):
            worst = EXIT_NACK
    return worst


async def _send_all(host: str, port: int, batches: list[tuple[Path, list[bytes]]],
                    timeout: float) -> list[tuple[tuple[Path, int], bytes]]:
    from bridge.hl7 import MllpClient

    client = await MllpClient.connect(host, port, timeout=timeout)
    out = []
    try:
        for path, messages in batches:
            for i, message in enumerate(messages, 1):
                out.append(((path, i), await client.send(message, timeout=timeout)))
    finally:
        await client.close()
    return out


_WORKLIST_HEADER = ("DATE", "TIME", "STATION", "MOD", "ACCESSION", "PATIENT ID",
                    "PATIENT NAME", "STATUS")


def _worklist(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    if args.limit < 1 or args.page < 1:
        print("--limit and --page are 1 or more", file=sys.stderr)
        return EXIT_CONFIG
    for flag, value in (("--date", args.date), ("--date-from", args.date_from),
                        ("--date-to", args.date_to)):
        if value and not (len(value) == 8 and value.isdigit()):
            print(f"{flag}: YYYYMMDD, not {value!r}", file=sys.stderr)
            return EXIT_CONFIG
    from bridge.store import StepFilter

    where = StepFilter(station=args.station, modality=args.modality, date=args.date,
                       status=args.status, patient_id=args.patient_id,
                       accession=args.accession, date_from=args.date_from,
                       date_to=args.date_to)
    store = open_configured_store(settings)
    shown = 0
    try:
        rows = store.iter_steps(where, limit=args.limit, offset=(args.page - 1) * args.limit)
        # Column widths come from the first batch, then rows are printed as they are
        # read: a listing of a large store starts at once and holds one batch in memory.
        for batch in _batches((_worklist_row(row) for row in rows), 200):
            if shown == 0:
                widths = [max(len(r[i]) for r in [_WORKLIST_HEADER, *batch])
                          for i in range(len(_WORKLIST_HEADER))]
                print(_table_line(_WORKLIST_HEADER, widths))
            for r in batch:
                print(_table_line(r, widths))
            shown += len(batch)
        total = store.count_matching(where)
    finally:
        store.close()
    if shown == 0:
        print(_table_line(_WORKLIST_HEADER, [len(h) for h in _WORKLIST_HEADER]))
    first = (args.page - 1) * args.limit + 1
    where_text = f", items {first}-{first + shown - 1}" if shown and args.page > 1 else ""
    print(f"({shown} of {total} item(s){where_text})")
    return 0


def _worklist_row(row: StepRow) -> tuple[str, ...]:
    ds = row.item
    sps = ds.ScheduledProcedureStepSequence[0] if ds.get("ScheduledProcedureStepSequence") \
        else None
    return (_g(sps, "ScheduledProcedureStepStartDate"), _g(sps, "ScheduledProcedureStepStartTime"),
            _g(sps, "ScheduledStationAETitle"), _g(sps, "Modality"), _g(ds, "AccessionNumber"),
            _g(ds, "PatientID"), _g(ds, "PatientName"), row.sps_status)


def _batches(rows: Iterator[tuple[str, ...]], size: int) -> Iterator[list[tuple[str, ...]]]:
    batch: list[tuple[str, ...]] = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _table_line(values: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()


def _g(ds: object, keyword: str) -> str:
    if ds is None:
        return ""
    value = getattr(ds, keyword, "")
    if value is None:
        return ""
    if not isinstance(value, str) and hasattr(value, "__iter__") and keyword.endswith("Title"):
        return "\\".join(str(v) for v in value)
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
