"""Signal history: the stored signals, newest first, filtered (what the portal shows).

Rules:
- ``--code`` takes what the table shows: ``E110`` (qualifier and Contact ID code), ``110``
  (any qualifier), or a SIA code (``BA``, matched on the SIA view). ``R110`` finds restores.
- ``--since``/``--until`` take an ISO-8601 time (UTC when naive) or an age: ``90s``, ``30m``,
  ``1h``, ``2d``, ``1w`` before now.
- The filters are the store's (``receiver/store/history_sql.py``); this module reads through
  any :class:`HistoryStore`.
- Following reads by journal ``seq`` (the commit order), never by time: a signal committed
  late with an early receiver time is still shown once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from protocols.errors import InvalidInputError
from protocols.signal import Signal
from receiver.store.interface import HistoryStore

_AGE = re.compile(r"^\s*(\d{1,9})\s*([smhdw])\s*$", re.IGNORECASE)
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_AGE_S = 100 * 365 * 86400


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


@attrs.frozen
class HistoryQuery:
    account: str | None = None
    station: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    code: str | None = None
    limit: int = 50


def query_history(store: HistoryStore, query: HistoryQuery) -> list[Signal]:
    """The matching signals, newest first, at most ``query.limit`` (0: all)."""
    return [signal for _, signal in store.history(query)]


def query_history_rows(store: HistoryStore, query: HistoryQuery) -> list[tuple[int, Signal]]:
    """Like :func:`query_history`, with each signal's journal ``seq``."""
    return store.history(query)


def signals_after(
    store: HistoryStore, query: HistoryQuery, seq: int, limit: int = 1000
) -> tuple[int, list[Signal]]:
    """Signals committed after journal position ``seq`` that match ``query`` (its ``limit``
    ignored), oldest first, at most ``limit``; and the position read up to, so the next call
    does not look at the same rows again whether they matched or not.
    """
    return store.history_after(query, seq, limit)


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
