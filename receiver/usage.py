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
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from protocols.catalog import Category
from protocols.errors import InvalidInputError, NotFoundError
from receiver.journal import to_us

CATEGORIES: Sequence[str] = tuple(c.value for c in Category)
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
_DAY_US = 86_400 * 1_000_000

_KNOWN = ", ".join(f"'{c}'" for c in CATEGORIES if c != Category.OTHER)
_PER_CATEGORY = ", ".join(
    f"sum(coalesce(category, 'other') = '{c}') AS {c}" for c in CATEGORIES if c != Category.OTHER
)
USAGE_SQL = f"""
WITH month AS (
    SELECT sg.*, coalesce(sg.site_id, a.site_id) AS billed_site
    FROM signals AS sg LEFT JOIN accounts AS a ON a.id = sg.account_id
    WHERE sg.received_us >= ? AND sg.received_us < ?
)
SELECT si.name AS site,
       coalesce(m.effective_account, upper(m.account)) AS account,
       m.station AS station,
       count(*) AS signals,
       {_PER_CATEGORY},
       sum(coalesce(category, 'other') NOT IN ({_KNOWN})) AS other,
       count(DISTINCT CASE WHEN source = 'bridge' THEN device END) AS bridges,
       count(DISTINCT CASE WHEN source = 'bridge' AND channel IS NOT NULL
                           THEN device || '/' || channel END) AS channels,
       count(DISTINCT CASE WHEN source IN ('dc09', 'bridge')
                           THEN received_us / {_DAY_US} END) AS days_online
FROM month AS m JOIN sites AS si ON si.id = m.billed_site
WHERE si.dealer_id = ?
GROUP BY si.id, 2, 3
"""
REGISTERED_SQL = """
SELECT si.name AS site, a.effective AS account, st.name AS station
FROM accounts AS a
JOIN sites AS si ON si.id = a.site_id
JOIN stations AS st ON st.id = a.station_id
WHERE si.dealer_id = ?
"""


def month_bounds(text: str) -> tuple[datetime, datetime]:
    """``2026-11`` -> (2026-11-01 00:00 UTC, 2026-12-01 00:00 UTC)."""
    match = _MONTH.match(text)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInputError(f"not a month: {text!r} (use YYYY-MM, like 2026-11)")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def usage_report(conn: sqlite3.Connection, dealer: str, month: str) -> list[dict[str, Any]]:
    """The dealer's usage rows for ``month`` (YYYY-MM), ordered by site, account, station."""
    start, end = month_bounds(month)
    found = conn.execute("SELECT id, name FROM dealers WHERE name = ?", (dealer,)).fetchone()
    if found is None:
        raise NotFoundError(f"dealer {dealer!r} not found")
    dealer_id, dealer_name = int(found[0]), str(found[1])
    label = f"{start.year:04d}-{start.month:02d}"
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in conn.execute(USAGE_SQL, (to_us(start), to_us(end), dealer_id)):
        record = {"month": label, "dealer": dealer_name, **dict(row)}
        rows[(row["site"], row["account"], row["station"] or "")] = record
    for row in conn.execute(REGISTERED_SQL, (dealer_id,)):
        key = (row["site"], row["account"], row["station"] or "")
        if key not in rows:
            zeros = dict.fromkeys(("signals", *CATEGORIES, "bridges", "channels", "days_online"), 0)
            rows[key] = {"month": label, "dealer": dealer_name, **dict(row), **zeros}
    return [rows[key] for key in sorted(rows)]
