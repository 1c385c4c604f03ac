"""`receiver report`: status reports read from the store (the service may be running).

``report bridges``: one row per video bridge with its site, model, channels, firmware,
online/offline and last seen, arming state, the site's state and open troubles. A bridge is
offline when its offline trouble is open or it has been silent longer than
``[bridge] heartbeat_interval * heartbeat_grace``; ``never`` when it never connected.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from receiver.bridge_state import REPORT_COLUMNS, bridge_report
from receiver.cli.config import configured
from receiver.cli.output import add_format_option, emit
from receiver.store.sqlite import connect


def _bridges(args: argparse.Namespace) -> int:
    config = configured(args)
    conn = connect(config.store.path, create=False)
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
