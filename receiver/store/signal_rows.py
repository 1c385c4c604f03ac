"""A Signal as a journal row and back, for every backend (the ``signals`` columns).

``signal_from_row`` is the one reader of a journal row, for every backend and caller (journal,
history, notifier, console, PostgreSQL), over any row that reads by column name (``sqlite3.Row``,
a psycopg ``dict_row``). ``signal_row`` mirrors the journal's optimised writer (a test keeps the
two equal); the store refactor moves the journal's writer here too.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from protocols.signal import ContactIdView, SiaView, Signal, Source

# Written by the receiver, in this order (seq, repeats, last_repeat_us are the store's).
SIGNAL_COLUMNS = (
    "id",
    "received_us",
    "source",
    "peer",
    "station",
    "receiver_no",
    "line",
    "account",
    "account_id",
    "effective_account",
    "site_id",
    "site_name",
    "token",
    "sequence",
    "device_us",
    "qualifier",
    "code",
    "grp",
    "zone",
    "sia_code",
    "sia_address",
    "sia_modifiers",
    "sia_text",
    "name",
    "category",
    "device",
    "channel",
    "zone_type",
    "extended",
    "flags",
    "raw",
    "dedupe_key",
)


def to_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def from_us(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


def signal_row(signal: Signal, dedupe_key: str | None) -> tuple[Any, ...]:
    """The values of ``SIGNAL_COLUMNS`` for ``signal``."""
    cid, sia = signal.cid, signal.sia
    return (
        signal.id,
        to_us(signal.received_at),
        signal.source.value,
        signal.peer,
        signal.station,
        signal.receiver_no,
        signal.line,
        signal.account,
        signal.account_id,
        signal.effective_account,
        signal.site_id,
        signal.site_name,
        signal.token,
        signal.sequence,
        to_us(signal.device_time) if signal.device_time else None,
        cid.qualifier if cid else None,
        cid.code if cid else None,
        cid.group if cid else None,
        cid.zone if cid else None,
        sia.code if sia else None,
        sia.address if sia else None,
        json.dumps(sia.modifiers) if sia and sia.modifiers else None,
        sia.text if sia else None,
        signal.name,
        signal.category,
        signal.device,
        signal.channel,
        signal.zone_type,
        json.dumps(signal.extended) if signal.extended else None,
        ",".join(sorted(signal.flags)),
        signal.raw,
        dedupe_key,
    )


def signal_from_row(row: Mapping[str, Any] | sqlite3.Row) -> Signal:
    """Rebuild the Signal from a whole ``signals`` row (SQLite or PostgreSQL); the journal,
    history, the notifier and the PostgreSQL backend all read through this one mapping."""
    cid = (
        ContactIdView(row["qualifier"], row["code"], row["grp"], row["zone"])
        if row["code"] is not None
        else None
    )
    sia = (
        SiaView(
            row["sia_code"],
            row["sia_address"] or "",
            tuple(tuple(m) for m in json.loads(row["sia_modifiers"]))
            if row["sia_modifiers"]
            else (),
            row["sia_text"],
        )
        if row["sia_code"] is not None
        else None
    )
    flags = frozenset(f for f in row["flags"].split(",") if f)
    if row["repeats"]:
        flags |= {"duplicate_received"}
    return Signal(
        id=row["id"],
        received_at=from_us(row["received_us"]),
        source=Source(row["source"]),
        peer=row["peer"] or "",
        account=row["account"],
        station=row["station"],
        receiver_no=row["receiver_no"],
        line=row["line"],
        account_id=row["account_id"],
        effective_account=row["effective_account"],
        site_id=row["site_id"],
        site_name=row["site_name"],
        token=row["token"],
        sequence=row["sequence"],
        device_time=from_us(row["device_us"]) if row["device_us"] is not None else None,
        cid=cid,
        sia=sia,
        name=row["name"],
        category=row["category"],
        device=row["device"],
        channel=row["channel"],
        zone_type=row["zone_type"],
        extended=tuple(tuple(x) for x in json.loads(row["extended"])) if row["extended"] else (),
        flags=flags,
        raw=bytes(row["raw"] or b""),
    )
