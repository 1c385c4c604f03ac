"""`receiver stations|dealers|sites|accounts`: the station registry.

Exit codes: 0 ok (``accounts check``: the number is free), 1 refused (a collision, names the
holder; something not found), 2 bad input. Warnings (a number typed with its line's prefix)
go to stderr and do not change the exit code. ``accounts import`` is all-or-nothing and prints
every problem with its CSV line (the header is line 1); progress goes to stderr only when
stderr is a terminal.

Lifecycle: ``edit`` (collision-checked like ``add``: refused, exit 1, with the holder named),
``accounts move``, ``remove`` (the row is kept and marked removed: signals and history stay
readable, the number or name is free again; a site with accounts or bridges, a dealer with
sites, only with ``--cascade``), ``accounts set-key --grace SECONDS`` (the previous key stays
accepted that long). ``stations show`` prints a station's XML receiver (the ``[[outputs]]``
name it delivers through, checked against the configuration), whether a passkey is set (never
the passkey), its lines with prefixes and account counts.
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
from receiver.registry.records import KEEP, Keep
from receiver.registry.service import AccountEdit, Removed

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
    """The registry in the configured store (``--config``: ``[store] url`` when set, a
    PostgreSQL server, else the SQLite file ``[store] path``), closed afterwards."""
    registry = Registry.open(configured(args).store)
    try:
        yield registry
    finally:
        registry.close()


def warn(message: str) -> None:
    print(f"receiver: warning: {message}", file=sys.stderr)


# -- stations ---------------------------------------------------------------------------------


def _stations_add(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.add_station(args.name, xml_output=args.xml_output, passkey=args.passkey)
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


def _given(value: Any) -> Any:
    """An option's value for an edit: KEEP when not given; an empty string clears it."""
    if value is None:
        return KEEP
    if isinstance(value, str) and not value.strip():
        return None
    return value


