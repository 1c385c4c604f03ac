"""What ``receiver report usage`` reads from PostgreSQL: the same rows as SQLite's
``receiver/store/usage_sql.py`` (same names, same counting), in PostgreSQL's SQL."""

from __future__ import annotations

from protocols.catalog import Category
from receiver.store.postgres.schema import PgConnection
from receiver.store.usage_sql import CATEGORIES, DAY_US, UsageRead

_KNOWN = ", ".join(f"'{c}'" for c in CATEGORIES if c != Category.OTHER)
_PER_CATEGORY = ", ".join(
    f"count(*) FILTER (WHERE coalesce(category, 'other') = '{c}') AS {c}"
    for c in CATEGORIES
    if c != Category.OTHER
)
# An account not in the registry is counted as received, upper-cased in ASCII only
# (COLLATE "C"), as SQLite's upper() folds it, whatever the database's locale.
USAGE_SQL = f"""
WITH month AS (
    SELECT sg.*, coalesce(sg.site_id, a.site_id) AS billed_site
    FROM signals AS sg LEFT JOIN accounts AS a ON a.id = sg.account_id
    WHERE sg.received_us >= %(start)s AND sg.received_us < %(end)s
)
SELECT si.name AS site,
       coalesce(m.effective_account, upper(m.account COLLATE "C")) AS account,
       m.station AS station,
       count(*) AS signals,
       {_PER_CATEGORY},
       count(*) FILTER (WHERE coalesce(category, 'other') NOT IN ({_KNOWN})) AS other,
       count(DISTINCT CASE WHEN source = 'bridge' THEN device END) AS bridges,
       count(DISTINCT CASE WHEN source = 'bridge' AND channel IS NOT NULL
                           THEN device || '/' || channel END) AS channels,
       count(DISTINCT CASE WHEN source IN ('dc09', 'bridge')
                           THEN received_us / {DAY_US} END) AS days_online
FROM month AS m JOIN sites AS si ON si.id = m.billed_site
WHERE si.dealer_id = %(dealer)s
GROUP BY si.id, 2, 3
"""
REGISTERED_SQL = """
SELECT si.name AS site, a.effective AS account, st.name AS station
FROM accounts AS a
JOIN sites AS si ON si.id = a.site_id
JOIN stations AS st ON st.id = a.station_id
WHERE si.dealer_id = %s
"""


def read(conn: PgConnection, dealer: str, start_us: int, end_us: int) -> UsageRead | None:
    """None when no dealer has that name."""
    found = conn.execute("SELECT id, name FROM dealers WHERE name = %s", (dealer,)).fetchone()
    if found is None:
        return None
    dealer_id = int(found["id"])
    params = {"start": start_us, "end": end_us, "dealer": dealer_id}
    used = [dict(row) for row in conn.execute(USAGE_SQL, params).fetchall()]
    registered = [dict(row) for row in conn.execute(REGISTERED_SQL, (dealer_id,)).fetchall()]
    return str(found["name"]), used, registered
