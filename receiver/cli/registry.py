"""`receiver stations|dealers|sites|accounts`: the station registry.

Exit codes: 0 ok (``accounts check``: the number is free), 1 refused (a collision, names the
holder; something not found), 2 bad input. Warnings (a number typed with its line's prefix)
go to stderr and do not change the exit code. ``accounts import`` is all-or-nothing and prints
every problem with its CSV line (the header is line 1); progress goes to stderr only when
stderr is a terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from protocols.errors import InvalidInputError
from receiver.cli.config import configured
from receiver.cli.output import add_format_option, emit
from receiver.registry import (
    ARMING_SOURCES,
    DEFAULT_LINE,
    KEY_FORMATS,
    WINDOW_POLICIES,
    AccountKey,
    AccountSpec,
    Registry,
    read_import_csv,
)

ACCOUNT_COLUMNS = (
    "station",
    "line",
    "number",
    "effective",
    "site",
    "dealer",
    "key_format",
    "supervision",
    "window_past",
    "window_future",
    "window_policy",
)


@contextmanager
def open_registry(args: argparse.Namespace) -> Iterator[Registry]:
    """The registry in the configured store (``--config``), closed afterwards."""
    registry = Registry.open(configured(args).store.path)
    try:
        yield registry
    finally:
        registry.close()


def warn(message: str) -> None:
    print(f"receiver: warning: {message}", file=sys.stderr)


# -- stations ---------------------------------------------------------------------------------


def _stations_add(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.add_station(args.name)
    print(f"added station {args.name.strip()} (line {DEFAULT_LINE}, no prefix)")
    return 0


def _stations_add_line(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        number = registry.add_line(args.name, args.number, args.prefix)
    prefix = f"prefix {args.prefix.strip().upper()}" if args.prefix else "no prefix"
    print(f"added line {number} ({prefix}) to station {args.name.strip()}")
    return 0


def _stations_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.lines()
    emit(rows, ("station", "line", "prefix", "accounts"), args.format)
    return 0


# -- dealers and sites ---------------------------------------------------------------------


def _dealers_add(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.add_dealer(args.name)
    print(f"added dealer {args.name.strip()}")
    return 0


def _dealers_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.dealers()
    emit(rows, ("name",), args.format)
    return 0


def _sites_add(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.add_site(
            args.name,
            dealer=args.dealer,
            address=args.address,
            arming_source=args.arming_source,
        )
    print(f"added site {args.name.strip()} (dealer {args.dealer.strip()})")
    return 0


def _sites_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.sites()
    emit(rows, ("name", "dealer", "address", "arming_source"), args.format)
    return 0


# -- accounts -------------------------------------------------------------------------------


def _key(args: argparse.Namespace) -> AccountKey | None:
    if args.key is None:
        if args.key_format is not None:
            raise InvalidInputError("--key-format needs --key")
        return None
    return AccountKey.parse(args.key, args.key_format or "hex")


def _accounts_add(args: argparse.Namespace) -> int:
    spec = AccountSpec(
        line=args.line,
        number=args.number,
        site=args.site,
        key=_key(args),
        supervision=args.supervision,
        window_past=args.window_past,
        window_future=args.window_future,
        window_policy=args.window_policy,
    )
    with open_registry(args) as registry:
        added = registry.add_account(args.station, spec)
    for message in added.warnings:
        warn(message)
    print(
        f"added account {added.effective} (line {added.line}, number {added.number}) "
        f"at station {added.station}"
    )
    for serial in added.attached_bridges:
        print(f"bridge {serial} now reports under account {added.effective}")
    return 0


def _accounts_check(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        check = registry.check_account(args.station, args.line, args.number)
    for message in check.warnings:
        warn(message)
    if check.holder is not None:
        print(
            f"receiver: account {check.effective} is taken at station {check.station}: "
            f"{check.holder.describe()}",
            file=sys.stderr,
        )
        return 1
    print(f"account {check.effective} is free at station {check.station}")
    return 0


def _progress(done: int, total: int) -> None:
    end = "\n" if done == total else ""
    print(f"\rchecked {done}/{total} rows", end=end, file=sys.stderr, flush=True)


def _accounts_import(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as stream:
            rows = read_import_csv(stream)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{args.file} is not UTF-8 text") from None
    progress = _progress if sys.stderr.isatty() else None
    with open_registry(args) as registry:
        report = registry.import_accounts(
            args.station, rows, dry_run=args.dry_run, progress=progress
        )
    for problem in report.problems:
        print(f"receiver: {problem.describe()}", file=sys.stderr)
    if report.refused:
        collisions = sum(1 for p in report.errors if p.kind == "collision")
        others = len(report.errors) - collisions
        print(
            f"receiver: import refused: {collisions} collision(s) and {others} other "
            f"problem(s) in {args.file}; nothing imported",
            file=sys.stderr,
        )
        refused = any(p.kind in ("collision", "not_found") for p in report.errors)
        return 1 if refused else 2
    if report.dry_run:
        print(f"dry run: {report.rows} account(s) would be imported to station {report.station}")
    else:
        print(f"imported {report.imported} account(s) to station {report.station}")
    return 0


def _accounts_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.list_accounts(args.station)
    emit(rows, ACCOUNT_COLUMNS, args.format)
    return 0


def _number_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--station", required=True, help="station name")
    parser.add_argument(
        "--line",
        default=DEFAULT_LINE,
        help="line number, the DC-09 L value in hex (default 0; L0, 000 and 0 are the same)",
    )
    parser.add_argument("number", help="account number: 3-16 letters or digits, as programmed")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    stations = sub.add_parser("stations", help="monitoring stations and their lines")
    ssub = stations.add_subparsers(dest="stations_command", metavar="COMMAND")
    ssub.required = True
    p = ssub.add_parser("add", help="add a station (with its line 0, no prefix)")
    p.add_argument("name")
    p.set_defaults(handler=_stations_add)
    p = ssub.add_parser("add-line", help="add a line to a station")
    p.add_argument("name", help="station name")
    p.add_argument("number", help="line number, the DC-09 L value (1-6 hex digits)")
    p.add_argument("--prefix", help="prefix the receiver adds to account numbers on this line")
    p.set_defaults(handler=_stations_add_line)
    p = ssub.add_parser("list", help="list stations with their lines and prefixes")
    add_format_option(p)
    p.set_defaults(handler=_stations_list)

    dealers = sub.add_parser("dealers", help="dealers (each has an alarm library)")
    dsub = dealers.add_subparsers(dest="dealers_command", metavar="COMMAND")
    dsub.required = True
    p = dsub.add_parser("add", help="add a dealer")
    p.add_argument("name")
    p.set_defaults(handler=_dealers_add)
    p = dsub.add_parser("list", help="list dealers")
    add_format_option(p)
    p.set_defaults(handler=_dealers_list)

    sites = sub.add_parser("sites", help="customer sites")
    tsub = sites.add_subparsers(dest="sites_command", metavar="COMMAND")
    tsub.required = True
    p = tsub.add_parser("add", help="add a site")
    p.add_argument("name")
    p.add_argument("--dealer", required=True, help="the site's dealer")
    p.add_argument("--address", help="street address")
    p.add_argument("--arming-source", choices=ARMING_SOURCES, help="what arms the site's bridges")
    p.set_defaults(handler=_sites_add)
    p = tsub.add_parser("list", help="list sites")
    add_format_option(p)
    p.set_defaults(handler=_sites_list)

    accounts = sub.add_parser(
        "accounts",
        help="accounts, with the account-number collision check",
        description=(
            "An account number is unique within its station on its effective form: the line's "
            "prefix + the number, upper-cased (leading zeros count)."
        ),
    )
    asub = accounts.add_subparsers(dest="accounts_command", metavar="COMMAND")
    asub.required = True
    p = asub.add_parser("add", help="add an account (refused if its number is taken)")
    _number_options(p)
    p.add_argument("--site", help="the site the account belongs to")
    p.add_argument("--key", help="DC-09 AES key (16, 24 or 32 bytes)")
    p.add_argument("--key-format", choices=KEY_FORMATS, help="how --key is written (default hex)")
    p.add_argument("--supervision", type=float, metavar="SECONDS", help="expected poll interval")
    p.add_argument("--window-past", type=float, metavar="SECONDS", help="timestamp window")
    p.add_argument("--window-future", type=float, metavar="SECONDS", help="timestamp window")
    p.add_argument("--window-policy", choices=WINDOW_POLICIES, help="outside the window")
    p.set_defaults(handler=_accounts_add)
    p = asub.add_parser("check", help="exit 0 if the number is free, 1 (naming the holder) if not")
    _number_options(p)
    p.set_defaults(handler=_accounts_check)
    p = asub.add_parser(
        "import",
        help="import accounts from CSV, all or nothing",
        description=(
            "CSV with a header row: columns line and number required; site, key, key_format, "
            "supervision, window_past, window_future, window_policy optional. On any collision "
            "(with the registry or inside the file) nothing is imported and every problem is "
            "reported with its CSV line (the header is line 1)."
        ),
    )
    p.add_argument("--station", required=True, help="station name")
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--dry-run", action="store_true", help="only check and report")
    p.set_defaults(handler=_accounts_import)
    p = asub.add_parser("list", help="list accounts (keys are never printed, only their format)")
    p.add_argument("--station", help="only this station")
    add_format_option(p)
    p.set_defaults(handler=_accounts_list)