def _stations_edit(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        name = registry.edit_station(
            args.name,
            new_name=args.new_name,
            xml_output=_given(args.xml_output),
            passkey=_given(args.passkey),
        )
    print(f"updated station {name}")
    return 0


def _stations_show(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        record = registry.show_station(args.name)
    outputs = {o.name: o for o in configured(args).outputs}
    output = record["xml_output"]
    found = outputs.get(output) if output else None
    record["xml_output_configured"] = found is not None
    if args.format == "json":
        emit([record], tuple(record), "json")
        return 0
    print(f"station {record['name']}")
    if output is None:
        print("xml receiver: none set (receiver stations edit NAME --xml-output OUTPUT)")
    elif found is None:
        print(f"xml receiver: {output} (not an [[outputs]] name in this configuration)")
    else:
        where = found.settings.get("address") or found.settings.get("directory") or ""
        print(f"xml receiver: {output} ({found.kind} {where})".replace(" )", ")"))
    print(f"passkey: {'set' if record['passkey_set'] else 'not set'}")
    print(f"accounts: {record['accounts']}")
    emit(record["lines"], ("line", "prefix", "accounts"), args.format)
    return 0


def _print_removed(removed: Removed) -> None:
    for serial in removed.bridges:
        print(f"removed bridge {serial}")
    for number in removed.accounts:
        print(f"removed account {number}")
    for site in removed.sites:
        print(f"removed site {site}")


# -- dealers and sites ---------------------------------------------------------------------


def _dealers_edit(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        name = registry.edit_dealer(args.name, new_name=args.new_name)
    print(f"renamed dealer {args.name.strip()} to {name}")
    return 0


def _dealers_remove(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        removed = registry.remove_dealer(args.name, cascade=args.cascade)
    _print_removed(removed)
    print(f"removed dealer {args.name.strip()} (signals and history are kept)")
    return 0


def _sites_edit(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        name = registry.edit_site(
            args.name,
            new_name=args.new_name,
            dealer=args.dealer,
            address=_given(args.address),
            arming_source=_given(args.arming_source),
        )
    print(f"updated site {name}")
    return 0


def _sites_remove(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        removed = registry.remove_site(args.name, cascade=args.cascade)
    _print_removed(removed)
    print("signals and history are kept")
    return 0


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


def _print_edit(edit: AccountEdit, what: str) -> None:
    for message in edit.check.warnings:
        warn(message)
    if what == "removed":
        print(
            f"removed account {edit.was} at station {edit.station} "
            "(its number is free; signals and history are kept)"
        )
    elif edit.was != edit.check.effective:
        print(f"{what} account {edit.was}: now {edit.check.effective} at station {edit.station}")
    else:
        print(f"{what} account {edit.was} at station {edit.station}")
    for serial in edit.detached_bridges:
        warn(f"bridge {serial} no longer reports under {edit.was}: it waits for an account")
    for serial in edit.attached_bridges:
        print(f"bridge {serial} now reports under its site's account")


def _accounts_edit(args: argparse.Namespace) -> int:
    site: str | Keep | None = None if args.no_site else _given(args.site)
    with open_registry(args) as registry:
        edit = registry.edit_account(
            args.station,
            args.line,
            args.number,
            new_line=args.new_line,
            new_number=args.new_number,
            site=site,
            supervision=_given(args.supervision),
            window_past=_given(args.window_past),
            window_future=_given(args.window_future),
            window_policy=_given(args.window_policy),
        )
    _print_edit(edit, "updated")
    return 0


def _accounts_move(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        edit = registry.edit_account(args.station, args.line, args.number, site=args.site)
    _print_edit(edit, f"moved to site {args.site.strip()}:")
    return 0


def _accounts_remove(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        edit = registry.remove_account(args.station, args.line, args.number)
    _print_edit(edit, "removed")
    return 0


def _accounts_set_key(args: argparse.Namespace) -> int:
    key = AccountKey.parse(args.key, args.key_format or "hex")
    with open_registry(args) as registry:
        until = registry.set_key(args.station, args.line, args.number, key, grace=args.grace)
    if until is None:
        print(f"new key for account {args.number.strip()}: only the new key is accepted")
    else:
        print(
            f"new key for account {args.number.strip()}: the previous one is accepted for "
            f"{args.grace:g} s more"
        )
    return 0


def _accounts_list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.list_accounts(args.station)
    emit(rows, ACCOUNT_COLUMNS, args.format)
    return 0


def _number_options(parser: argparse.ArgumentParser, *, station_required: bool = True) -> None:
    parser.add_argument(
        "--station",
        required=station_required,
        help="station name" + ("" if station_required else " (default: the only station)"),
    )
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
    _station_record_options(p)
    p.set_defaults(handler=_stations_add)
    p = ssub.add_parser("edit", help="rename a station or set its XML receiver and passkey")
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", metavar="NEW", help="new name")
    _station_record_options(p)
    p.set_defaults(handler=_stations_edit)
    p = ssub.add_parser("show", help="a station's XML receiver, lines, prefixes, account counts")
    p.add_argument("name")
    add_format_option(p)
    p.set_defaults(handler=_stations_show)
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
    p = dsub.add_parser("edit", help="rename a dealer")
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", metavar="NEW", required=True, help="new name")
    p.set_defaults(handler=_dealers_edit)
    p = dsub.add_parser("remove", help="remove a dealer (signals and history are kept)")
    p.add_argument("name")
    p.add_argument("--cascade", action="store_true", help="remove its sites too")
    p.set_defaults(handler=_dealers_remove)
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
    p = tsub.add_parser("edit", help="rename a site, change its dealer, address or source")
    p.add_argument("name")
    p.add_argument("--name", dest="new_name", metavar="NEW", help="new name")
    p.add_argument("--dealer", help="the site's new dealer")
    p.add_argument("--address", help="street address (empty to clear)")
    p.add_argument(
        "--arming-source", choices=(*ARMING_SOURCES, ""), help="what arms the site's bridges"
    )
    p.set_defaults(handler=_sites_edit)
    p = tsub.add_parser(
        "remove",
        help="remove a site (refused while it has accounts or bridges, unless --cascade)",
    )
    p.add_argument("name")
    p.add_argument("--cascade", action="store_true", help="remove its accounts and bridges too")
    p.set_defaults(handler=_sites_remove)
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
    p = asub.add_parser(
        "edit", help="change an account's line, number, site or settings (collision-checked)"
    )
    _number_options(p, station_required=False)
    p.add_argument("--new-line", metavar="LINE", help="move the account to this line")
    p.add_argument("--new-number", metavar="NUMBER", help="correct the account number")
    p.add_argument("--site", help="the site the account belongs to")
    p.add_argument("--no-site", action="store_true", help="the account belongs to no site")
    p.add_argument("--supervision", type=float, metavar="SECONDS", help="expected poll interval")
    p.add_argument("--window-past", type=float, metavar="SECONDS", help="timestamp window")
    p.add_argument("--window-future", type=float, metavar="SECONDS", help="timestamp window")
    p.add_argument("--window-policy", choices=WINDOW_POLICIES, help="outside the window")
    p.set_defaults(handler=_accounts_edit)
    p = asub.add_parser("move", help="move an account to another site")
    _number_options(p, station_required=False)
    p.add_argument("--site", required=True, help="the new site")
    p.set_defaults(handler=_accounts_move)
    p = asub.add_parser("remove", help="remove an account (its number is free; signals are kept)")
    _number_options(p, station_required=False)
    p.set_defaults(handler=_accounts_remove)
    p = asub.add_parser(
        "set-key",
        help="rotate an account's AES key (with --grace, the old key works that much longer)",
    )
    _number_options(p, station_required=False)
    p.add_argument("--key", required=True, help="the new DC-09 AES key (16, 24 or 32 bytes)")
    p.add_argument("--key-format", choices=KEY_FORMATS, help="how --key is written (default hex)")
    p.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="accept frames under the previous key (or plaintext) this much longer",
    )
    p.set_defaults(handler=_accounts_set_key)
    p = asub.add_parser("list", help="list accounts (keys are never printed, only their format)")
    p.add_argument("--station", help="only this station")
    add_format_option(p)
    p.set_defaults(handler=_accounts_list)


def _station_record_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--xml-output",
        metavar="OUTPUT",
        help="the [[outputs]] name this station's XML receiver is (empty to clear)",
    )
    parser.add_argument("--passkey", help="the station's XML passkey (empty to clear)")
