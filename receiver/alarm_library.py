"""The alarm library: which Contact ID code a zone type reports, and whether it reports at all.

Rules:
- Built-in defaults follow the CHeKT XML alarm library: Entry/Exit 134, Follower 132, Instant
  130, 24-Hour 133, Exterior Instant 136, Exterior Entry/Exit 134, Intercom Armed 420; every
  type enabled. A restore is the same code with qualifier R.
- Precedence, per field: channel > site > dealer > built-in. An override may set only the code
  or only the switch; the other field comes from the level below. ``source`` names the highest
  level that set anything.
- Zone types are the seven keys of ``BUILTIN``; friendly spellings ("Entry/Exit", "24-Hour")
  are accepted case-insensitively and normalized.

Pure functions: no database, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs
from attrs import frozen

from protocols.errors import InvalidInputError

BUILTIN: Mapping[str, str] = {
    "entry_exit": "134",
    "follower": "132",
    "instant": "130",
    "24_hour": "133",
    "exterior_instant": "136",
    "exterior_entry_exit": "134",
    "intercom_armed": "420",
}
ZONE_TYPES: tuple[str, ...] = tuple(BUILTIN)
DEFAULT_ZONE_TYPE = "instant"
SOURCES = ("builtin", "dealer", "site", "channel")

# Spellings seen in dealer portals and manuals that do not reduce to a key by themselves.
_ALIASES = {
    "entry": "entry_exit",
    "24h": "24_hour",
    "24hr": "24_hour",
    "24hour": "24_hour",
    "exterior": "exterior_instant",
    "exterior_entry": "exterior_entry_exit",
    "intercom": "intercom_armed",
    "intercom_armed_zone": "intercom_armed",
}
_CODE = re.compile(r"^[0-9]{3}\Z")


def zone_type_key(text: str) -> str:
    """The canonical key for a zone type: ``"Entry/Exit"`` -> ``entry_exit``."""
    key = re.sub(r"[^0-9a-z]+", "_", text.strip().lower()).strip("_")
    key = key.removesuffix("_zone") if key not in BUILTIN else key
    key = _ALIASES.get(key, key)
    if key not in BUILTIN:
        raise InvalidInputError(
            f"unknown zone type {text!r}; expected one of {', '.join(ZONE_TYPES)}"
        )
    return key


def event_code(text: str) -> str:
    """A Contact ID event code: three digits."""
    code = text.strip()
    if not _CODE.match(code):
        raise InvalidInputError(f"event code must be three digits, got {text!r}")
    return code


def _zone_type(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in BUILTIN:
        raise InvalidInputError(f"{attribute.name}: unknown zone type {value!r}")


def _code(_: object, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None and not _CODE.match(value):
        raise InvalidInputError(f"{attribute.name}: event code must be three digits")


@frozen(kw_only=True)
class LibraryOverride:
    """One level's setting for one zone type; ``None`` fields inherit from the level below."""

    code: str | None = attrs.field(default=None, validator=_code)
    enabled: bool | None = None

    @property
    def is_empty(self) -> bool:
        return self.code is None and self.enabled is None


@frozen
class LibraryEntry:
    """The effective library entry for a zone type, and the level it comes from."""

    zone_type: str = attrs.field(validator=_zone_type)
    code: str = attrs.field(validator=_code)
    enabled: bool
    source: str = attrs.field(validator=attrs.validators.in_(SOURCES))


def resolve(
    zone_type: str,
    *,
    dealer: LibraryOverride | None = None,
    site: LibraryOverride | None = None,
    channel: LibraryOverride | None = None,
) -> LibraryEntry:
    """The effective entry for ``zone_type`` (a canonical key) given each level's override."""
    code = BUILTIN[zone_type]
    enabled = True
    source = "builtin"
    for name, override in (("dealer", dealer), ("site", site), ("channel", channel)):
        if override is None or override.is_empty:
            continue
        if override.code is not None:
            code = override.code
        if override.enabled is not None:
            enabled = override.enabled
        source = name
    return LibraryEntry(zone_type, code, enabled, source)


def resolve_all(
    *,
    dealer: Mapping[str, LibraryOverride] | None = None,
    site: Mapping[str, LibraryOverride] | None = None,
) -> list[LibraryEntry]:
    """The effective library of a site: one entry per zone type, in ``ZONE_TYPES`` order."""
    dealer = dealer or {}
    site = site or {}
    return [resolve(z, dealer=dealer.get(z), site=site.get(z)) for z in ZONE_TYPES]
