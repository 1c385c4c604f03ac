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

from receiver.bridge_state import REPORT_COLUMNS, bridge_report
from receiver.cli.config import configured
from receiver.cli.output import add_format_option, emit
from receiver.store import sqlite_only
from receiver.store.sqlite import connect
from receiver.usage import USAGE_COLUMNS, usage_report


def _bridges(args: argparse.Namespace) -> int:
    config = configured(args)
    conn = connect(sqlite_only(config.store, "report bridges"), create=False)
    try:
        rows = bridge_report(
            conn,
            dealer=args.dealer,
            site=args.site,
            offline_after=config.bridge.heartbeat_interval * config.bridge.heartbeat_grace,
            now=datetime.now(UTC),
        )
    finally:
        conn.close()
    emit(rows, REPORT_COLUMNS, args.format)
    return 0


def _usage(args: argparse.Namespace) -> int:
    config = configured(args)
    conn = connect(sqlite_only(config.store, "report usage"), create=False)
    try:
        rows = usage_report(conn, args.dealer, args.month)
    finally:
        conn.close()
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
