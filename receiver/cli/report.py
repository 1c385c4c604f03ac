"""`receiver report`: status reports read from the store (the service may be running).

``report bridges``: one row per video bridge with its site, model, channels, firmware,
online/offline and last seen, arming state, the site's state and open troubles. A bridge is
offline when its offline trouble is open or it has been silent longer than
``[bridge] heartbeat_interval * heartbeat_grace``; ``never`` when it never connected.

``report usage --dealer D --month YYYY-MM``: per site and account, the month's signals by
category, the bridges and channels that reported and the days online; the invoice details a
billing system needs (``--format csv``). The counts add up to ``receiver history`` for the
same month (receiver/usage.py says how each is counted).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from receiver.bridge_state import REPORT_COLUMNS, bridge_report_rows
from receiver.cli.config import configured
from receiver.cli.output import add_format_option, emit
from receiver.store import open_report_store
from receiver.usage import USAGE_COLUMNS, usage_report


def _bridges(args: argparse.Namespace) -> int:
    config = configured(args)
    store = open_report_store(config.store)
    try:
        read = store.bridge_report_rows(args.dealer, args.site)
    finally:
        store.close()
    rows = bridge_report_rows(
        read,
        offline_after=config.bridge.heartbeat_interval * config.bridge.heartbeat_grace,
        now=datetime.now(UTC),
    )
    emit(rows, REPORT_COLUMNS, args.format)
    return 0


def _usage(args: argparse.Namespace) -> int:
    config = configured(args)
    store = open_report_store(config.store)
    try:
        rows = usage_report(store, args.dealer, args.month)
    finally:
        store.close()
    emit(rows, USAGE_COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    report = sub.add_parser("report", help="status reports")
    rsub = report.add_subparsers(dest="report_command", metavar="REPORT")
    rsub.required = True
    p = rsub.add_parser(
        "bridges",
        help="video bridges: online/offline, arming state, site state, open troubles",
    )
    p.add_argument("--dealer", help="only this dealer's sites")
    p.add_argument("--site", help="only this site")
    add_format_option(p)
    p.set_defaults(handler=_bridges)
    p = rsub.add_parser(
        "usage",
        help="a dealer's monthly usage per site and account (invoice details for billing)",
    )
    p.add_argument("--dealer", required=True, help="the dealer")
    p.add_argument("--month", required=True, help="calendar month, UTC: YYYY-MM (2026-11)")
    add_format_option(p)
    p.set_defaults(handler=_usage)
