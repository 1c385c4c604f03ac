"""`receiver journal`: the journal over years (retention and the tamper-evident trail).

``journal prune --before DATE [--dry-run]``: remove (or show what would go) the signals
received before DATE, oldest first, never one an output has not delivered yet; the running
receiver does the same hourly for ``[journal] keep_days``.

``journal verify [--since T]``: recompute the hash chain; exit 0 with the count verified, or
exit 1 naming the first row that does not match.
"""

from __future__ import annotations

import argparse
from typing import Any

from receiver.cli.config import configured
from receiver.history import parse_moment
from receiver.journal import from_us, to_us
from receiver.retention import prune
from receiver.store import open_report_store, open_store

EXIT_TAMPERED = 1


def _when(micros: int | None) -> str:
    return from_us(micros).isoformat(timespec="seconds") if micros is not None else "-"


def _prune(args: argparse.Namespace) -> int:
    config = configured(args)
    before = parse_moment(args.before)
    store = open_store(config.store, create=False)
    try:
        plans = prune(store, to_us(before), dry_run=args.dry_run)
    finally:
        store.close()
    done = [p for p in plans if p.count]
    count = sum(p.count for p in done)
    verb = "would remove" if args.dry_run else "removed"
    if done:
        first, last = done[0], done[-1]
        oldest = min(p.oldest_us or 0 for p in done)
        newest = max(p.newest_us or 0 for p in done)
        print(
            f"{verb} {count} signals received before {before.isoformat(timespec='seconds')}: "
            f"seq {first.first}..{last.through}, received {_when(oldest)} to {_when(newest)}"
        )
    else:
        print(f"{verb} 0 signals received before {before.isoformat(timespec='seconds')}")
    held = next((p.held_by for p in plans if p.held_by), None)
    if held is not None:
        print(f"held back: output {held} has not delivered the signals after its cursor yet")
    return 0


def _verify(args: argparse.Namespace) -> int:
    config = configured(args)
    since = parse_moment(args.since) if args.since else None
    since_us = to_us(since) if since else None
    store = open_report_store(config.store)
    try:
        result = store.verify_journal(since_us)
    finally:
        store.close()
    bad = result.mismatch
    if bad is not None:
        print(
            f"journal row seq {bad.seq} (signal {bad.id}, received {_when(bad.received_us)}) "
            f"does not match its hash: {bad.reason}; {result.verified} rows before it verified"
        )
        return EXIT_TAMPERED
    span = f" (seq {result.first_seq}..{result.last_seq})" if result.first_seq else ""
    legacy = (
        f"; {result.unchained} rows stored before the chain existed are not covered"
        if result.unchained
        else ""
    )
    print(f"verified {result.verified} journal rows{span}: the chain is intact{legacy}")
    return 0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    journal = sub.add_parser("journal", help="retention and the tamper-evident trail")
    jsub = journal.add_subparsers(dest="journal_command", metavar="ACTION")
    jsub.required = True
    when = "ISO-8601 time (UTC when no offset) or an age: 90s, 30m, 1h, 2d, 1w"
    p = jsub.add_parser(
        "prune", help="remove signals received before a date (never undelivered ones)"
    )
    p.add_argument("--before", required=True, help=when)
    p.add_argument("--dry-run", action="store_true", help="only show what would be removed")
    p.set_defaults(handler=_prune)
    p = jsub.add_parser("verify", help="recompute the journal's hash chain")
    p.add_argument("--since", help=f"start at the first row received then ({when})")
    p.set_defaults(handler=_verify)
