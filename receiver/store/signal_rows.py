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
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from protocols.drafts import draft_of
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


# What a Signal is read from, in this order: the store's ``repeats`` counter, then every
# column ``signal_row`` writes but the dedupe key. ``SIGNAL_READ_SQL`` selects them.
READ_COLUMNS = ("repeats", *SIGNAL_COLUMNS[:-1])
SIGNAL_READ_SQL = ", ".join(READ_COLUMNS)

_SOURCES = {source.value: source for source in Source}
_DUPLICATE_RECEIVED = frozenset({"duplicate_received"})
_NO_FLAGS: frozenset[str] = frozenset()
# The trusted reader's tools. The Signal is filled as a draft (see protocols.drafts): a plain
# class with Signal's slots, filled with plain stores, then switched to Signal itself. The
# Contact ID and SIA views repeat from row to row (a panel's few events): each distinct one is
# built once and shared (they are immutable), from a bounded cache cleared when full. They keep
# a weakref slot, so no draft: their slots are filled through their member descriptors.
_new = object.__new__
_SignalDraft = draft_of(Signal)
_Setter = Callable[[Any, Any], None]


def _slots(cls: type, *names: str) -> tuple[_Setter, ...]:
    return tuple(getattr(cls, name).__set__ for name in names)


(_cid_qualifier, _cid_code, _cid_group, _cid_zone) = _slots(
    ContactIdView, "qualifier", "code", "group", "zone"
)
(_sia_code, _sia_address, _sia_modifiers, _sia_text) = _slots(
    SiaView, "code", "address", "modifiers", "text"
)
_VIEWS_MAX = 4096
_CID_VIEWS: dict[tuple[str, str, str, str], ContactIdView] = {}
_SIA_VIEWS: dict[tuple[str, str | None, str | None, str | None], SiaView] = {}
_fromtimestamp = datetime.fromtimestamp


def _cid_view(qualifier: str, code: str, group: str, zone: str) -> ContactIdView:
    key = (qualifier, code, group, zone)
    view = _CID_VIEWS.get(key)
    if view is None:
        if len(_CID_VIEWS) >= _VIEWS_MAX:
            _CID_VIEWS.clear()
        view = _CID_VIEWS[key] = _new(ContactIdView)
        _cid_qualifier(view, qualifier)
        _cid_code(view, code)
        _cid_group(view, group)
        _cid_zone(view, zone)
    return view


def _sia_view(code: str, address: str | None, modifiers: str | None, text: str | None) -> SiaView:
    key = (code, address, modifiers, text)
    view = _SIA_VIEWS.get(key)
    if view is None:
        if len(_SIA_VIEWS) >= _VIEWS_MAX:
            _SIA_VIEWS.clear()
        view = _SIA_VIEWS[key] = _new(SiaView)
        _sia_code(view, code)
        _sia_address(view, address or "")
        _sia_modifiers(view, _pairs_from_json(modifiers) if modifiers else ())
        _sia_text(view, text)
    return view


# Read-side caches, the mirror of the write side's: the same modifiers and flags text repeat.
@functools.lru_cache(maxsize=4096)
def _pairs_from_json(text: str) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(pair) for pair in json.loads(text))


@functools.lru_cache(maxsize=1024)
def _flags_from_text(text: str) -> frozenset[str]:
    return frozenset(flag for flag in text.split(",") if flag)


def signal_from_row(row: Mapping[str, Any] | sqlite3.Row) -> Signal:
    """Rebuild the Signal from a whole ``signals`` row (SQLite or PostgreSQL); the journal,
    history, the notifier and the PostgreSQL backend all read through this one mapping."""
    return signal_from_values([row[name] for name in READ_COLUMNS])


def signal_from_values(values: Sequence[Any]) -> Signal:
    """Rebuild the Signal from the ``READ_COLUMNS`` values of a row, in that order (a plain
    tuple from ``SELECT {SIGNAL_READ_SQL}``: no lookups by name).

    A trusted factory, for rows the store itself wrote: every value was a validated Signal's
    when ``signal_row`` wrote it (and the hash chain shows a row changed since), so the
    validators are not run again. A property test shows the result equals the validated
    constructor's for any signal written and read back."""
    (
        repeats,
        id_,
        received_us,
        source,
        peer,
        station,
        receiver_no,
        line,
        account,
        account_id,
        effective_account,
        site_id,
        site_name,
        token,
        sequence,
        device_us,
        qualifier,
        code,
        group,
        zone,
        sia_code,
        sia_address,
        sia_modifiers,
        sia_text,
        name,
        category,
        device,
        channel,
        zone_type,
        extended,
        flags_text,
        raw,
    ) = values
    flags = _flags_from_text(flags_text) if flags_text else _NO_FLAGS
    if repeats:
        flags = flags | _DUPLICATE_RECEIVED
    # Signal(...) with every field, filled as a draft (see protocols.drafts).
    signal: Any = _new(_SignalDraft)
    signal.id = id_
    signal.received_at = _fromtimestamp(received_us / 1_000_000, UTC)  # from_us, inline
    signal.source = _SOURCES[source]
    signal.peer = peer or ""
    signal.account = account
    signal.station = station
    signal.receiver_no = receiver_no
    signal.line = line
    signal.account_id = account_id
    signal.effective_account = effective_account
    signal.site_id = site_id
    signal.site_name = site_name
    signal.token = token
    signal.sequence = sequence
    signal.device_time = None if device_us is None else _fromtimestamp(device_us / 1_000_000, UTC)
    signal.cid = None if code is None else _cid_view(qualifier, code, group, zone)
    signal.sia = (
        None if sia_code is None else _sia_view(sia_code, sia_address, sia_modifiers, sia_text)
    )
    signal.name = name
    signal.category = category
    signal.device = device
    signal.channel = channel
    signal.zone_type = zone_type
    signal.extended = _pairs_from_json(extended) if extended else ()
    signal.flags = flags
    signal.raw = bytes(raw) if raw else b""
    signal.__class__ = Signal
    built: Signal = signal
    return built
