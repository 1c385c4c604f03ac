"""Signal history: the stored signals, newest first, filtered (what the portal shows)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from protocols.errors import InvalidInputError
from protocols.signal import Signal
from receiver.journal import signal_from_row, to_us


def parse_moment(text: str) -> datetime:
    """ISO-8601 date or date-time; naive values are UTC."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@attrs.frozen
class HistoryQuery:
    account: str | None = None
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    code: str | None = None
    limit: int = 50


def query_history(conn: sqlite3.Connection, query: HistoryQuery) -> list[Signal]:
    where: list[str] = []
    params: list[Any] = []
    if query.account:
        where.append("(effective_account = ? OR upper(account) = ?)")
        params += [query.account.strip().upper()] * 2
    if query.station:
        where.append("station = ?")
        params.append(query.station)
    if query.since:
        where.append("received_us >= ?")
        params.append(to_us(query.since))
    if query.until:
        where.append("received_us <= ?")
        params.append(to_us(query.until))
    if query.code:
        where.append("(code = ? OR sia_code = ?)")
        params += [query.code.upper()] * 2
    sql = "SELECT * FROM signals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_us DESC, seq DESC"
    if query.limit > 0:
        sql += " LIMIT ?"
        params.append(query.limit)
    return [signal_from_row(row) for row in conn.execute(sql, params)]


HISTORY_COLUMNS: Sequence[str] = (
    "received_at",
    "account",
    "station",
    "event",
    "zone",
    "sia",
    "name",
    "source",
    "flags",
    "id",
)


def history_row(signal: Signal) -> dict[str, Any]:
    cid = signal.cid
    return {
        "received_at": signal.received_at.isoformat(timespec="milliseconds"),
        "account": signal.effective_account or signal.account,
        "station": signal.station,
        "event": f"{cid.qualifier}{cid.code}" if cid else None,
        "zone": signal.zone,
        "sia": signal.sia.code if signal.sia else None,
        "name": signal.name,
        "source": signal.source.value,
        "flags": sorted(signal.flags),
        "id": signal.id,
    }
