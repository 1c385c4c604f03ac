"""Dealer usage for billing: one row per site and account for a calendar month (UTC).

Rules:
- The month is ``[first day 00:00 UTC, first day of the next month 00:00 UTC)``: exactly the
  signals ``receiver history --account A --since <first day> --until <last day>T23:59:59.999999``
  lists for the account, so the counts add up to what history shows.
- A signal belongs to the site it was stored with (``signals.site_id``; for an account stored
  without one, the account's site now), and the site to its dealer. The account is the one
  automation knows (``effective_account``, else the number as received, upper-cased): the value
  history's ``--account`` takes.
- Categories are the event catalog's; a signal without one counts as ``other``.
- ``bridges`` and ``channels``: video bridges (serials) and bridge channels that reported at
  least one signal in the month. ``days_online``: UTC days on which the panel or bridges sent
  at least one signal (receiver-made supervision troubles do not count as being online).
- Every account registered on the dealer's sites gets a row, with zeros when it was silent.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from protocols.errors import InvalidInputError, NotFoundError
from receiver.journal import to_us
from receiver.store.usage_sql import CATEGORIES, UsageRead

USAGE_COLUMNS: Sequence[str] = (
    "month",
    "dealer",
    "site",
    "account",
    "station",
    "signals",
    *CATEGORIES,
    "bridges",
    "channels",
    "days_online",
)
_MONTH = re.compile(r"^\s*(\d{4})-(\d{2})\s*$")


class UsageSource(Protocol):
    """A store's read side for the report (SQL per backend: ``receiver/store/usage_sql.py``)."""

    def usage_rows(self, dealer: str, start_us: int, end_us: int) -> UsageRead | None: ...


def month_bounds(text: str) -> tuple[datetime, datetime]:
    """``2026-11`` -> (2026-11-01 00:00 UTC, 2026-12-01 00:00 UTC)."""
    match = _MONTH.match(text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInputError(f"not a month: {text!r} (use YYYY-MM, like 2026-11)")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def usage_report(store: UsageSource, dealer: str, month: str) -> list[dict[str, Any]]:
    """The dealer's usage rows for ``month`` (YYYY-MM), ordered by site, account, station."""
    start, end = month_bounds(month)
    found = store.usage_rows(dealer, to_us(start), to_us(end))
    if found is None:
        raise NotFoundError(f"dealer {dealer!r} not found")
    dealer_name, used, registered = found
    label = f"{start.year:04d}-{start.month:02d}"
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in used:
        record = {"month": label, "dealer": dealer_name, **row}
        rows[(row["site"], row["account"], row["station"] or "")] = record
    for row in registered:
        key = (row["site"], row["account"], row["station"] or "")
        if key not in rows:
            zeros = dict.fromkeys(("signals", *CATEGORIES, "bridges", "channels", "days_online"), 0)
            rows[key] = {"month": label, "dealer": dealer_name, **row, **zeros}
    return [rows[key] for key in sorted(rows)]
