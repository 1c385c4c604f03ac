"""The registry service over the store: stations and lines, dealers, sites, accounts, the alarm
library, bridges, and their lifecycle (edit, move, remove, key and token rotation).

Rules:
- An account number is unique within its station on its *effective* form (see
  ``receiver.account_numbers``). A collision, on add or on any edit, is refused with the
  holder named (site, line, number as typed).
- Every write runs check-then-write inside one write transaction (SQLite ``BEGIN
  IMMEDIATE``), so two writers racing serialize; the unique indexes are the last line of
  defence, and a violation of one becomes a ``CollisionError`` naming the holder.
- Removing keeps the row (signals keep pointing at it, history stays readable): it is marked
  removed and its number, name or serial is freed (a removed row's key column becomes
  ``\\x1f<id>``, which no typed name can be). A site with accounts or bridges, and a dealer
  with sites, is removed only with ``cascade``.
- Key and token rotation keep the previous key (token) until a grace deadline (epoch
  seconds); the hot path accepts either until then, afterwards only the new one.
- Zone numbers are unique within one account across all its bridges.
- The service calls the typed methods of the store's
  :class:`~receiver.store.interface.RegistryTables` and never runs a statement: the SQL lives
  in the store backend's module (``receiver.store.registry_sql`` for SQLite,
  ``receiver.store.postgres.registry_sql`` for PostgreSQL), run by
  ``receiver.store.registry_tables``; the service never asks which backend it is on. A row a
  unique index refuses is :class:`~receiver.store.interface.RowRefusedError` on both.
  On PostgreSQL the write transaction takes an advisory lock, so writers on every node
  serialize as SQLite's ``BEGIN IMMEDIATE`` makes them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from protocols.errors import CollisionError, InvalidInputError, NotFoundError, RegistryError
from receiver import alarm_library
from receiver.account_numbers import (
    DEFAULT_LINE,
    AccountKey,
    account_number,
    bridge_serial,
    effective_number,
    line_number,
    line_prefix,
    repeats_prefix,
)
from receiver.alarm_library import LibraryEntry, LibraryOverride
from receiver.config import StoreConfig
from receiver.registry import backends
from receiver.registry.backends import RegistryConnection
from receiver.registry.csv_import import (
    ImportProblem,
    ImportReport,
    ImportRow,
    check_account_row,
)
from receiver.registry.records import (
    ARMING_SOURCES,
    BRIDGE_CHANNELS,
    KEEP,
    NAME_MAX,
    WINDOW_POLICIES,
    AccountCheck,
    AccountSpec,
    Holder,
    Keep,
    LineRecord,
    StationRecord,
    bridge_token,
    entity_name,
    non_negative,
    positive,
)
from receiver.store import open_registry_store
from receiver.store.interface import AccountRow, RegistryRow, RegistryTables, RowRefusedError

Progress = Callable[[int, int], None]


class Registry:
    """The registry service over the registry's tables of one store (``store.registry()``), or
    over a connection to one (SQLite or PostgreSQL, autocommit; the service opens its
    transactions explicitly)."""

    def __init__(self, store: RegistryConnection | RegistryTables) -> None:
        self.tables = backends.tables_for(store)

    @classmethod
    def open(cls, store: StoreConfig | str | Path) -> Registry:
        """The registry in a ``[store]`` (its ``registry()``), or in the store at a location:
        a SQLite file or a PostgreSQL URL."""
        if not isinstance(store, StoreConfig):
            where = str(store)
            store = StoreConfig(url=where) if backends.is_postgres(where) else StoreConfig(where)
        source = open_registry_store(store)
        try:
            return cls(source.registry())
        finally:
            source.close()

    def close(self) -> None:
        self.tables.close()

    @contextmanager
    def _write(self) -> Iterator[RegistryTables]:
        self.tables.begin_write()
        try:
            yield self.tables
        except BaseException:
            self.tables.rollback()
            raise
        self.tables.commit()

    @contextmanager
    def _read(self) -> Iterator[RegistryTables]:
        self.tables.begin_read()
        try:
            yield self.tables
        finally:
            self.tables.rollback()

    # -- lookups (inside a transaction) -------------------------------------------------------

    def _station(self, name: str) -> StationRecord:
        row = self.tables.station_by_name(name.strip())
        if row is None:
            raise NotFoundError(f"no station named {name.strip()!r}")
        return StationRecord(row["id"], row["name"])

    def _line(self, station: StationRecord, number: str) -> LineRecord:
        row = self.tables.line(station.id, number)
        if row is None:
            raise NotFoundError(f"station {station.name!r} has no line {number}")
        return LineRecord(row["id"], row["number"], row["prefix"])

    def _dealer_id(self, name: str) -> int:
        row = self.tables.dealer_by_name(name.strip())
        if row is None:
            raise NotFoundError(f"no dealer named {name.strip()!r}")
        return int(row["id"])

    def _site(self, name: str) -> RegistryRow:
        row = self.tables.site_by_name(name.strip())
        if row is None:
            raise NotFoundError(f"no site named {name.strip()!r}")
        return row

    def _holder(self, station: StationRecord, effective: str) -> Holder | None:
        row = self.tables.holder(station.id, effective)
        if row is None:
            return None
        return Holder(
            row["id"], station.name, row["line"], row["number"], row["effective"], row["site"]
        )

    # -- stations, dealers, sites -----------------------------------------------------------

    def add_station(
        self, name: str, *, xml_output: str | None = None, passkey: str | None = None
    ) -> None:
        """Create a station with its line 0 (no prefix), its XML receiver (the output it
        delivers through) and passkey."""
        name = entity_name(name, "station")
        output = _optional_text(xml_output, "XML output")
        key = _optional_text(passkey, "passkey")
        with self._write():
            if self.tables.station_by_name(name) is not None:
                raise RegistryError(f"station {name!r} already exists")
            station_id = self.tables.insert_station(name, output, key)
            self.tables.insert_line(station_id, DEFAULT_LINE, "")

    def add_line(self, station: str, number: str, prefix: str | None = None) -> str:
        """Add a line to a station; returns the line number in its stored form."""
        number = line_number(number)
        pfx = line_prefix(prefix)
        with self._write():
            st = self._station(station)
            if self.tables.line(st.id, number) is not None:
                raise RegistryError(f"station {st.name!r} already has line {number}")
            self.tables.insert_line(st.id, number, pfx)
        return number

    def lines(self) -> list[dict[str, Any]]:
        with self._read():
            return [
                {
                    "station": r["station"],
                    "line": r["number"],
                    "prefix": r["prefix"],
                    "accounts": r["accounts"],
                }
                for r in self.tables.all_lines()
            ]

    def add_dealer(self, name: str) -> None:
        name = entity_name(name, "dealer")
        with self._write():
            if self.tables.dealer_by_name(name) is not None:
                raise RegistryError(f"dealer {name!r} already exists")
            self.tables.insert_dealer(name)

    def dealers(self) -> list[dict[str, Any]]:
        with self._read():
            return [{"name": r["name"]} for r in self.tables.dealers()]

    def add_site(
        self,
        name: str,
        *,
        dealer: str,
        address: str | None = None,
        arming_source: str | None = None,
    ) -> None:
        name = entity_name(name, "site")
        if arming_source is not None and arming_source not in ARMING_SOURCES:
            raise InvalidInputError(
                f"arming source must be one of {', '.join(ARMING_SOURCES)}, got {arming_source!r}"
            )
        with self._write():
            dealer_id = self._dealer_id(dealer)
            if self.tables.site_by_name(name) is not None:
                raise RegistryError(f"site {name!r} already exists")
            self.tables.insert_site(name, dealer_id, (address or "").strip() or None, arming_source)

    def sites(self) -> list[dict[str, Any]]:
        with self._read():
            return [dict(r) for r in self.tables.sites()]

    # -- accounts -----------------------------------------------------------------------------

    def _check(self, station: StationRecord, spec_line: str, number: str) -> AccountCheck:
        line = self._line(station, spec_line)
        effective = effective_number(line.prefix, number)
        warnings = []
        if repeats_prefix(line.prefix, number):
            warnings.append(
                f"number {number} already starts with {line.prefix}, the prefix line "
                f"{line.number} adds: the station will know it as {effective} (likely a mistake)"
            )
        return AccountCheck(
            station.name,
            line.number,
            number,
            effective,
            self._holder(station, effective),
            tuple(warnings),
        )

    def check_account(self, station: str, line: str, number: str) -> AccountCheck:
        """Whether ``number`` on ``line`` is free at ``station``, and who holds it if not."""
        line = line_number(line)
        number = account_number(number)
        with self._read():
            return self._check(self._station(station), line, number)

    def add_account(self, station: str, spec: AccountSpec) -> AccountCheck:
        """Add an account; refused with the holder named if its effective number is taken."""
        try:
            with self._write():
                st = self._station(station)
                check = self._check(st, spec.line, spec.number)
                if check.holder is not None:
                    raise _collision(check.effective, st.name, check.holder)
                site_id = int(self._site(spec.site)["id"]) if spec.site else None
                line = self._line(st, spec.line)
                self.tables.insert_account_rows([_account_row(st, line, spec, site_id)])
                if site_id is not None:
                    check = attrs.evolve(
                        check, attached_bridges=self._attach_waiting_bridges(site_id)
                    )
        except RowRefusedError:
            # Only reachable if another writer slipped past the check (another node).
            with self._read():
                st = self._station(station)
                line = self._line(st, spec.line)
                holder = self._holder(st, effective_number(line.prefix, spec.number))
            if holder is None:
                raise
            raise _collision(holder.effective, holder.station, holder) from None
        return check

    def list_accounts(self, station: str | None = None) -> list[dict[str, Any]]:
        with self._read():
            if station is not None:
                self._station(station)
                rows = self.tables.accounts_of_station(station.strip())
            else:
                rows = self.tables.accounts_ordered()
            return [
                {
                    "station": r["station"],
                    "line": r["line"],
                    "number": r["number"],
                    "effective": r["effective"],
                    "site": r["site"],
                    "dealer": r["dealer"],
                    "key_format": r["key_format"],  # never print the key itself
                    "supervision": r["supervision"],
                    "window_past": r["window_past"],
                    "window_future": r["window_future"],
                    "window_policy": r["window_policy"],
                }
                for r in rows
            ]

    def import_accounts(
        self,
        station: str,
        rows: Iterable[ImportRow],
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> ImportReport:
        """Import accounts all-or-nothing; every problem is reported with its CSV line."""
        rows = list(rows)
        problems: list[ImportProblem] = []
        try:
            with self._write():
                st = self._station(station)
                lines = {
                    r["number"]: LineRecord(r["id"], r["number"], r["prefix"])
                    for r in self.tables.lines_of_station(st.id)
                }
                sites = {r["name"]: int(r["id"]) for r in self.tables.site_ids()}
                held = {
                    r["effective"]: Holder(
                        r["id"], st.name, r["line"], r["number"], r["effective"], r["site"]
                    )
                    for r in self.tables.holders_of_station(st.id)
                }
                in_file: dict[str, tuple[int, str, str]] = {}
                params = []
                for done, row in enumerate(rows, start=1):
                    found = check_account_row(
                        row,
                        station=st,
                        lines=lines,
                        sites=sites,
                        held=held,
                        in_file=in_file,
                        problems=problems,
                    )
                    if found is not None:
                        params.append(_account_row(st, found.line, found.spec, found.site_id))
                    if progress is not None and (done % 500 == 0 or done == len(rows)):
                        progress(done, len(rows))
                # A refused import or a dry run writes nothing; committing the empty
                # transaction just releases the lock.
                if not dry_run and not any(p.kind != "warning" for p in problems):
                    self.tables.insert_account_rows(params)
                    for site_id in {r["site_id"] for r in self.tables.sites_waiting()}:
                        self._attach_waiting_bridges(int(site_id))
        except RowRefusedError as exc:
            # Another writer (another node, one not taking the write lock) committed a number
            # this file holds between the check and the insert: the unique index refused it.
            raise self._taken_while_importing(station, params, exc) from None
        imported = 0 if (dry_run or any(p.kind != "warning" for p in problems)) else len(rows)
        return ImportReport(st.name, len(rows), imported, dry_run, tuple(problems))

    def _taken_while_importing(
        self, station: str, params: list[AccountRow], exc: Exception
    ) -> CollisionError:
        """The refusal of an import the unique index stopped, naming the holder it met."""
        wanted = {p.effective for p in params}  # the effective numbers the file held
        with self._read():
            st = self._station(station)
            for row in self.tables.holders_of_station(st.id):
                if row["effective"] in wanted:
                    holder = Holder(
                        row["id"],
                        st.name,
                        row["line"],
                        row["number"],
                        row["effective"],
                        row["site"],
                    )
                    return CollisionError(
                        f"import refused: account {holder.effective} was taken at station "
                        f"{st.name} while importing: {holder.describe()}",
                        holder=holder.describe(),
                    )
        return CollisionError(
            f"import refused: an account number was taken while importing ({exc})"
        )

    # -- alarm library --------------------------------------------------------------------------

    def set_library(
        self,
        zone_type: str,
        *,
        dealer: str | None = None,
        site: str | None = None,
        code: str | None = None,
        enabled: bool | None = None,
        inherit: bool = False,
    ) -> None:
        """Set (or with ``inherit``, remove) a dealer's or a site's override for a zone type."""
        key = alarm_library.zone_type_key(zone_type)
        code = alarm_library.event_code(code) if code is not None else None
        if (dealer is None) == (site is None):
            raise InvalidInputError("give exactly one of --dealer or --site")
        if not inherit and code is None and enabled is None:
            raise InvalidInputError("nothing to set: give --code, --enable/--disable or --inherit")
        with self._write():
            owner: tuple[int | None, int | None]
            if dealer is not None:
                owner = (self._dealer_id(dealer), None)
                row = self.tables.dealer_override(owner[0], key)
            else:
                assert site is not None
                owner = (None, int(self._site(site)["id"]))
                row = self.tables.site_override(owner[1], key)
            if inherit:
                if row is not None:
                    self.tables.delete_override(row["id"])
                return
            if row is None:
                self.tables.insert_override(owner[0], owner[1], key, code, _flag(enabled))
                return
            self.tables.update_override(
                row["id"],
                code if code is not None else row["code"],
                _flag(enabled) if enabled is not None else row["enabled"],
            )

    def library(self, *, site: str | None = None, dealer: str | None = None) -> list[LibraryEntry]:
        """The effective library of a site (or of a dealer), one entry per zone type."""
        if (dealer is None) == (site is None):
            raise InvalidInputError("give exactly one of --dealer or --site")
        with self._read():
            site_overrides: dict[str, LibraryOverride] = {}
            if site is not None:
                row = self._site(site)
                dealer_id = int(row["dealer_id"])
                site_overrides = self._overrides(
                    self.tables.site_overrides(), "site_id", int(row["id"])
                )
            else:
                assert dealer is not None
                dealer_id = self._dealer_id(dealer)
            dealer_overrides = self._overrides(
                self.tables.dealer_overrides(), "dealer_id", dealer_id
            )
        return alarm_library.resolve_all(dealer=dealer_overrides, site=site_overrides)

    # -- bridges --------------------------------------------------------------------------------

    def add_bridge(
        self,
        *,
        site: str,
        serial: str,
        token: str,
        channels: int,
        model: str | None = None,
        account: str | None = None,
        first_zone: int | None = None,
    ) -> str:
        """Add a bridge to a site's account; channel N gets zone ``first_zone + N - 1``."""
        new = _new_bridge(serial, token, channels, model, first_zone)
        try:
            with self._write():
                self._insert_bridge(new, site, account)
        except RowRefusedError as exc:
            raise CollisionError(f"bridge {new.serial} refused: {exc}") from None
        return new.serial

    def _insert_bridge(self, new: _NewBridge, site: str, account: str | None) -> None:
        site_row = self._site(site)
        account_id, account_label = self._site_account(site_row, account)
        holder = self.tables.bridge_by_serial(new.serial)
        if holder is not None:
            raise RegistryError(f"bridge {new.serial} already exists")
        zones = range(new.first_zone, new.first_zone + new.channels)
        self._refuse_zone_collision(account_id, account_label, zones, own_bridge=None)
        bridge_id = self.tables.insert_bridge(
            new.serial,
            token=new.token,
            model=new.model,
            channels=new.channels,
            site_id=site_row["id"],
            account_id=account_id,
        )
        self.tables.insert_channels(
            [
                (bridge_id, ch, account_id, new.first_zone + ch - 1, "instant")
                for ch in range(1, new.channels + 1)
            ],
        )

    def _site_account(
        self, site_row: RegistryRow, account: str | None
    ) -> tuple[int | None, str | None]:
        """The account a new bridge reports under: the site's only one, or ``account``; (None,
        None) when the site has none yet (the bridge waits for it)."""
        accounts = self.tables.accounts_of_site(site_row["id"])
        if not accounts and account is None:
            return None, None
        if account is None:
            if len(accounts) > 1:
                numbers = ", ".join(a["effective"] for a in accounts)
                raise InvalidInputError(
                    f"site {site_row['name']!r} has several accounts ({numbers}); "
                    "give --account NUMBER"
                )
            return int(accounts[0]["id"]), accounts[0]["effective"]
        wanted = account.strip().upper()
        matches = [a for a in accounts if wanted in (a["effective"], a["number"].upper())]
        if len(matches) != 1:
            raise NotFoundError(f"site {site_row['name']!r} has no account {account.strip()!r}")
        return int(matches[0]["id"]), matches[0]["effective"]

    def set_channel(
        self,
        serial: str,
        channel: int,
        *,
        zone: int | None = None,
        zone_type: str | None = None,
        camera: str | None = None,
        code: str | None = None,
        enabled: bool | None = None,
        inherit: bool = False,
    ) -> None:
        """Change a channel's zone, zone type, camera, or its alarm library override."""
        serial = bridge_serial(serial)
        key = alarm_library.zone_type_key(zone_type) if zone_type is not None else None
        code = alarm_library.event_code(code) if code is not None else None
        if zone is not None and not 1 <= zone <= 999:
            raise InvalidInputError(f"zone must be 1-999, got {zone}")
        if camera is not None and (len(camera) > NAME_MAX or not camera.isprintable()):
            raise InvalidInputError("camera name must be printable and at most 200 characters")
        try:
            with self._write():
                bridge = self.tables.bridge_by_serial(serial)
                if bridge is None:
                    raise NotFoundError(f"no bridge {serial}")
                if not 1 <= channel <= bridge["channels"]:
                    raise InvalidInputError(
                        f"bridge {serial} has channels 1-{bridge['channels']}, not {channel}"
                    )
                current = self.tables.channel(bridge["id"], channel)
                if zone is not None and zone != current["zone"]:
                    holder = self._zone_holders(bridge["account_id"], bridge["id"]).get(zone)
                    if holder is not None:
                        raise CollisionError(
                            f"zone {zone:03d} is already held by bridge "
                            f"{holder[0]} channel {holder[1]}",
                            holder=f"{holder[0]}/{holder[1]}",
                        )
                new_code = None if inherit else (code if code is not None else current["code"])
                new_enabled = (
                    None
                    if inherit
                    else (_flag(enabled) if enabled is not None else current["enabled"])
                )
                self.tables.update_channel(
                    bridge["id"],
                    channel,
                    zone=zone if zone is not None else current["zone"],
                    zone_type=key or current["zone_type"],
                    camera=(camera.strip() or None) if camera is not None else current["camera"],
                    code=new_code,
                    enabled=new_enabled,
                )
        except RowRefusedError as exc:
            raise CollisionError(f"channel {channel} of bridge {serial} refused: {exc}") from None

    def list_bridges(self) -> list[dict[str, Any]]:
        """One row per channel: bridge, site, account, zone (three digits), type, camera, and
        the channel's own library override (``code``/``enabled``, None when it inherits)."""
        with self._read():
            accounts = {r["id"]: r["effective"] for r in self.tables.accounts()}
            bridges = {r["id"]: r for r in self.tables.bridges()}
            rows = []
            for c in self.tables.channels():
                b = bridges[c["bridge_id"]]
                rows.append(
                    {
                        "serial": b["serial"],
                        "model": b["model"],
                        "site": b["site"],
                        "site_id": b["site_id"],
                        "account": accounts.get(b["account_id"]),
                        "channel": c["channel"],
                        "zone": f"{c['zone']:03d}",
                        "zone_type": c["zone_type"],
                        "camera": c["camera"],
                        "code": c["code"],
                        "enabled": None if c["enabled"] is None else bool(c["enabled"]),
                    }
                )
        rows.sort(key=lambda r: (r["serial"], r["channel"]))
        return rows

    # -- station records --------------------------------------------------------------------

    def _station_or_only(self, name: str | None) -> StationRecord:
        """The named station, or the registry's only one when no name is given."""
        if name is not None:
            return self._station(name)
        rows = self.tables.stations()
        if len(rows) != 1:
            raise InvalidInputError(f"the registry has {len(rows)} stations: give --station NAME")
        return StationRecord(rows[0]["id"], rows[0]["name"])

    def edit_station(
        self,
        name: str,
        *,
        new_name: str | None = None,
        xml_output: str | Keep | None = KEEP,
        passkey: str | Keep | None = KEEP,
    ) -> str:
        """Rename a station or set its XML receiver (output name) and passkey; its name."""
        renamed = entity_name(new_name, "station") if new_name is not None else None
        output = _optional_text(xml_output, "XML output") if xml_output is not KEEP else KEEP
        key = _optional_text(passkey, "passkey") if passkey is not KEEP else KEEP
        with self._write():
            row = self.tables.station_by_name(name.strip())
            if row is None:
                raise NotFoundError(f"no station named {name.strip()!r}")
            if (
                renamed is not None
                and renamed != row["name"]
                and self.tables.station_by_name(renamed) is not None
            ):
                raise CollisionError(
                    f"station name {renamed!r} is held by another station",
                    holder=f"station {renamed}",
                )
            final = renamed or row["name"]
            self.tables.update_station(
                row["id"],
                final,
                row["xml_output"] if output is KEEP else output,
                row["passkey"] if key is KEEP else key,
            )
        return str(final)

    def show_station(self, name: str) -> dict[str, Any]:
        """A station's record: XML receiver, whether a passkey is set, lines, prefixes and
        account counts (the passkey itself is never shown)."""
        with self._read():
            row = self.tables.station_by_name(name.strip())
            if row is None:
                raise NotFoundError(f"no station named {name.strip()!r}")
            lines = [
                {"line": r["number"], "prefix": r["prefix"], "accounts": r["accounts"]}
                for r in self.tables.station_lines(row["id"])
            ]
        return {
            "name": row["name"],
            "xml_output": row["xml_output"],
            "passkey_set": row["passkey"] is not None,
            "lines": lines,
            "accounts": sum(int(line["accounts"]) for line in lines),
        }

    # -- dealer and site lifecycle ----------------------------------------------------------

    def edit_dealer(self, name: str, *, new_name: str) -> str:
        renamed = entity_name(new_name, "dealer")
        with self._write():
            dealer_id = self._dealer_id(name)
            holder = self.tables.dealer_by_name(renamed)
            if holder is not None and int(holder["id"]) != dealer_id:
                raise CollisionError(
                    f"dealer name {renamed!r} is held by another dealer",
                    holder=f"dealer {renamed}",
                )
            self.tables.rename_dealer(dealer_id, renamed)
        return renamed

    def remove_dealer(self, name: str, *, cascade: bool = False) -> Removed:
        """Mark a dealer removed (its name is free again); with ``cascade`` its sites, their
        accounts and bridges too. Signals and history are kept."""
        with self._write():
            dealer_id = self._dealer_id(name)
            sites = [r["name"] for r in self.tables.sites_of_dealer(dealer_id)]
            if sites and not cascade:
                raise RegistryError(
                    f"dealer {name.strip()!r} still has {len(sites)} site(s) "
                    f"({', '.join(sites)}); remove them first or give --cascade"
                )
            removed = Removed()
            for site in sites:
                removed = removed.plus(self._remove_site(site, cascade=True))
            self.tables.remove_dealer(dealer_id, time.time())
        return removed

    def edit_site(
        self,
        name: str,
        *,
        new_name: str | None = None,
        dealer: str | None = None,
        address: str | Keep | None = KEEP,
        arming_source: str | Keep | None = KEEP,
    ) -> str:
        renamed = entity_name(new_name, "site") if new_name is not None else None
        if arming_source is not KEEP and arming_source is not None:
            _arming_source(arming_source)
        with self._write():
            row = self._site(name)
            if renamed is not None and renamed != row["name"]:
                holder = self.tables.site_by_name(renamed)
                if holder is not None:
                    raise CollisionError(
                        f"site name {renamed!r} is held by another site "
                        f"(dealer {holder['dealer']})",
                        holder=f"site {renamed}",
                    )
            dealer_id = self._dealer_id(dealer) if dealer is not None else row["dealer_id"]
            current = self.tables.site_details(row["id"])
            self.tables.update_site(
                row["id"],
                renamed or row["name"],
                dealer_id,
                current["address"] if address is KEEP else ((address or "").strip() or None),
                current["arming_source"] if arming_source is KEEP else arming_source,
            )
        return str(renamed or row["name"])

    def remove_site(self, name: str, *, cascade: bool = False) -> Removed:
        """Mark a site removed (its name is free again). Refused while it has accounts or
        bridges, unless ``cascade`` removes them too. Signals and history are kept."""
        with self._write():
            return self._remove_site(name, cascade=cascade)

    def _remove_site(self, name: str, *, cascade: bool) -> Removed:
        row = self._site(name)
        accounts = self.tables.accounts_of_site(row["id"])
        bridges = self.tables.bridges_of_site(row["id"])
        if (accounts or bridges) and not cascade:
            raise RegistryError(
                f"site {row['name']!r} still has {len(accounts)} account(s) "
                f"({', '.join(a['effective'] for a in accounts) or 'none'}) and "
                f"{len(bridges)} bridge(s) ({', '.join(b['serial'] for b in bridges) or 'none'})"
                "; remove them first or give --cascade"
            )
        now = time.time()
        for bridge in bridges:
            self.tables.delete_bridge_channels(bridge["id"])
            self.tables.remove_bridge(bridge["id"], now)
        for account in accounts:
            self.tables.remove_account(account["id"], now)
        self.tables.remove_site(row["id"], now)
        return Removed(
            sites=(str(row["name"]),),
            accounts=tuple(str(a["effective"]) for a in accounts),
            bridges=tuple(str(b["serial"]) for b in bridges),
        )

    # -- account lifecycle --------------------------------------------------------------------

    def _account(
        self, station: str | None, line: str, number: str
    ) -> tuple[StationRecord, RegistryRow]:
        st = self._station_or_only(station)
        ln = self._line(st, line_number(line))
        effective = effective_number(ln.prefix, account_number(number))
        row = self.tables.account_by_effective(st.id, effective)
        if row is None:
            raise NotFoundError(f"station {st.name!r} has no account {effective}")
        return st, row

    def edit_account(
        self,
        station: str | None,
        line: str,
        number: str,
        *,
        new_line: str | None = None,
        new_number: str | None = None,
        site: str | Keep | None = KEEP,
        supervision: float | Keep | None = KEEP,
        window_past: float | Keep | None = KEEP,
        window_future: float | Keep | None = KEEP,
        window_policy: str | Keep | None = KEEP,
    ) -> AccountEdit:
        """Change an account's line, number, site or settings. A new number is checked as
        ``add`` checks it: a collision is refused with the holder named."""
        if supervision is not KEEP:
            positive(supervision, "supervision")
        if window_past is not KEEP:
            non_negative(window_past, "window past")
        if window_future is not KEEP:
            non_negative(window_future, "window future")
        if window_policy not in (KEEP, None, *WINDOW_POLICIES):
            raise InvalidInputError(f"window policy must be reject or flag, got {window_policy!r}")
        try:
            with self._write():
                st, row = self._account(station, line, number)
                old_line = self.tables.line_by_id(row["line_id"])
                target_line = line_number(new_line) if new_line is not None else old_line["number"]
                target_number = (
                    account_number(new_number) if new_number is not None else row["number"]
                )
                check = self._check(st, target_line, target_number)
                if check.holder is not None and check.holder.account_id != row["id"]:
                    raise _collision(check.effective, st.name, check.holder)
                ln = self._line(st, target_line)
                site_id = row["site_id"]
                if site is not KEEP:
                    site_id = int(self._site(site)["id"]) if site is not None else None
                current = self.tables.account_settings(row["id"])
                self.tables.update_account(
                    row["id"],
                    line_id=ln.id,
                    number=target_number,
                    effective=check.effective,
                    site_id=site_id,
                    supervision=current["supervision"] if supervision is KEEP else supervision,
                    window_past=current["window_past"] if window_past is KEEP else window_past,
                    window_future=(
                        current["window_future"] if window_future is KEEP else window_future
                    ),
                    window_policy=(
                        current["window_policy"] if window_policy is KEEP else window_policy
                    ),
                )
                detached: tuple[str, ...] = ()
                attached: tuple[str, ...] = ()
                if site_id != row["site_id"]:
                    detached = self._detach_bridges(int(row["id"]))
                    if row["site_id"] is not None:
                        attached += self._attach_waiting_bridges(int(row["site_id"]))
                    if site_id is not None:
                        attached += self._attach_waiting_bridges(int(site_id))
        except RowRefusedError:
            raise CollisionError(
                f"account {number.strip()} refused: its new number was taken meanwhile"
            ) from None
        return AccountEdit(
            station=st.name,
            was=str(row["effective"]),
            check=check,
            detached_bridges=tuple(b for b in detached if b not in attached),
            attached_bridges=attached,
        )

    def remove_account(self, station: str | None, line: str, number: str) -> AccountEdit:
        """Mark an account removed: its number is free again; its signals stay in the journal.
        Bridges reporting under it wait for the site's next account."""
        with self._write():
            st, row = self._account(station, line, number)
            self.tables.remove_account(row["id"], time.time())
            detached = self._detach_bridges(int(row["id"]))
            attached: tuple[str, ...] = ()
            if row["site_id"] is not None:
                attached = self._attach_waiting_bridges(int(row["site_id"]))
        check = AccountCheck(st.name, "", str(row["number"]), str(row["effective"]), None)
        return AccountEdit(
            station=st.name,
            was=str(row["effective"]),
            check=check,
            detached_bridges=tuple(b for b in detached if b not in attached),
            attached_bridges=attached,
        )

    def set_key(
        self,
        station: str | None,
        line: str,
        number: str,
        key: AccountKey,
        *,
        grace: float | None = None,
    ) -> float | None:
        """Give an account a new AES key. With ``grace`` seconds, frames under the previous
        key (or plaintext, if it had none) are still accepted until then; returns that
        deadline (epoch seconds), None without grace."""
        grace = non_negative(grace, "grace")
        with self._write():
            _, row = self._account(station, line, number)
            until = time.time() + grace if grace else None
            self.tables.set_account_key(
                row["id"],
                key_text=key.text,
                key_format=key.format,
                previous_text=row["key_text"] if until is not None else None,
                previous_format=row["key_format"] if until is not None else None,
                grace_until=until,
            )
        return until

    # -- bridge lifecycle --------------------------------------------------------------------

    def _bridge(self, serial: str) -> RegistryRow:
        serial = bridge_serial(serial)
        row = self.tables.bridge_by_serial(serial)
        if row is None:
            raise NotFoundError(f"no bridge {serial}")
        return row

    def edit_bridge(
        self,
        serial: str,
        *,
        new_serial: str | None = None,
        model: str | Keep | None = KEEP,
        account: str | None = None,
        first_zone: int | None = None,
    ) -> str:
        """Change a bridge's serial, model, the site account it reports under, or shift its
        zones (``first_zone``); collisions are refused with the holder named."""
        return self._relocate_bridge(
            serial,
            site=None,
            new_serial=new_serial,
            model=model,
            account=account,
            first_zone=first_zone,
        )

    def move_bridge(
        self,
        serial: str,
        *,
        site: str,
        account: str | None = None,
        first_zone: int | None = None,
    ) -> str:
        """Move a bridge to another site (a new customer), under that site's account (it
        waits if the site has none)."""
        return self._relocate_bridge(
            serial, site=site, new_serial=None, model=KEEP, account=account, first_zone=first_zone
        )

    def _relocate_bridge(
        self,
        serial: str,
        *,
        site: str | None,
        new_serial: str | None,
        model: str | Keep | None,
        account: str | None,
        first_zone: int | None,
    ) -> str:
        renamed = bridge_serial(new_serial) if new_serial is not None else None
        try:
            with self._write():
                row = self._bridge(serial)
                final = renamed or str(row["serial"])
                if renamed is not None and renamed != row["serial"]:
                    holder = self.tables.bridge_by_serial(renamed)
                    if holder is not None:
                        raise CollisionError(
                            f"serial {renamed} is held by another bridge", holder=renamed
                        )
                site_row = (
                    self._site(site) if site is not None else self.tables.site_by_id(row["site_id"])
                )
                if site is None and account is None:
                    account_id = row["account_id"]
                    label = None
                    if account_id is not None:
                        label = self.tables.account_by_id(account_id)["effective"]
                else:
                    account_id, label = self._site_account(site_row, account)
                zones = {
                    int(r["channel"]): int(r["zone"]) for r in self.tables.bridge_zones(row["id"])
                }
                if first_zone is not None:
                    _zones_in_range(first_zone, int(row["channels"]))
                    zones = {ch: first_zone + ch - 1 for ch in zones}
                self._refuse_zone_collision(
                    account_id, label, zones.values(), own_bridge=str(row["serial"])
                )
                self.tables.update_bridge(
                    row["id"],
                    serial=final,
                    model=row["model"] if model is KEEP else ((model or "").strip() or None),
                    site_id=site_row["id"],
                    account_id=account_id,
                )
                # Through NULL, so the (account, zone) index never sees a half-shifted bridge.
                self.tables.detach_channels(row["id"])
                if first_zone is not None:
                    self.tables.shift_bridge_zones(row["id"], first_zone)
                self.tables.set_channels_account(row["id"], account_id)
        except RowRefusedError as exc:
            raise CollisionError(f"bridge {serial.strip().upper()} refused: {exc}") from None
        return final

    def remove_bridge(self, serial: str) -> str:
        """Mark a bridge removed: its serial is free again, its zones too; signals stay."""
        with self._write():
            row = self._bridge(serial)
            self.tables.delete_bridge_channels(row["id"])
            self.tables.remove_bridge(row["id"], time.time())
        return str(row["serial"])

    def set_token(self, serial: str, token: str, *, grace: float | None = None) -> float | None:
        """Give a bridge a new token; with ``grace`` seconds its previous token still lets it
        in until then (returned, epoch seconds)."""
        token = bridge_token(token)
        grace = non_negative(grace, "grace")
        with self._write():
            row = self._bridge(serial)
            until = time.time() + grace if grace else None
            self.tables.set_bridge_token(
                row["id"], token, row["token"] if until is not None else None, until
            )
        return until

    def import_bridges(self, rows: Iterable[ImportRow], *, dry_run: bool = False) -> ImportReport:
        """Add bridges from CSV rows all-or-nothing; every problem is reported with its line."""
        rows = list(rows)
        problems: list[ImportProblem] = []
        seen: dict[str, int] = {}
        self.tables.begin_write()
        try:
            for row in rows:
                # A refused row is undone alone (PostgreSQL aborts the whole transaction on a
                # refused statement unless it is inside a savepoint).
                self.tables.savepoint("import_row")
                problem = self._import_bridge(row, seen)
                if problem is not None:
                    problems.append(problem)
                    self.tables.rollback_to("import_row")
                self.tables.release("import_row")
        except BaseException:
            self.tables.rollback()
            raise
        # A dry run or a refused import writes nothing.
        if dry_run or problems:
            self.tables.rollback()
        else:
            self.tables.commit()
        imported = 0 if (dry_run or problems) else len(rows)
        return ImportReport("", len(rows), imported, dry_run, tuple(problems))

    def _import_bridge(self, row: ImportRow, seen: dict[str, int]) -> ImportProblem | None:
        values = row.values
        try:
            new = _new_bridge(
                values.get("serial", ""),
                values.get("token", ""),
                _whole(values.get("channels"), "channels") or 0,
                values.get("model"),
                _whole(values.get("first_zone"), "first_zone"),
            )
            first = seen.get(new.serial)
            if first is not None:
                return ImportProblem(
                    row.line, "collision", f"bridge {new.serial} is also on CSV line {first}"
                )
            seen[new.serial] = row.line
            self._insert_bridge(
                new, values.get("site", ""), values.get("account", "").strip() or None
            )
        except RowRefusedError as exc:  # a RegistryError: before that clause
            return ImportProblem(row.line, "collision", f"refused by the store: {exc}")
        except CollisionError as exc:
            return ImportProblem(row.line, "collision", str(exc))
        except NotFoundError as exc:
            return ImportProblem(row.line, "not_found", str(exc))
        except RegistryError as exc:
            return ImportProblem(row.line, "collision", str(exc))
        except InvalidInputError as exc:
            return ImportProblem(row.line, "invalid", str(exc))
        return None

    # -- shared steps (inside a write transaction) ---------------------------------------

    def _zone_holders(
        self, account_id: int | None, bridge_id: int | None = None
    ) -> dict[int, tuple[str, int]]:
        """Zone number -> (serial, channel) on an account; for a bridge still waiting for its
        site's account (``account_id`` None), on that bridge alone."""
        rows: list[Any] = []
        if account_id is not None:
            rows = self.tables.zone_holders(account_id)
        elif bridge_id:
            rows = self.tables.zone_holders_of_bridge(bridge_id)
        return {int(r["zone"]): (r["serial"], int(r["channel"])) for r in rows}

    def _refuse_zone_collision(
        self,
        account_id: int | None,
        account_label: str | None,
        zones: Iterable[int],
        *,
        own_bridge: str | None,
    ) -> None:
        """Refuse, naming the holder, zones another bridge on the account already holds."""
        if account_id is None:
            return  # a waiting bridge's zones are its own
        taken = self._zone_holders(account_id)
        for zone in zones:
            held = taken.get(zone)
            if held is not None and held[0] != own_bridge:
                raise CollisionError(
                    f"zone {zone:03d} on account {account_label} is held by bridge "
                    f"{held[0]} channel {held[1]}; give --first-zone so this "
                    "bridge's zones do not collide",
                    holder=f"{held[0]}/{held[1]}",
                )

    def _attach_waiting_bridges(self, site_id: int) -> tuple[str, ...]:
        """Give a site's waiting bridges its account, once it has exactly one. A bridge whose zones
        collide with another bridge on that account keeps waiting (``set-channel`` its zones)."""
        accounts = self.tables.accounts_of_site(site_id)
        if len(accounts) != 1:
            return ()
        account_id = int(accounts[0]["id"])
        attached = []
        for bridge in self.tables.waiting_bridges(site_id):
            self.tables.savepoint("attach_bridge")
            try:
                self.tables.attach_bridge(bridge["id"], account_id)
            except RowRefusedError:
                self.tables.rollback_to("attach_bridge")
            else:
                attached.append(str(bridge["serial"]))
            self.tables.release("attach_bridge")
        return tuple(attached)

    def _detach_bridges(self, account_id: int) -> tuple[str, ...]:
        """Bridges reporting under an account stop doing so (they wait for their site's)."""
        detached = []
        for bridge in self.tables.bridges_of_account(account_id):
            self.tables.detach_bridge(bridge["id"])
            detached.append(str(bridge["serial"]))
        return tuple(detached)

    @staticmethod
    def _overrides(
        rows: Iterable[RegistryRow], column: str, owner: int
    ) -> dict[str, LibraryOverride]:
        """The library overrides among ``rows`` whose ``column`` (dealer or site) is ``owner``."""
        found = {}
        for row in rows:
            if row[column] == owner:
                enabled = None if row["enabled"] is None else bool(row["enabled"])
                found[row["zone_type"]] = LibraryOverride(code=row["code"], enabled=enabled)
        return found


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _collision(effective: str, station: str, holder: Holder) -> CollisionError:
    return CollisionError(
        f"account {effective} is taken at station {station}: {holder.describe()}",
        holder=holder.describe(),
    )


