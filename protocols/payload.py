"""Events out of a DC-09 data block: the one entry point the receiver calls per frame.

Rules:
- ``token`` is ``SIA-DCS``, ``ADM-CID`` or ``NULL`` (without the ``*``); ``data`` is the data
  block between ``[`` and ``]``, decrypted, pad stripped. ``NULL`` gives no events, whatever
  its data holds (tolerated), and so does a ``SIA-DCS`` frame with an empty data block (``[]``):
  a valid frame carrying no event, a link test like ``NULL``. Any other token is
  UnsupportedError (DUH).
- Each event carries the view the device sent (authoritative) and the other one derived from
  the catalog where it maps, plus the catalog's name and category. An unknown code is kept and
  flagged ``unknown_code``, never dropped. PayloadError (DUH) only when nothing parses.
- This is the receiver's hot path. The common shapes (``#acct|Nri<n>/<CC><addr>`` and
  ``#acct|QXYZ GG CCC``) are sliced by hand; everything else goes through the general parsers
  in ``protocols.sia`` and ``protocols.contact_id``, which are the oracle the fast path is tested
  against. The value objects of an event (its views, name, category) are interned by code and
  address, which recur across accounts; whole data blocks are not memoized: a block names its
  account and zone, so at a station's rate nearly every block is new, and a cache of them cost
  more in misses (about 2 us per frame) than its hits saved.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from attrs import frozen

from protocols.catalog import CID, SIA, cid_for_sia, describe, sia_for_cid
from protocols.contact_id import parse_adm_cid
from protocols.drafts import draft_of
from protocols.errors import UnsupportedError
from protocols.sia import QUIRK_NO_ACCOUNT, QUIRK_NO_HASH, parse_block
from protocols.signal import ContactIdView, Flag, SiaView

SIA_DCS = "SIA-DCS"
ADM_CID = "ADM-CID"
NULL = "NULL"
_QUALIFIER = {"1": "E", "3": "R", "6": "P"}
_NO_FLAGS: frozenset[str] = frozenset()
_UNKNOWN: frozenset[str] = frozenset({Flag.UNKNOWN_CODE.value})


@frozen(weakref_slot=False)
class Event:
    """One event from a data block, with both views where the catalog maps them."""

    cid: ContactIdView | None
    sia: SiaView | None
    name: str | None
    category: str | None
    account: str | None  # the account written inside the data block, if any
    flags: frozenset[str]


def parse_events(token: str, data: str) -> tuple[Event, ...]:
    """Every event in a DC-09 data block (see the module rules)."""
    if token == NULL or (token == SIA_DCS and not data):
        return ()
    if token not in (SIA_DCS, ADM_CID):
        raise UnsupportedError(
            f"unsupported payload token {token!r}", raw=data.encode("utf-8", "replace")
        )
    if token == SIA_DCS:
        return _fast_sia(data) or _general_sia(data)
    return (_fast_cid(data) or _general_cid(data),)


# The common shapes, each read in one match: "#acct|Nri<digits>/<CC><digits>" (or without the
# "ri<digits>/" area) and "#acct|QXYZ GG CCC". The groups are exactly what the hand-sliced
# reading took: the account (letters and digits, up to the first '|'), the area, code, address.
_SIA_SHAPE = re.compile(r"#([0-9A-Za-z]+)\|N(?:ri([0-9]*)/)?([A-Z]{2})([0-9]*)", re.ASCII)
_CID_SHAPE = re.compile(r"#([0-9A-Za-z]+)\|([136])(.{3}) ([0-9A-F]{2}) ([0-9A-F]{3})", re.DOTALL)


# A fast path's Event (no flags), filled as a draft (``protocols.drafts``; the fast paths are
# tested equal to the general parsers, which use the constructor).
_new = object.__new__
_EventDraft = draft_of(Event)


def _event(
    cid: ContactIdView | None,
    sia: SiaView | None,
    name: str | None,
    category: str | None,
    account: str,
) -> Event:
    event: Any = _new(_EventDraft)
    event.cid = cid
    event.sia = sia
    event.name = name
    event.category = category
    event.account = account
    event.flags = _NO_FLAGS
    event.__class__ = Event
    built: Event = event
    return built


def _fast_sia(data: str) -> tuple[Event, ...] | None:
    match = _SIA_SHAPE.fullmatch(data)
    if match is None:
        return None
    account, area, code, address = match.groups()
    views = _sia_views(code, address, area)
    if views is None:
        return None  # unknown codes take the general path, which flags them
    sia, cid, name, category = views
    return (_event(cid, sia, name, category, account),)


@functools.lru_cache(maxsize=8192)
def _sia_views(
    code: str, address: str, area: str | None
) -> tuple[SiaView, ContactIdView | None, str, str] | None:
    # Validated value objects cost 1-3 us each to build and the same (code, zone, area) recurs
    # across accounts, so the fast path interns them; both are immutable, so sharing is safe.
    # The catalog's name and category (an enum's value: a Python-level lookup) come along.
    entry = SIA.get(code)
    if entry is None:
        return None
    sia = SiaView(code, address, () if area is None else (("ri", area),))
    return sia, cid_for_sia(sia), entry.name, entry.category.value


def _general_sia(data: str) -> tuple[Event, ...]:
    account, views, flags = parse_block(data)
    block_flags = flags - {Flag.UNKNOWN_CODE.value}
    events = []
    for sia in views:
        name, category = describe(None, sia)
        events.append(
            Event(
                cid_for_sia(sia),
                sia,
                name,
                category,
                account,
                block_flags if sia.code in SIA else block_flags | _UNKNOWN,
            )
        )
    return tuple(events)


def _fast_cid(data: str) -> Event | None:
    match = _CID_SHAPE.fullmatch(data)
    if match is None:
        return None
    account, digit, code, group, zone = match.groups()
    if code not in CID:
        return None
    cid, sia, name, category = _cid_views(_QUALIFIER[digit], code, group, zone)
    return _event(cid, sia, name, category, account)


@functools.lru_cache(maxsize=8192)
def _cid_views(
    qualifier: str, code: str, group: str, zone: str
) -> tuple[ContactIdView, SiaView | None, str | None, str | None]:
    cid = ContactIdView(qualifier, code, group, zone)
    name, category = describe(cid, None)
    return cid, _derived_sia(cid), name, category


def _general_cid(data: str) -> Event:
    account, cid = parse_adm_cid(data)
    name, category = describe(cid, None)
    flags = _NO_FLAGS if cid.code in CID else _UNKNOWN
    if account is None:
        flags = flags | {QUIRK_NO_ACCOUNT}
    elif not data.lstrip().startswith("#"):
        flags = flags | {QUIRK_NO_HASH}
    return Event(cid, _derived_sia(cid), name, category, account, flags)


def _derived_sia(cid: ContactIdView) -> SiaView | None:
    code = sia_for_cid(cid)
    if code is None:
        return None
    return SiaView(code, cid.zone, () if cid.group == "00" else (("ri", cid.group),))
