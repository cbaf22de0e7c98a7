"""``mwl-bridge admin ...``: what setting up the operator console needs.

    mwl-bridge admin hash-password [--stdin]   an argon2 hash for admin.users[].password_hash
    mwl-bridge admin new-token                 an API token and its SHA-256 for admin.tokens
    mwl-bridge admin openapi                   the API's OpenAPI document (docs/openapi.json)

The password is read without echo (or one line from standard input with
``--stdin``); only the hash is printed, for the config file.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_admin_commands(sub: Any) -> None:
    """Register ``admin`` on the CLI's subcommand parser."""
    admin = sub.add_parser("admin", help="operator console set-up: password hashes, API "
                                         "tokens, the OpenAPI document")
    cmds = admin.add_subparsers(dest="admin_command", metavar="ACTION")
    admin.set_defaults(run=lambda args: _help(admin))

    hp = cmds.add_parser("hash-password",
                         help="print an argon2 hash for admin.users[].password_hash")
    hp.add_argument("--stdin", action="store_true",
                    help="read the password from the first line of standard input")
    hp.set_defaults(run=_hash_password)

    tok = cmds.add_parser("new-token", help="print a new API token and its SHA-256 for "
                                            "admin.tokens[].token_sha256")
    tok.set_defaults(run=_new_token)

    spec = cmds.add_parser("openapi", help="print the API's OpenAPI document")
    spec.set_defaults(run=_openapi)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return EXIT_USAGE


def _hash_password(args: argparse.Namespace) -> int:
    from bridge.console.auth import hash_password

    if args.stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the two passwords differ", file=sys.stderr)
            return EXIT_FAILED
    if len(password) < 8:
        print("a password has 8 characters or more", file=sys.stderr)
        return EXIT_FAILED
    print(hash_password(password))
    return EXIT_OK


def _new_token(args: argparse.Namespace) -> int:
    from bridge.console.auth import new_token

    token, digest = new_token()
    print(f"token (give it to the script; it is not kept): {token}")
    print(f"token_sha256 (for admin.tokens in the config): {digest}")
    return EXIT_OK


def _openapi(args: argparse.Namespace) -> int:
    from bridge.console.openapi import document_text

    sys.stdout.write(document_text())
    return EXIT_OK