def _account_row(
    station: StationRecord, line: LineRecord, spec: AccountSpec, site_id: int | None
) -> AccountRow:
    return AccountRow(
        station_id=station.id,
        line_id=line.id,
        number=spec.number,
        effective=effective_number(line.prefix, spec.number),
        site_id=site_id,
        key_text=spec.key.text if spec.key else None,
        key_format=spec.key.format if spec.key else None,
        supervision=spec.supervision,
        window_past=spec.window_past,
        window_future=spec.window_future,
        window_policy=spec.window_policy,
    )


@attrs.frozen
class _NewBridge:
    serial: str
    token: str
    channels: int
    model: str | None
    first_zone: int


def _new_bridge(
    serial: str, token: str, channels: int, model: str | None, first_zone: int | None
) -> _NewBridge:
    """A bridge to add, validated (serial, token, channel count, zones within 1-999)."""
    serial = bridge_serial(serial)
    token = bridge_token(token)
    if channels not in BRIDGE_CHANNELS:
        raise InvalidInputError(f"a bridge has 4, 8, 12 or 16 channels, got {channels}")
    first = 1 if first_zone is None else first_zone
    _zones_in_range(first, channels)
    return _NewBridge(serial, token, channels, (model or "").strip() or None, first)


def _zones_in_range(first: int, channels: int) -> None:
    if first < 1 or first + channels - 1 > 999:
        raise InvalidInputError(f"zones {first}..{first + channels - 1} are not within 1-999")


@attrs.frozen
class Removed:
    """What a removal marked removed."""

    sites: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    bridges: tuple[str, ...] = ()

    def plus(self, other: Removed) -> Removed:
        return Removed(
            self.sites + other.sites,
            self.accounts + other.accounts,
            self.bridges + other.bridges,
        )


@attrs.frozen(kw_only=True)
class AccountEdit:
    """An edited (or removed) account: its number before, its check after, and the bridges
    that stopped reporting under it (they wait) or were attached by the change."""

    station: str
    was: str
    check: AccountCheck
    detached_bridges: tuple[str, ...] = ()
    attached_bridges: tuple[str, ...] = ()


def _optional_text(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if len(text) > NAME_MAX or not text.isprintable():
        raise InvalidInputError(f"{what} must be 1-{NAME_MAX} printable characters")
    return text


def _arming_source(value: str) -> str:
    if value not in ARMING_SOURCES:
        raise InvalidInputError(
            f"arming source must be one of {', '.join(ARMING_SOURCES)}, got {value!r}"
        )
    return value


def _whole(text: str | None, what: str) -> int | None:
    if text is None or not text.strip():
        return None
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(f"{what} must be a whole number, got {text!r}") from None
