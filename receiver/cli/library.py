"""`receiver library`: the alarm library (zone type -> Contact ID code, on/off).

Precedence: channel > site > dealer > built-in. ``show`` prints the effective library and
where each entry comes from. Per-channel overrides are set with ``receiver bridges
set-channel SERIAL CHANNEL --code NNN --enable/--disable``.
"""

from __future__ import annotations

import argparse
from typing import Any

from receiver.alarm_library import ZONE_TYPES
from receiver.cli.output import add_format_option, emit
from receiver.cli.registry import open_registry

LIBRARY_COLUMNS = ("zone_type", "code", "enabled", "source")


def _show(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        entries = registry.library(site=args.site, dealer=args.dealer)
    as_json = args.format == "json"
    rows: list[dict[str, Any]] = [
        {
            "zone_type": e.zone_type,
            "code": e.code,
            # JSON keeps the boolean; table and CSV read better as yes/no.
            "enabled": e.enabled if as_json else ("yes" if e.enabled else "no"),
            "source": e.source,
        }
        for e in entries
    ]
    emit(rows, LIBRARY_COLUMNS, args.format)
    return 0


def _set(args: argparse.Namespace) -> int:
    with open_registry(args) as registry:
        registry.set_library(
            args.zone_type,
            dealer=args.dealer,
            site=args.site,
            code=args.code,
            enabled=args.enabled,
            inherit=args.inherit,
        )
    owner = f"dealer {args.dealer}" if args.dealer is not None else f"site {args.site}"
    print(f"library of {owner} updated for {args.zone_type}")
    return 0


def add_switch_options(parser: argparse.ArgumentParser) -> None:
    """``--code``, ``--enable``/``--disable`` and ``--inherit`` for an override."""
    parser.add_argument("--code", metavar="NNN", help="Contact ID event code (three digits)")
    switch = parser.add_mutually_exclusive_group()
    switch.add_argument(
        "--enable", dest="enabled", action="store_const", const=True, help="send this signal"
    )
    switch.add_argument(
        "--disable", dest="enabled", action="store_const", const=False, help="do not send it"
    )
    switch.add_argument(
        "--inherit",
        action="store_true",
        help="remove this level's override (code and switch) and inherit from the level below",
    )


def register(sub: argparse._SubParsersAction[Any]) -> None:
    library = sub.add_parser(
        "library",
        help="the alarm library: zone type -> Contact ID code, on/off",
        description=(
            "Precedence: channel > site > dealer > built-in (Entry/Exit 134, Follower 132, "
            "Instant 130, 24-Hour 133, Exterior Instant 136, Exterior Entry/Exit 134, "
            "Intercom Armed 420; restore = same code, qualifier R). Channel overrides: "
            "receiver bridges set-channel SERIAL CHANNEL --code NNN --enable/--disable."
        ),
    )
    lsub = library.add_subparsers(dest="library_command", metavar="COMMAND")
    lsub.required = True
    p = lsub.add_parser("show", help="the effective library and where each entry comes from")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--site", help="site name")
    owner.add_argument("--dealer", help="dealer name")
    add_format_option(p)
    p.set_defaults(handler=_show)
    p = lsub.add_parser("set", help="override a zone type for a dealer or a site")
    owner = p.add_mutually_exclusive_group(required=True)
    owner.add_argument("--dealer", help="dealer name")
    owner.add_argument("--site", help="site name")
    p.add_argument("zone_type", metavar="ZONE_TYPE", help=f"one of {', '.join(ZONE_TYPES)}")
    add_switch_options(p)
    p.set_defaults(handler=_set)
