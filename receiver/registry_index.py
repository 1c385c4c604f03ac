"""The in-memory registry the hot path reads: an account per frame without a database read.

Rules:
- ``load`` reads the whole registry in one read transaction, so the index is one consistent
  snapshot tagged with ``meta.registry_generation``; every registry change bumps that counter in
  the same transaction (triggers in migration 0002).
- ``refresh_if_changed`` costs one ``SELECT`` of the counter and returns ``self`` when nothing
  changed, so the service can call it every second.
- Lookups are dict lookups and never raise on what a panel sends: a frame on an unregistered
  line resolves as a line without prefix (``line_known`` tells the caller to flag it).
- The index is immutable once built; a refresh builds a new one. No trio: the service calls
  it in a worker thread. It reads SQLite or PostgreSQL alike through the store's
  :class:`~receiver.store.interface.RegistryTables` (``receiver.registry.backends.tables_for``
  gives them for a connection), never a statement of its own; on PostgreSQL the counter is
  ``meta.registry_generation`` too, bumped by the same triggers on every node's change.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from attrs import frozen

from protocols.errors import InvalidInputError
from receiver import alarm_library
from receiver.account_numbers import DEFAULT_LINE, AccountKey, line_key
from receiver.alarm_library import BUILTIN, LibraryEntry, LibraryOverride
from receiver.registry.backends import RegistryConnection, tables_for
from receiver.store.interface import RegistryRow, RegistryTables

__all__ = [
    "BridgeInfo",
    "ChannelInfo",
    "LibraryEntry",
    "RegistryIndex",
    "ResolvedAccount",
]


@frozen(kw_only=True)
class ResolvedAccount:
    """A registry account as the receiver needs it for a frame."""

    account_id: int
    station: str
    line: str
    number: str  # as typed
    # Line prefix + number, trimmed, upper-cased: what automation knows (Sentinel's Device ID).
    effective: str
    site_id: int | None
    site_name: str | None
    dealer: str | None
    key: bytes | None
    key_format: str | None
    supervision: float | None  # seconds; None: not supervised
    window_past: float | None  # None: the receiver's default
    window_future: float | None
    window_policy: str | None
    # Key rotation: the key before the last ``set-key`` (None: the account had none, so
    # plaintext) stays accepted until ``key_grace_until`` (epoch seconds).
    previous_key: bytes | None = None
    key_grace_until: float | None = None

    def keys_in_grace(self, now: float) -> tuple[bytes | None, ...]:
        """The previous key while its grace lasts (None in it: plaintext), else nothing."""
        if self.key_grace_until is None or now >= self.key_grace_until:
            return ()
        return (self.previous_key,)


@frozen(kw_only=True)
class ChannelInfo:
    channel: int
    zone: int
    zone_type: str
    camera: str | None


@frozen(kw_only=True)
class BridgeInfo:
    bridge_id: int
    serial: str
    token: str
    model: str | None
    channels: int
    site_id: int
    site_name: str
    account: ResolvedAccount | None  # None: the site has no account yet (signals flagged)
    channel_map: Mapping[int, ChannelInfo]
    previous_token: str | None = None  # accepted until token_grace_until (epoch seconds)
    token_grace_until: float | None = None

    def accepts_token(self, token: str, now: float) -> bool:
        """The bridge's token, or its previous one while the rotation's grace lasts."""
        given = token.encode("utf-8")
        if hmac.compare_digest(self.token.encode("utf-8"), given):
            return True
        return (
            self.previous_token is not None
            and self.token_grace_until is not None
            and now < self.token_grace_until
            and hmac.compare_digest(self.previous_token.encode("utf-8"), given)
        )


@frozen
class _StationView:
    lines: Mapping[str, str]  # line number -> prefix
    by_effective: Mapping[str, ResolvedAccount]


@frozen
class _SiteLibrary:
    dealer: Mapping[str, LibraryOverride]
    site: Mapping[str, LibraryOverride]
    entries: Mapping[str, LibraryEntry]  # zone type -> effective entry at site level


_BUILTIN_LIBRARY = _SiteLibrary({}, {}, {e.zone_type: e for e in alarm_library.resolve_all()})


class RegistryIndex:
    """An immutable snapshot of the registry, indexed for the hot path."""

    def __init__(
        self,
        *,
        generation: int,
        stations: Mapping[str, _StationView],
        accounts: tuple[ResolvedAccount, ...],
        bridges: Mapping[str, BridgeInfo],
        libraries: Mapping[int, _SiteLibrary],
        channel_overrides: Mapping[tuple[str, int], LibraryOverride],
    ) -> None:
        self.generation = generation
        self._stations = stations
        self._only_station = next(iter(stations.values())) if len(stations) == 1 else None
        self._accounts = accounts
        self._bridges = bridges
        self._libraries = libraries
        self._channel_overrides = channel_overrides

    @classmethod
    def load(cls, store: RegistryConnection | RegistryTables) -> RegistryIndex:
        """Read the registry in one snapshot (a read transaction)."""
        tables = tables_for(store)
        own_transaction = not tables.in_transaction
        if own_transaction:
            tables.begin_read()
        try:
            return cls._read(tables)
        finally:
            if own_transaction:
                tables.rollback()

    @classmethod
    def _read(cls, tables: RegistryTables) -> RegistryIndex:
        generation = tables.generation()
        lines: dict[str, dict[str, str]] = {}
        for row in tables.all_lines():
            lines.setdefault(row["station"], {})[row["number"]] = row["prefix"]
        accounts: dict[int, ResolvedAccount] = {}
        by_station: dict[str, dict[str, ResolvedAccount]] = {name: {} for name in lines}
        for row in tables.accounts():
            key = (
                AccountKey.parse_raw(row["key_text"], row["key_format"])
                if row["key_text"] is not None
                else None
            )
            account = ResolvedAccount(
                account_id=row["id"],
                station=row["station"],
                line=row["line"],
                number=row["number"],
                effective=row["effective"],
                site_id=row["site_id"],
                site_name=row["site"],
                dealer=row["dealer"],
                key=key,
                key_format=row["key_format"],
                supervision=row["supervision"],
                window_past=row["window_past"],
                window_future=row["window_future"],
                window_policy=row["window_policy"],
                previous_key=(
                    AccountKey.parse_raw(row["previous_key_text"], row["previous_key_format"])
                    if row["previous_key_text"] is not None
                    else None
                ),
                key_grace_until=row["key_grace_until"],
            )
            accounts[account.account_id] = account
            by_station.setdefault(account.station, {})[account.effective] = account
        stations = {
            name: _StationView(
                MappingProxyType(lines.get(name, {DEFAULT_LINE: ""})),
                MappingProxyType(by_station[name]),
            )
            for name in by_station
        }

        dealer_overrides: dict[int, dict[str, LibraryOverride]] = {}
        for row in tables.dealer_overrides():
            dealer_overrides.setdefault(row["dealer_id"], {})[row["zone_type"]] = _override(row)
        site_overrides: dict[int, dict[str, LibraryOverride]] = {}
        for row in tables.site_overrides():
            site_overrides.setdefault(row["site_id"], {})[row["zone_type"]] = _override(row)
        libraries = {}
        for row in tables.site_dealers():
            dealer = dealer_overrides.get(row["dealer_id"], {})
            site = site_overrides.get(row["id"], {})
            entries = alarm_library.resolve_all(dealer=dealer, site=site)
            libraries[int(row["id"])] = _SiteLibrary(
                dealer, site, {e.zone_type: e for e in entries}
            )

        channels: dict[int, dict[int, ChannelInfo]] = {}
        channel_overrides: dict[tuple[int, int], LibraryOverride] = {}
        for row in tables.channels():
            channels.setdefault(row["bridge_id"], {})[row["channel"]] = ChannelInfo(
                channel=row["channel"],
                zone=row["zone"],
                zone_type=row["zone_type"],
                camera=row["camera"],
            )
            override = _override(row)
            if not override.is_empty:
                channel_overrides[(row["bridge_id"], row["channel"])] = override
        bridges = {}
        by_serial_channel: dict[tuple[str, int], LibraryOverride] = {}
        for row in tables.bridges():
            bridges[row["serial"]] = BridgeInfo(
                bridge_id=row["id"],
                serial=row["serial"],
                token=row["token"],
                model=row["model"],
                channels=row["channels"],
                site_id=row["site_id"],
                site_name=row["site"],
                account=accounts.get(row["account_id"]),
                channel_map=MappingProxyType(channels.get(row["id"], {})),
                previous_token=row["previous_token"],
                token_grace_until=row["token_grace_until"],
            )
        serials = {b.bridge_id: b.serial for b in bridges.values()}
        for (bridge_id, channel), override in channel_overrides.items():
            by_serial_channel[(serials[bridge_id], channel)] = override
        return cls(
            generation=generation,
            stations=MappingProxyType(stations),
            accounts=tuple(accounts.values()),
            bridges=MappingProxyType(bridges),
            libraries=MappingProxyType(libraries),
            channel_overrides=MappingProxyType(by_serial_channel),
        )

    def refresh_if_changed(self, store: RegistryConnection | RegistryTables) -> RegistryIndex:
        """``self`` when the store's counter has not moved, else a freshly loaded index."""
        tables = tables_for(store)
        if tables.generation() == self.generation:
            return self
        return self.load(tables)

    def stations(self) -> tuple[str, ...]:
        """The registry's station names, sorted."""
        return tuple(sorted(self._stations))

    def _station(self, station: str | None) -> _StationView | None:
        if station is None:
            return self._only_station
        return self._stations.get(station)

    def resolve(
        self, station: str | None, line: str | None, account: str
    ) -> ResolvedAccount | None:
        """The account a frame belongs to, or None when the registry does not know it.

        ``station`` None means the registry's only station; ``line`` is the DC-09 ``L`` value
        as received (None: line 0); ``account`` as received, in any case.
        """
        view = self._station(station)
        if view is None:
            return None
        prefix = view.lines.get(line_key(line), "")
        return view.by_effective.get(prefix + account.strip().upper())

    def line_known(self, station: str | None, line: str | None) -> bool:
        view = self._station(station)
        return view is not None and line_key(line) in view.lines

    def bridge(self, serial: str) -> BridgeInfo | None:
        return self._bridges.get(serial.strip().upper())

    def library_entry(
        self,
        site_id: int,
        zone_type: str,
        *,
        serial: str | None = None,
        channel: int | None = None,
    ) -> LibraryEntry:
        """The alarm library entry for a zone type at a site, with a channel's override."""
        if zone_type not in BUILTIN:
            try:
                zone_type = alarm_library.zone_type_key(zone_type)
            except InvalidInputError:
                # A zone type the library does not know reports as Instant, never not at all.
                zone_type = alarm_library.DEFAULT_ZONE_TYPE
        library = self._libraries.get(site_id, _BUILTIN_LIBRARY)
        if serial is not None and channel is not None:
            override = self._channel_overrides.get((serial.strip().upper(), channel))
            if override is not None:
                return alarm_library.resolve(
                    zone_type,
                    dealer=library.dealer.get(zone_type),
                    site=library.site.get(zone_type),
                    channel=override,
                )
        return library.entries[zone_type]

    def accounts(self) -> Iterable[ResolvedAccount]:
        return self._accounts


def _override(row: RegistryRow) -> LibraryOverride:
    enabled = None if row["enabled"] is None else bool(row["enabled"])
    return LibraryOverride(code=row["code"], enabled=enabled)
