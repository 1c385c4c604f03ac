"""What ``receiver report bridges`` reads from PostgreSQL: the same rows as SQLite's
``receiver/store/bridge_report_sql.py``, in PostgreSQL's SQL."""

from __future__ import annotations

from typing import Any

from protocols.errors import NotFoundError
from receiver.store.postgres.schema import PgConnection

REPORT_BRIDGES = """
SELECT b.serial, b.model, b.channels, s.id AS site_id, s.name AS site, d.name AS dealer,
       a.effective AS account,
       st.model AS reported_model, st.channels AS reported_channels, st.firmware, st.armed,
       st.peer, st.connected_us,
       l.last_seen_us, l.trouble_open
FROM bridges b
JOIN sites s ON s.id = b.site_id
JOIN dealers d ON d.id = s.dealer_id
LEFT JOIN accounts a ON a.id = b.account_id  -- none while the site has no account
LEFT JOIN bridge_state st ON st.serial = b.serial
LEFT JOIN links l ON l.link = 'bridge:' || b.serial
WHERE b.removed_at IS NULL
  AND (%(dealer)s::text IS NULL OR d.name = %(dealer)s)
  AND (%(site)s::text IS NULL OR s.name = %(site)s)
ORDER BY s.name, b.serial
"""
OPEN_BRIDGE_TROUBLES = (
    "SELECT link FROM links WHERE trouble_open = 1 AND starts_with(link, 'bridge:') ORDER BY link"
)
CHANNEL_ZONES = (
    "SELECT b.serial, c.channel, c.zone FROM bridge_channels c JOIN bridges b ON b.id = c.bridge_id"
)


def read(
    conn: PgConnection, *, dealer: str | None, site: str | None
) -> tuple[list[dict[str, Any]], dict[tuple[str, int], int], list[str]]:
    """The report's bridge rows, each bridge channel's zone, and the open bridge trouble links."""
    if (
        dealer is not None
        and not conn.execute("SELECT 1 FROM dealers WHERE name = %s", (dealer.strip(),)).fetchone()
    ):
        raise NotFoundError(f"no dealer named {dealer.strip()!r}")
    if (
        site is not None
        and not conn.execute("SELECT 1 FROM sites WHERE name = %s", (site.strip(),)).fetchone()
    ):
        raise NotFoundError(f"no site named {site.strip()!r}")
    params = {
        "dealer": dealer.strip() if dealer else None,
        "site": site.strip() if site else None,
    }
    rows = conn.execute(REPORT_BRIDGES, params).fetchall()
    zones = {
        (r["serial"], int(r["channel"])): int(r["zone"])
        for r in conn.execute(CHANNEL_ZONES).fetchall()
    }
    links = conn.execute(OPEN_BRIDGE_TROUBLES).fetchall()
    return [dict(r) for r in rows], zones, [str(r["link"]) for r in links]
