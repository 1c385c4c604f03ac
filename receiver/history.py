"""Signal history: the stored signals, newest first, filtered (what the portal shows).

Rules:
- ``--code`` takes what the table shows: ``E110`` (qualifier and Contact ID code), ``110``
  (any qualifier), or a SIA code (``BA``, matched on the SIA view). ``R110`` finds restores.
- ``--since``/``--until`` take an ISO-8601 time (UTC when naive) or an age: ``90s``, ``30m``,
  ``1h``, ``2d``, ``1w`` before now.
- Following reads by journal ``seq`` (the commit order), never by time: a signal committed
  late with an early receiver time is still shown once.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from protocols.errors import InvalidInputError
from protocols.signal import Signal
from receiver.journal import to_us
from receiver.store.signal_rows import signal_from_row

_AGE = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_AGE_S = 100 * 365 * 86400
# E110 / R110 / P110: qualifier and Contact ID code, as the history table shows them.
_QUALIFIED_CODE = re.compile(r"^([ERP])([0-9A-F]{3})$")


def parse_moment(text: str, *, now: datetime | None = None) -> datetime:
    """ISO-8601 date or date-time (naive values are UTC), or an age before ``now``: ``90s``,
    ``30m``, ``1h``, ``2d``, ``1w``."""
    if (age := _AGE.match(text)) is not None:
        seconds = int(age.group(1)) * _AGE_UNITS[age.group(2).lower()]
        if seconds > _MAX_AGE_S:
            raise InvalidInputError(f"{text.strip()!r} reaches back more than 100 years")
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"not a time: {text!r} (ISO 8601 like 2026-03-01T22:15, or an age like 90s, 30m, "
            "1h, 2d)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def code_condition(text: str) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for a ``--code`` value."""
    code = text.strip().upper()
    if not code:
        raise InvalidInputError("--code is empty")
    if (qualified := _QUALIFIED_CODE.match(code)) is not None:
        return "(qualifier = ? AND code = ?)", [qualified.group(1), qualified.group(2)]
    return "(code = ? OR sia_code = ?)", [code, code]


@attrs.frozen
class HistoryQuery:
    account: str | None = None
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    code: str | None = None
    limit: int = 50


def _conditions(query: HistoryQuery) -> tuple[list[str], list[Any]]:
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
        condition, values = code_condition(query.code)
        where.append(condition)
        params += values
    return where, params


def query_history(conn: sqlite3.Connection, query: HistoryQuery) -> list[Signal]:
    """The matching signals, newest first, at most ``query.limit`` (0: all)."""
    return [signal for _, signal in query_history_rows(conn, query)]


def query_history_rows(conn: sqlite3.Connection, query: HistoryQuery) -> list[tuple[int, Signal]]:
    """Like :func:`query_history`, with each signal's journal ``seq``."""
    where, params = _conditions(query)
    sql = "SELECT * FROM signals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_us DESC, seq DESC"
    if query.limit > 0:
        sql += " LIMIT ?"
        params.append(query.limit)
    return [(int(row["seq"]), signal_from_row(row)) for row in conn.execute(sql, params)]


def signals_after(
    conn: sqlite3.Connection, query: HistoryQuery, seq: int, limit: int = 1000
) -> tuple[int, list[Signal]]:
    """Signals committed after journal position ``seq`` that match ``query`` (its ``limit``
    ignored), oldest first, at most ``limit``; and the position read up to, so the next call
    does not look at the same rows again whether they matched or not.
    """
    newest = last_seq(conn)
    if newest <= seq:
        return seq, []
    where, params = _conditions(query)
    where = ["seq > ?", "seq <= ?", *where]
    rows = conn.execute(
        f"SELECT * FROM signals WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?",
        (seq, newest, *params, limit),
    ).fetchall()
    if len(rows) == limit:
        newest = int(rows[-1]["seq"])
    return newest, [signal_from_row(row) for row in rows]


def last_seq(conn: sqlite3.Connection) -> int:
    """The journal position of the newest signal (0 when empty)."""
    row = conn.execute("SELECT max(seq) FROM signals").fetchone()
    return int(row[0] or 0)


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
