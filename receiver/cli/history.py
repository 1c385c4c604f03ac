"""`receiver history`: stored signals, newest first; ``--follow`` prints new ones as stored.

``--follow`` first prints the last ``--limit`` matching signals oldest first (as ``tail -f``
does), then polls the journal by ``seq`` and prints each new matching signal as one line
(JSON: one object per line) until Ctrl-C, which ends it with exit 0.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Final

from protocols.errors import InvalidInputError
from receiver.cli.config import configured
from receiver.cli.output import RowStream, add_format_option, emit
from receiver.history import (
    HISTORY_COLUMNS,
    HistoryQuery,
    history_row,
    parse_moment,
    query_history,
    query_history_rows,
    signals_after,
)
from receiver.store import open_store
from receiver.store.interface import SignalStore

FOLLOW_POLL_S: Final = 0.5
# Column widths while following, so that rows printed minutes apart still line up.
FOLLOW_WIDTHS: Final = {
    "received_at": 29,
    "account": 10,
    "station": 8,
    "event": 5,
    "zone": 4,
    "sia": 3,
    "name": 22,
    "source": 11,
    "flags": 16,
}


def _history(args: argparse.Namespace) -> int:
    if args.limit < 0:
        raise InvalidInputError("--limit must be 0 (all) or more")
    if args.follow and args.until:
        raise InvalidInputError("--until and --follow do not go together")
    config = configured(args)
    query = HistoryQuery(
        account=args.account,
        station=args.station,
        since=parse_moment(args.since) if args.since else None,
        until=parse_moment(args.until) if args.until else None,
        code=args.code,
        limit=args.limit,
    )
    store = open_store(config.store, create=False)
    try:
        if args.follow:
            return _follow(store, query, args.format)
        signals = query_history(store, query)
    finally:
        store.close()
    emit([history_row(s) for s in signals], HISTORY_COLUMNS, args.format)
    return 0


def _follow(store: SignalStore, query: HistoryQuery, fmt: str) -> int:
    stream = RowStream(HISTORY_COLUMNS, fmt, FOLLOW_WIDTHS)
    try:
        seq = store.last_seq()
        recent = query_history_rows(store, query)
        stream.write([history_row(signal) for _, signal in reversed(recent)])
        # Shown by receiver time; what comes next is read by commit order (seq).
        seq = max([seq, *(row_seq for row_seq, _ in recent)])
        live = HistoryQuery(account=query.account, station=query.station, code=query.code)
        while True:  # bounded by Ctrl-C
            time.sleep(FOLLOW_POLL_S)
            seq, signals = signals_after(store, live, seq)
            if signals:
                stream.write([history_row(s) for s in signals])
    except KeyboardInterrupt:
        return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser("history", help="list stored signals, newest first")
    parser.add_argument("--account", help="account number (as received or as automation knows it)")
    parser.add_argument("--station", help="station name")
    when = "ISO-8601 time (UTC when no offset) or an age: 90s, 30m, 1h, 2d, 1w"
    parser.add_argument("--since", help=when)
    parser.add_argument("--until", help=when)
    parser.add_argument(
        "--code",
        help="event as shown: E110 (qualifier and Contact ID code), 110 (any qualifier), "
        "or a SIA code (BA)",
    )
    parser.add_argument("--limit", type=int, default=50, help="at most N signals; 0 means all")
    parser.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="then print new signals as they are stored, until Ctrl-C",
    )
    add_format_option(parser)
    parser.set_defaults(handler=_history)
