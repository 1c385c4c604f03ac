"""`receiver bridges`: video bridges, their channels, zones and per-channel library overrides.

A bridge belongs to a site and reports under one of the site's accounts; added before the site
has one, it waits (its signals are stored, flagged unknown_account, with the serial standing
for the account) and gets the account when the site's first one is added. Channel N's zone is
N unless set (or unless ``--first-zone`` shifts them); zone numbers are unique within the
account across all its bridges and print as three digits. A new channel's zone type is
Instant.

``list`` shows, per channel, the code and on/off that apply (what the receiver reports), and
where they come from: the channel's override, the site's or the dealer's library, or the
built-in default (the highest level that set either).

``edit`` / ``move --site`` re-check zones on the account the bridge ends up under (refused
with the holding bridge and channel named); ``remove`` keeps the row marked removed (signals
stay, the serial is free); ``set-token --grace`` keeps the previous token valid that long;
``import`` is all-or-nothing with every problem by CSV line, as ``accounts import``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from protocols.errors import InvalidInputError
from receiver.alarm_library import ZONE_TYPES
from receiver.cli.library import add_switch_options
from receiver.cli.output import add_format_option, emit
from receiver.cli.registry import open_registry, warn
from receiver.registry import BRIDGE_CHANNELS, read_bridge_csv
from receiver.registry.records import KEEP
from receiver.registry_index import RegistryIndex

BRIDGE_COLUMNS = (
    "serial",
    "model",
    "site",
    "account",
    "channel",
    "zone",
    "zone_type",
    "camera",
    "code",
    "enabled",
    "source",
)


def _add(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        serial = registry.add_bridge(
            site=args.site,
            serial=args.serial,
            token=args.token,
            channels=args.channels,
            model=args.model,
            account=args.account,
            first_zone=args.first_zone,
        )
        waiting = any(
            row["account"] is None for row in registry.list_bridges() if row["serial"] == serial
        )
    if waiting:
        warn(
            f"site {args.site.strip()!r} has no account yet: bridge {serial}'s signals are "
            "stored and flagged unknown_account until one is added "
            f"(receiver accounts add --station STATION NUMBER --site {args.site.strip()!r})"
        )
    print(f"added bridge {serial} ({args.channels} channels) to site {args.site.strip()}")
    return 0


def _set_channel(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.set_channel(
            args.serial,
            args.channel,
            zone=args.zone,
            zone_type=args.zone_type,
            camera=args.camera,
            code=args.code,
            enabled=args.enabled,
            inherit=args.inherit,
        )
    print(f"updated channel {args.channel} of bridge {args.serial.strip().upper()}")
    return 0


def _edit(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        serial = registry.edit_bridge(
            args.serial,
            new_serial=args.new_serial,
            model=KEEP if args.model is None else args.model,
            account=args.account,
            first_zone=args.first_zone,
        )
    print(f"updated bridge {serial}")
    return 0


def _move(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        serial = registry.move_bridge(
            args.serial, site=args.site, account=args.account, first_zone=args.first_zone
        )
        waiting = any(
            row["account"] is None for row in registry.list_bridges() if row["serial"] == serial
        )
    if waiting:
        warn(f"site {args.site.strip()!r} has no account yet: bridge {serial} waits for one")
    print(f"moved bridge {serial} to site {args.site.strip()}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        serial = registry.remove_bridge(args.serial)
    print(f"removed bridge {serial} (its serial is free; signals and history are kept)")
    return 0


def _set_token(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        until = registry.set_token(args.serial, args.token, grace=args.grace)
    serial = args.serial.strip().upper()
    if until is None:
        print(f"new token for bridge {serial}: only the new token is accepted")
    else:
        print(
            f"new token for bridge {serial}: the previous one is accepted for {args.grace:g} s more"
        )
    return 0


def _import(args: argparse.Namespace) -> int:
    try:
        with open(args.file, encoding="utf-8-sig", newline="") as stream:
            rows = read_bridge_csv(stream)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {args.file}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInputError(f"{args.file} is not UTF-8 text") from None
    with open_registry(args) as registry:
        report = registry.import_bridges(rows, dry_run=args.dry_run)
    for problem in report.problems:
        print(f"receiver: {problem.describe()}", file=sys.stderr)
    if report.refused:
        print(
            f"receiver: import refused: {len(report.errors)} problem(s) in {args.file}; "
            "nothing imported",
            file=sys.stderr,
        )
        refused = any(p.kind in ("collision", "not_found") for p in report.errors)
        return 1 if refused else 2
    if report.dry_run:
        print(f"dry run: {report.rows} bridge(s) would be imported")
    else:
        print(f"imported {report.imported} bridge(s)")
    return 0


def _list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.list_bridges()
        # The same lookup the receiver makes for each bridge event.
        index = RegistryIndex.load(registry.tables)
    as_json = args.format == "json"
    for row in rows:
        entry = index.library_entry(
            row["site_id"], row["zone_type"], serial=row["serial"], channel=row["channel"]
        )
        row["code"] = entry.code
        # JSON keeps the boolean; table and CSV read better as yes/no.
        row["enabled"] = entry.enabled if as_json else ("yes" if entry.enabled else "no")
        row["source"] = entry.source
    emit(rows, BRIDGE_COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    bridges = sub.add_parser("bridges", help="video bridges and their channels")
    bsub = bridges.add_subparsers(dest="bridges_command", metavar="COMMAND")
    bsub.required = True
    p = bsub.add_parser("add", help="add a bridge to a site")
    p.add_argument("--site", required=True, help="site name")
    p.add_argument("--serial", required=True, help="serial number or MAC")
    p.add_argument("--token", required=True, help="the bridge's auth token")
    p.add_argument("--channels", required=True, type=int, choices=BRIDGE_CHANNELS)
    p.add_argument("--model", help="model, e.g. CKB304")
    p.add_argument(
        "--account", metavar="NUMBER", help="the site's account to report under (if several)"
    )
    p.add_argument(
        "--first-zone",
        type=int,
        metavar="N",
        help="zone of channel 1 (default 1); channel k gets N+k-1",
    )
    p.set_defaults(handler=_add)
    p = bsub.add_parser(
        "set-channel",
        help="set a channel's zone, zone type, camera or alarm library override",
        description=(
            "--code/--enable/--disable set this channel's alarm library override (it wins "
            "over the site's and the dealer's library); --inherit removes it."
        ),
    )
    p.add_argument("serial", metavar="SERIAL")
    p.add_argument("channel", metavar="CHANNEL", type=int)
    p.add_argument("--zone", type=int, metavar="N", help="zone number 1-999")
    p.add_argument("--zone-type", metavar="TYPE", help=f"one of {', '.join(ZONE_TYPES)}")
    p.add_argument("--camera", metavar="NAME", help="camera name (empty to clear)")
    add_switch_options(p)
    p.set_defaults(handler=_set_channel)
    p = bsub.add_parser(
        "edit", help="change a bridge's serial, model, account or zones (collision-checked)"
    )
    p.add_argument("serial", metavar="SERIAL")
    p.add_argument("--serial", dest="new_serial", metavar="NEW", help="new serial or MAC")
    p.add_argument("--model", help="model (empty to clear)")
    p.add_argument("--account", metavar="NUMBER", help="the site's account to report under")
    p.add_argument(
        "--first-zone", type=int, metavar="N", help="renumber zones: channel k gets N+k-1"
    )
    p.set_defaults(handler=_edit)
    p = bsub.add_parser("move", help="move a bridge to another site (a new customer)")
    p.add_argument("serial", metavar="SERIAL")
    p.add_argument("--site", required=True, help="the new site")
    p.add_argument("--account", metavar="NUMBER", help="that site's account (if several)")
    p.add_argument(
        "--first-zone", type=int, metavar="N", help="renumber zones: channel k gets N+k-1"
    )
    p.set_defaults(handler=_move)
    p = bsub.add_parser("remove", help="remove a bridge (its serial is free; signals are kept)")
    p.add_argument("serial", metavar="SERIAL")
    p.set_defaults(handler=_remove)
    p = bsub.add_parser(
        "set-token", help="rotate a bridge's token (with --grace, the old one works longer)"
    )
    p.add_argument("serial", metavar="SERIAL")
    p.add_argument("--token", required=True, help="the new token")
    p.add_argument(
        "--grace", type=float, metavar="SECONDS", help="accept the previous token this long"
    )
    p.set_defaults(handler=_set_token)
    p = bsub.add_parser(
        "import",
        help="add bridges from CSV, all or nothing",
        description=(
            "CSV with a header row: columns site, serial, token and channels required; model, "
            "account and first_zone optional. On any problem nothing is imported and every "
            "problem is reported with its CSV line (the header is line 1)."
        ),
    )
    p.add_argument("file", metavar="FILE.csv")
    p.add_argument("--dry-run", action="store_true", help="only check and report")
    p.set_defaults(handler=_import)
    p = bsub.add_parser("list", help="list bridges, one row per channel")
    add_format_option(p)
    p.set_defaults(handler=_list)
