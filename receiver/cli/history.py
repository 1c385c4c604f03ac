"""`receiver history`: stored signals, newest first."""

from __future__ import annotations

import argparse
from typing import Any

from protocols.errors import InvalidInputError
from receiver.cli.config import configured
from receiver.cli.output import add_format_option, emit
from receiver.history import HISTORY_COLUMNS, HistoryQuery, history_row, parse_moment, query_history
from receiver.store.sqlite import connect


def _history(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise InvalidInputError("--limit must be 0 (all) or more")
    config = configured(args)
    query = HistoryQuery(
        account=args.account,
        station=args.station,
        since=parse_moment(args.since) if args.since else None,
        until=parse_moment(args.until) if args.until else None,
        code=args.code,
        limit=args.limit,
    )
    conn = connect(config.store.path, create=False)
    try:
        signals = query_history(conn, query)
    finally:
        conn.close()
    emit([history_row(s) for s in signals], HISTORY_COLUMNS, args.format)
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("history", help="list stored signals, newest first")
    parser.add_argument("--account", help="account number (as received or as automation knows it)")
    parser.add_argument("--station", help="station name")
    parser.add_argument("--since", help="ISO-8601 time (UTC when no offset)")
    parser.add_argument("--until", help="ISO-8601 time (UTC when no offset)")
    parser.add_argument("--code", help="Contact ID code (e.g. 130) or SIA code (e.g. BA)")
    parser.add_argument("--limit", type=int, default=50, help="at most N signals; 0 means all")
    add_format_option(parser)
    parser.set_defaults(handler=_history)
