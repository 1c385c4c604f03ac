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
"""

from __future__ import annotations

import argparse
from typing import Any

from receiver.alarm_library import ZONE_TYPES
from receiver.cli.library import add_switch_options
from receiver.cli.output import add_format_option, emit
from receiver.cli.registry import open_registry, warn
from receiver.registry import BRIDGE_CHANNELS
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


def _list(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        rows = registry.list_bridges()
        # The same lookup the receiver makes for each bridge event.
        index = RegistryIndex.load(registry.conn)
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
    p = bsub.add_parser("list", help="list bridges, one row per channel")
    add_format_option(p)
    p.set_defaults(handler=_list)
