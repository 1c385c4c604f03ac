"""`receiver users`: the console's users (add, list) and API tokens for machine clients.

The password is read from standard input (one line; never an argument, which other users
could see in the process list). Every change is journaled in the audit trail as made by
``cli`` (the operating-system user running the command). The users live in the configured
store: ``[store] url`` (PostgreSQL) when set, else the SQLite file ``[store] path``.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from protocols.errors import InvalidInputError, NotFoundError
from receiver.cli.output import add_format_option, emit
from receiver.config import Config, load_config
from receiver.console.auth import (
    MIN_PASSWORD,
    ROLES,
    hash_password,
    new_token,
    token_hash,
    valid_user_name,
)
from receiver.console.state import now_us
from receiver.journal import from_us
from receiver.store import open_console_store
from receiver.store.interface import ConsoleTables


def _who() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def _name(text: str) -> str:
    name = text.strip()
    if not valid_user_name(name):
        raise InvalidInputError(
            f"user name must be 1-64 printable characters without spaces: {text!r}"
        )
    return name


def _read_password() -> str:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < MIN_PASSWORD:
        raise InvalidInputError(f"password must have at least {MIN_PASSWORD} characters")
    return password


@contextmanager
def _console(config: Config) -> Iterator[ConsoleTables]:
    """The console's users in the configured store (its ``console()``), closed afterwards."""
    store = open_console_store(config.store)
    try:
        tables = store.console()
    finally:
        store.close()
    try:
        yield tables
    finally:
        tables.close()


def _add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = _name(args.name)
    password_hash = hash_password(_read_password())
    with _console(config) as console:
        console.save_user(name, args.role, password_hash, now_us(), _who())
    print(f"user {name} ({args.role}) saved")
    return 0


def _list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with _console(config) as console:
        rows = console.users()
    for row in rows:
        row["created"] = from_us(row.pop("created_us")).isoformat(timespec="seconds")
        row["disabled"] = bool(row["disabled"])
    emit(rows, ("name", "role", "created", "disabled"), args.format)
    return 0


def _token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    name = _name(args.name)
    token = new_token()
    with _console(config) as console:
        if not console.add_api_token(name, token_hash(token), args.label, now_us(), _who()):
            raise NotFoundError(f"no user named {name!r}")
    print(token)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("users", help="console users and API tokens")
    users = parser.add_subparsers(dest="users_command", metavar="ACTION", required=True)
    add = users.add_parser(
        "add", help="add a user (or reset one's role and password); password on stdin"
    )
    add.add_argument("name")
    add.add_argument("--role", choices=ROLES, required=True)
    add.set_defaults(handler=_add)
    listing = users.add_parser("list", help="list the console's users")
    add_format_option(listing)
    listing.set_defaults(handler=_list)
    token = users.add_parser("token", help="print a new API token for a user (shown once)")
    token.add_argument("name")
    token.add_argument("--label", default=None, help="what the token is for")
    token.set_defaults(handler=_token)
