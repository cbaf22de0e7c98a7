"""``mwl-bridge mapping check | explain | test``: the mapping author's tools.

    mwl-bridge mapping check [FILES]         validate mapping files (default: the configured ones)
    mwl-bridge mapping explain MESSAGE.hl7   routing, and each attribute's value, field and rule
    mwl-bridge mapping test [PATHS]          run golden cases (default: cases/ beside the mappings)

Exit codes: 0 all good; 1 the files have problems, the message is rejected, or
a case fails; 2 the command cannot run (configuration, unreadable input, no cases).
Heavy imports happen inside the commands, so ``mwl-bridge --help`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.app.cli.common import settings_from

if TYPE_CHECKING:
    from bridge.app.settings import Settings
    from bridge.mapping.engine import MappingSet

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

_HELP = """\
Tools for mapping authors. Mapping files are described in docs/mapping.md.

  check [FILES]           validate mapping files; default: mapping.paths of the config
  explain MESSAGE.hl7     which mapping routes the message, and for each DICOM
                          attribute its value, the HL7 field it came from and the rule
  test [PATHS]            run golden cases: each <case>.hl7 with its
                          <case>.expected.yaml (or .expected.json) beside it;
                          default: the cases/ folder beside each mapping folder

Exit codes: 0 good; 1 problems found, message rejected or case failed; 2 cannot run.
"""


def add_mapping_commands(subparsers: Any) -> None:
    """Register ``mapping check|explain|test`` on the CLI's sub-command parsers."""
    mapping = subparsers.add_parser(
        "mapping", help="check, explain and test mapping files",
        description=_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = mapping.add_subparsers(dest="mapping_command", metavar="ACTION")
    mapping.set_defaults(run=lambda args: _no_action(mapping))

    check = sub.add_parser("check", help="validate mapping files")
    check.add_argument("files", nargs="*", type=Path, metavar="FILE",
                       help="mapping files or folders (default: mapping.paths of the config)")
    check.set_defaults(run=_check)

    explain = sub.add_parser("explain", help="show how a message is mapped, attribute by "
                                             "attribute")
    explain.add_argument("message", type=Path, metavar="MESSAGE.hl7",
                         help="a file with one or more HL7 messages")
    explain.add_argument("--mappings", nargs="+", type=Path, metavar="PATH",
                         help="mapping files or folders (default: mapping.paths of the config)")
    explain.set_defaults(run=_explain)

    test = sub.add_parser("test", help="run golden cases")
    test.add_argument("paths", nargs="*", type=Path, metavar="PATH",
                      help="case files or folders (default: cases/ beside the mappings)")
    test.add_argument("--mappings", nargs="+", type=Path, metavar="PATH",
                      help="mapping files or folders (default: mapping.paths of the config)")
    test.add_argument("--update", action="store_true",
                      help="write the expected file of each failing or new case from the "
                           "current output (review the change before committing it)")
    test.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    test.set_defaults(run=_test)


def _shown(path: Path) -> str:
    from bridge.mapping.explain import shown_path

    return shown_path(path)


def _no_action(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _load(settings: Settings, paths: list[Path] | None) -> MappingSet | None:
    """The mapping set, or None after printing every problem (file:line: key: problem)."""
    from bridge.mapping.errors import MappingLoadError
    from bridge.mapping.loader import load_mappings

    try:
        return load_mappings(paths or settings.mapping.paths,
                             default_station_aet=settings.mapping.default_station_aet,
                             python_hooks=settings.mapping.python_hooks)
    except MappingLoadError as exc:
        for err in exc.errors:
            print(err)
        files = {err.path for err in exc.errors}
        print(f"{len(exc.errors)} problem{'s' if len(exc.errors) != 1 else ''} in "
              f"{len(files)} file{'s' if len(files) != 1 else ''}; the mappings were not "
              "loaded")
        return None


# -- check ------------------------------------------------------------------------------

def _check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_USAGE
    mappings = _load(settings, args.files or None)
    if mappings is None:
        return EXIT_FAIL
    from bridge.mapping.explain import routing_order

    order = routing_order(mappings)
    print(f"OK: {len(order)} mapping{'s' if len(order) != 1 else ''}, in routing order:")
    width = max(len(m.name) for m in order)
    for i, m in enumerate(order, 1):
        match = m.match
        kinds = ", ".join(c + (f"^{e}" if e else "^*") for c, e in match.types) or "any type"
        extra = [f"HL7 {'/'.join(match.versions)}"] if match.versions else []
        if match.applications or match.facilities:
            extra.append("from " + "/".join(sorted(match.applications | match.facilities)))
        if match.when is not None:
            extra.append(f"when {_when_text(m.path)}")
        if match.fallback:
            extra.append("fallback")
        print(f"  {i}. {m.name.ljust(width)}  {kinds} ({', '.join(extra) or 'any'})  "
              f"{_shown(m.path)}")
    return EXIT_OK


def _when_text(path: Path) -> str:
    from bridge.yamlsrc import SourceError, load_yaml

    try:
        when = load_yaml(path).data["match"]["when"]
    except (SourceError, KeyError, TypeError):
        return "..."
    return when if isinstance(when, str) else str(when)


# -- explain -----------------------------------------------------------------------------

def _explain(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_USAGE
    from bridge.hl7 import CharsetError, HL7ParseError, decode_frame, parse_message, split_messages

    try:
        frames = split_messages(args.message.read_bytes())
    except OSError as exc:
        print(f"{args.message}: cannot read: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as exc:
        print(f"{args.message}: not an HL7 message: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not frames:
        print(f"{args.message}: no HL7 message (no MSH segment)", file=sys.stderr)
        return EXIT_USAGE
    messages = []
    for number, frame in enumerate(frames, 1):
        try:
            decoded = decode_frame(frame, default=settings.mllp.default_charset,
                                   aliases=settings.mllp.charset_aliases)
            messages.append(parse_message(decoded.text, codec=decoded.codec))
        except (CharsetError, HL7ParseError) as exc:
            print(f"{args.message}: message {number}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    mappings = _load(settings, args.mappings)
    if mappings is None:
        return EXIT_USAGE
    from bridge.mapping.explain import explain, render

    worst = EXIT_OK
    for number, message in enumerate(messages, 1):
        if len(messages) > 1:
            print(f"=== {args.message} message {number} of {len(messages)}")
        exp = explain(mappings, message)
        sys.stdout.write(render(exp))
        if exp.error is not None:
            worst = EXIT_FAIL
        if number < len(messages):
            print()
    return worst


# -- test ---------------------------------------------------------------------------------

def _test(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings is None:
        return EXIT_USAGE
    from bridge.mapping.cases import (
        CaseError,
        HandWrittenCase,
        default_case_paths,
        discover,
        run_case,
        write_expected,
    )

    mapping_paths = args.mappings or settings.mapping.paths
    paths = args.paths or default_case_paths(mapping_paths)
    if not paths:
        print("no golden cases: no cases/ folder beside "
              + ", ".join(str(p) for p in mapping_paths), file=sys.stderr)
        return EXIT_USAGE
    try:
        cases = discover(paths)
    except CaseError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if not cases:
        print("no golden cases (*.hl7) in " + ", ".join(str(p) for p in paths),
              file=sys.stderr)
        return EXIT_USAGE
    mappings = _load(settings, args.mappings)
    if mappings is None:
        return EXIT_USAGE
    counts = {"pass": 0, "fail": 0, "new": 0, "broken": 0, "updated": 0}
    for case in cases:
        outcome = run_case(mappings, case, default_charset=settings.mllp.default_charset,
                           aliases=settings.mllp.charset_aliases)
        status: str = outcome.status
        refused = ""
        if args.update and status in ("fail", "new") and outcome.actual is not None:
            try:
                write_expected(case, outcome.actual)
                status = "updated"
            except HandWrittenCase as exc:  # stays a failure: a regeneration cannot bless it
                refused = f"not updated: {exc}"
        counts[status] += 1
        rejected = outcome.actual is not None and "error" in outcome.actual
        what = ", ".join(
            [outcome.mapping or "no mapping"]
            + (["rejected"] if rejected else
               [f"{outcome.items} item{'s' if outcome.items != 1 else ''}"]))
        if status == "pass" and args.quiet:
            continue
        print(f"{status.upper():7} {_shown(case.message)}  ({what})")
        if status in ("fail", "new", "broken"):
            for line in [*outcome.detail.splitlines(), *filter(None, [refused])]:
                print(f"        {line}")
    labels = {"pass": "passed", "fail": "failed", "new": "new", "broken": "broken",
              "updated": "updated"}
    print(", ".join(f"{n} {labels[k]}" for k, n in counts.items()
                    if n or k in ("pass", "fail")))
    bad = counts["fail"] + counts["new"] + counts["broken"]
    return EXIT_FAIL if bad else EXIT_OK
