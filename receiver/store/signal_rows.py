"""A Signal as a journal row and back, for every backend (the ``signals`` columns).

``signal_from_row`` is the one reader of a journal row, for every backend and caller (journal,
history, notifier, console, PostgreSQL), over any row that reads by column name (``sqlite3.Row``,
a psycopg ``dict_row``). ``signal_row`` is the one writer of a row, for every backend: its JSON
and flags text are cached (they repeat from signal to signal).
"""

from __future__ import annotations

import functools
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


# The JSON columns and the flags column repeat from signal to signal (the same modifiers, the
# same flags): their text is cached, keyed by the immutable tuple / frozenset itself.
@functools.lru_cache(maxsize=4096)
def _cached_json(pairs: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(pairs)


@functools.lru_cache(maxsize=1024)
def _cached_flags(flags: frozenset[str]) -> str:
    return ",".join(sorted(flags))


def _json_pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    try:
        return _cached_json(pairs)
    except TypeError:  # not hashable (a list where a tuple belongs): no cache, same text
        return json.dumps(pairs)


def _flags_text(flags: frozenset[str]) -> str:
    try:
        return _cached_flags(flags)
    except TypeError:
        return ",".join(sorted(flags))


def signal_row(signal: Signal, dedupe_key: str | None) -> tuple[Any, ...]:
    cid, sia = signal.cid, signal.sia
    device_time = signal.device_time
    qualifier: str | None
    code: str | None
    group: str | None
    zone: str | None
    sia_code: str | None
    sia_address: str | None
    sia_text: str | None
    modifiers: str | None
    if cid is not None:
        qualifier, code, group, zone = cid.qualifier, cid.code, cid.group, cid.zone
    else:
        qualifier = code = group = zone = None
    if sia is not None:
        sia_code, sia_address, sia_text = sia.code, sia.address, sia.text
        modifiers = _json_pairs(sia.modifiers) if sia.modifiers else None
    else:
        sia_code = sia_address = sia_text = modifiers = None
    return (
        signal.id,
        int(signal.received_at.timestamp() * 1_000_000),
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
        int(device_time.timestamp() * 1_000_000) if device_time is not None else None,
        qualifier,
        code,
        group,
        zone,
        sia_code,
        sia_address,
        modifiers,
        sia_text,
        signal.name,
        signal.category,
        signal.device,
        signal.channel,
        signal.zone_type,
        _json_pairs(signal.extended) if signal.extended else None,
        _flags_text(signal.flags) if signal.flags else "",
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
