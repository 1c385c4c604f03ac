"""What ``receiver report usage`` reads from SQLite (``receiver/usage.py`` says how each figure
is counted): the dealer, the month's signals grouped per site, account and station, and every
account registered on the dealer's sites. PostgreSQL's is ``postgres/usage_sql.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from protocols.catalog import Category

CATEGORIES: Sequence[str] = tuple(c.value for c in Category)
DAY_US = 86_400 * 1_000_000
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
                           THEN received_us / {DAY_US} END) AS days_online
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

# The dealer's name, its month's rows and its registered accounts (site, account, station).
UsageRead = tuple[str, list[dict[str, Any]], list[dict[str, Any]]]


def read(conn: sqlite3.Connection, dealer: str, start_us: int, end_us: int) -> UsageRead | None:
    """None when no dealer has that name."""
    found = conn.execute("SELECT id, name FROM dealers WHERE name = ?", (dealer,)).fetchone()
    if found is None:
        return None
    dealer_id = int(found[0])
    used = [dict(row) for row in conn.execute(USAGE_SQL, (start_us, end_us, dealer_id))]
    registered = [dict(row) for row in conn.execute(REGISTERED_SQL, (dealer_id,))]
    return str(found[1]), used, registered
