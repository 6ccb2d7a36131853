"""`dunwise user add EMAIL --role ROLE`, `dunwise user totp EMAIL`, `dunwise apikey create
EMAIL` and `dunwise apikey revoke KEY_OR_PREFIX`: console users and their API keys.

A password is never taken from the command line, where other users of the machine and the
shell's history would see it: it is read from standard input (its first line) when that is
not a terminal, else prompted for twice without echo. A new key or one-time-code secret is
printed once, alone on standard output; it cannot be shown again.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from typing import TypeVar

from sqlmodel import Session

from commands.errors import CommandError
from ledger.api_keys import create_api_key, revoke_api_key
from ledger.db import make_engine, session_scope
from ledger.migrate import upgrade
from ledger.users import (
    UserError,
    add_user,
    check_password,
    enable_totp,
    normalize_email,
    parse_role,
)
from settings import Settings

T = TypeVar("T")


def user_command(settings: Settings, args: argparse.Namespace) -> None:
    match args.action:
        case "add":
            # Refuse what can be refused before asking for a password.
            _refused_as_command_error(normalize_email, args.email)
            role = _refused_as_command_error(parse_role, args.role)
            password = read_new_password()
            user = _in_ledger(
                settings, lambda session: add_user(session, args.email, password, role)
            )
            print(f"added {user.email} as {user.role}")
        case "totp":
            issuer = settings.company_name
            uri = _in_ledger(
                settings, lambda session: enable_totp(session, args.email, issuer=issuer)
            )
            print(uri)
            print(
                "Scan it (or enter it) in an authenticator app: from now on signing in needs "
                "the app's code. It is not shown again.",
                file=sys.stderr,
            )
        case _:
            raise CommandError(f"unknown action {args.action!r}")


def apikey_command(settings: Settings, args: argparse.Namespace) -> None:
    match args.action:
        case "create":
            key = _in_ledger(settings, lambda session: create_api_key(session, args.email))
            print(key)
            print("Store this key now: it is not shown again.", file=sys.stderr)
        case "revoke":
            keys = _in_ledger(settings, lambda session: revoke_api_key(session, args.key))
            many = f"{len(keys)} API keys" if len(keys) > 1 else "the API key"
            print(f"revoked {many} starting dw_{keys[0].prefix}")
        case _:
            raise CommandError(f"unknown action {args.action!r}")


def read_new_password() -> str:
    """The first line of standard input when it is not a terminal; else prompted twice."""
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CommandError("no password on standard input: give it as the first line")
        password = line.rstrip("\r\n")
    else:
        password = getpass.getpass("Password (at least 12 characters): ")
        _refused_as_command_error(check_password, password)
        if getpass.getpass("The same password again: ") != password:
            raise CommandError("the two passwords differ; nothing was changed")
    _refused_as_command_error(check_password, password)
    return password


def _in_ledger(settings: Settings, change: Callable[[Session], T]) -> T:
    """Run `change(session)` in one transaction on the migrated ledger; its answer."""
    upgrade(settings.effective_database_url)
    engine = make_engine(settings.effective_database_url)
    try:
        with session_scope(engine) as session:
            return _refused_as_command_error(change, session)
    finally:
        engine.dispose()


def _refused_as_command_error(function: Callable[..., T], *args: object) -> T:
    try:
        return function(*args)
    except UserError as err:
        raise CommandError(str(err)) from None
