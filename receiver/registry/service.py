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
- The SQL lives in ``receiver.store.registry_sql``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

from protocols.errors import CollisionError, InvalidInputError, NotFoundError, RegistryError
from receiver import alarm_library
from receiver.account_numbers import (
    DEFAULT_LINE,
    account_number,
    bridge_serial,
    effective_number,
    line_number,
    line_prefix,
    repeats_prefix,
)
from receiver.alarm_library import LibraryEntry, LibraryOverride
from receiver.registry.csv_import import (
    ImportProblem,
    ImportReport,
    ImportRow,
    check_account_row,
)
from receiver.registry.records import (
    ARMING_SOURCES,
    BRIDGE_CHANNELS,
    NAME_MAX,
    AccountCheck,
    AccountSpec,
    Holder,
    LineRecord,
    StationRecord,
    entity_name,
)
from receiver.store import registry_sql as sql
from receiver.store.sqlite import connect

Progress = Callable[[int, int], None]


class Registry:
    """The registry service over one store connection (autocommit; explicit transactions)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @classmethod
    def open(cls, path: str | Path) -> Registry:
        return cls(connect(path))

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute(sql.BEGIN_WRITE)
        try:
            yield self.conn
        except BaseException:
            self.conn.execute(sql.ROLLBACK)
            raise
        self.conn.execute(sql.COMMIT)

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute(sql.BEGIN_READ)
        try:
            yield self.conn
        finally:
            self.conn.execute(sql.ROLLBACK)

    # -- lookups (inside a transaction) -------------------------------------------------------

    def _station(self, name: str) -> StationRecord:
        row = self.conn.execute(sql.STATION_BY_NAME, (name.strip(),)).fetchone()
        if row is None:
            raise NotFoundError(f"no station named {name.strip()!r}")
        return StationRecord(row["id"], row["name"])

    def _line(self, station: StationRecord, number: str) -> LineRecord:
        row = self.conn.execute(sql.LINE, (station.id, number)).fetchone()
        if row is None:
            raise NotFoundError(f"station {station.name!r} has no line {number}")
        return LineRecord(row["id"], row["number"], row["prefix"])

    def _dealer_id(self, name: str) -> int:
        row = self.conn.execute(sql.DEALER_BY_NAME, (name.strip(),)).fetchone()
        if row is None:
            raise NotFoundError(f"no dealer named {name.strip()!r}")
        return int(row["id"])

    def _site(self, name: str) -> sqlite3.Row:
        row = self.conn.execute(sql.SITE_BY_NAME, (name.strip(),)).fetchone()
        if row is None:
            raise NotFoundError(f"no site named {name.strip()!r}")
        return row  # type: ignore[no-any-return]

    def _holder(self, station: StationRecord, effective: str) -> Holder | None:
        row = self.conn.execute(sql.HOLDER, (station.id, effective)).fetchone()
        if row is None:
            return None
        return Holder(
            row["id"], station.name, row["line"], row["number"], row["effective"], row["site"]
        )

    # -- stations, dealers, sites -----------------------------------------------------------

    def add_station(self, name: str) -> None:
        """Create a station with its line 0 (no prefix)."""
        name = entity_name(name, "station")
        with self._write() as conn:
            if conn.execute(sql.STATION_BY_NAME, (name,)).fetchone() is not None:
                raise RegistryError(f"station {name!r} already exists")
            cur = conn.execute(sql.INSERT_STATION, (name,))
            conn.execute(sql.INSERT_LINE, (cur.lastrowid, DEFAULT_LINE, ""))

    def add_line(self, station: str, number: str, prefix: str | None = None) -> str:
        """Add a line to a station; returns the line number in its stored form."""
        number = line_number(number)
        pfx = line_prefix(prefix)
        with self._write() as conn:
            st = self._station(station)
            if conn.execute(sql.LINE, (st.id, number)).fetchone() is not None:
                raise RegistryError(f"station {st.name!r} already has line {number}")
            conn.execute(sql.INSERT_LINE, (st.id, number, pfx))
        return number

    def lines(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [
                {
                    "station": r["station"],
                    "line": r["number"],
                    "prefix": r["prefix"],
                    "accounts": r["accounts"],
                }
                for r in conn.execute(sql.ALL_LINES)
            ]

    def add_dealer(self, name: str) -> None:
        name = entity_name(name, "dealer")
        with self._write() as conn:
            if conn.execute(sql.DEALER_BY_NAME, (name,)).fetchone() is not None:
                raise RegistryError(f"dealer {name!r} already exists")
            conn.execute(sql.INSERT_DEALER, (name,))

    def dealers(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [{"name": r["name"]} for r in conn.execute(sql.DEALERS)]

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
        with self._write() as conn:
            dealer_id = self._dealer_id(dealer)
            if conn.execute(sql.SITE_BY_NAME, (name,)).fetchone() is not None:
                raise RegistryError(f"site {name!r} already exists")
            conn.execute(
                sql.INSERT_SITE, (name, dealer_id, (address or "").strip() or None, arming_source)
            )

    def sites(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            return [dict(r) for r in conn.execute(sql.SITES)]

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
            with self._write() as conn:
                st = self._station(station)
                check = self._check(st, spec.line, spec.number)
                if check.holder is not None:
                    raise _collision(check.effective, st.name, check.holder)
                site_id = int(self._site(spec.site)["id"]) if spec.site else None
                line = self._line(st, spec.line)
                conn.execute(sql.INSERT_ACCOUNT, _account_params(st, line, spec, site_id))
                if site_id is not None:
                    check = attrs.evolve(
                        check, attached_bridges=_attach_waiting_bridges(conn, site_id)
                    )
        except sqlite3.IntegrityError:
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
        with self._read() as conn:
            if station is not None:
                self._station(station)
                rows = conn.execute(sql.ACCOUNTS_OF_STATION, (station.strip(),))
            else:
                rows = conn.execute(sql.ACCOUNTS_ORDERED)
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
            with self._write() as conn:
                st = self._station(station)
                lines = {
                    r["number"]: LineRecord(r["id"], r["number"], r["prefix"])
                    for r in conn.execute(sql.LINES_OF_STATION, (st.id,))
                }
                sites = {r["name"]: int(r["id"]) for r in conn.execute(sql.SITE_IDS)}
                held = {
                    r["effective"]: Holder(
                        r["id"], st.name, r["line"], r["number"], r["effective"], r["site"]
                    )
                    for r in conn.execute(sql.HOLDERS_OF_STATION, (st.id,))
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
                        params.append(_account_params(st, found.line, found.spec, found.site_id))
                    if progress is not None and (done % 500 == 0 or done == len(rows)):
                        progress(done, len(rows))
                # A refused import or a dry run writes nothing; committing the empty
                # transaction just releases the lock.
                if not dry_run and not any(p.kind != "warning" for p in problems):
                    conn.executemany(sql.INSERT_ACCOUNT, params)
                    for site_id in {r["site_id"] for r in conn.execute(sql.SITES_WAITING)}:
                        _attach_waiting_bridges(conn, int(site_id))
        except sqlite3.IntegrityError as exc:
            raise CollisionError(
                f"import refused: an account number was taken while importing ({exc})"
            ) from None
        imported = 0 if (dry_run or any(p.kind != "warning" for p in problems)) else len(rows)
        return ImportReport(st.name, len(rows), imported, dry_run, tuple(problems))

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
        with self._write() as conn:
            owner: tuple[int | None, int | None]
            if dealer is not None:
                owner = (self._dealer_id(dealer), None)
                row = conn.execute(sql.DEALER_OVERRIDE, (owner[0], key)).fetchone()
            else:
                assert site is not None
                owner = (None, int(self._site(site)["id"]))
                row = conn.execute(sql.SITE_OVERRIDE, (owner[1], key)).fetchone()
            if inherit:
                if row is not None:
                    conn.execute(sql.DELETE_OVERRIDE, (row["id"],))
                return
            if row is None:
                conn.execute(sql.INSERT_OVERRIDE, (*owner, key, code, _flag(enabled)))
                return
            conn.execute(
                sql.UPDATE_OVERRIDE,
                (
                    code if code is not None else row["code"],
                    _flag(enabled) if enabled is not None else row["enabled"],
                    row["id"],
                ),
            )

    def library(self, *, site: str | None = None, dealer: str | None = None) -> list[LibraryEntry]:
        """The effective library of a site (or of a dealer), one entry per zone type."""
        if (dealer is None) == (site is None):
            raise InvalidInputError("give exactly one of --dealer or --site")
        with self._read() as conn:
            site_overrides: dict[str, LibraryOverride] = {}
            if site is not None:
                row = self._site(site)
                dealer_id = int(row["dealer_id"])
                site_overrides = _overrides(conn, sql.SITE_OVERRIDES, int(row["id"]))
            else:
                assert dealer is not None
                dealer_id = self._dealer_id(dealer)
            dealer_overrides = _overrides(conn, sql.DEALER_OVERRIDES, dealer_id)
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
        serial = bridge_serial(serial)
        token = token.strip()
        if not token or len(token) > 256 or not token.isprintable():
            raise InvalidInputError("bridge token must be 1-256 printable characters")
        if channels not in BRIDGE_CHANNELS:
            raise InvalidInputError(f"a bridge has 4, 8, 12 or 16 channels, got {channels}")
        first = 1 if first_zone is None else first_zone
        if first < 1 or first + channels - 1 > 999:
            raise InvalidInputError(f"zones {first}..{first + channels - 1} are not within 1-999")
        model = (model or "").strip() or None
        try:
            with self._write() as conn:
                site_row = self._site(site)
                account_id, account_label = self._site_account(site_row, account)
                if conn.execute(sql.BRIDGE_BY_SERIAL, (serial,)).fetchone() is not None:
                    raise RegistryError(f"bridge {serial} already exists")
                taken = _zone_holders(conn, account_id)
                for zone in range(first, first + channels):
                    if zone in taken:
                        held_serial, held_channel = taken[zone]
                        raise CollisionError(
                            f"zone {zone:03d} on account {account_label} is held by bridge "
                            f"{held_serial} channel {held_channel}; give --first-zone so this "
                            "bridge's zones do not collide",
                            holder=f"{held_serial}/{held_channel}",
                        )
                cur = conn.execute(
                    sql.INSERT_BRIDGE,
                    (serial, token, model, channels, site_row["id"], account_id),
                )
                conn.executemany(
                    sql.INSERT_CHANNEL,
                    [
                        (cur.lastrowid, ch, account_id, first + ch - 1, "instant")
                        for ch in range(1, channels + 1)
                    ],
                )
        except sqlite3.IntegrityError as exc:
            raise CollisionError(f"bridge {serial} refused: {exc}") from None
        return serial

    def _site_account(
        self, site_row: sqlite3.Row, account: str | None
    ) -> tuple[int | None, str | None]:
        """The account a new bridge reports under: the site's only one, or ``account``; (None,
        None) when the site has none yet (the bridge waits for it)."""
        accounts = self.conn.execute(sql.ACCOUNTS_OF_SITE, (site_row["id"],)).fetchall()
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
            with self._write() as conn:
                bridge = conn.execute(sql.BRIDGE_BY_SERIAL, (serial,)).fetchone()
                if bridge is None:
                    raise NotFoundError(f"no bridge {serial}")
                if not 1 <= channel <= bridge["channels"]:
                    raise InvalidInputError(
                        f"bridge {serial} has channels 1-{bridge['channels']}, not {channel}"
                    )
                current = conn.execute(sql.CHANNEL, (bridge["id"], channel)).fetchone()
                if zone is not None and zone != current["zone"]:
                    holder = _zone_holders(conn, bridge["account_id"], bridge["id"]).get(zone)
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
                conn.execute(
                    sql.UPDATE_CHANNEL,
                    (
                        zone if zone is not None else current["zone"],
                        key or current["zone_type"],
                        (camera.strip() or None) if camera is not None else current["camera"],
                        new_code,
                        new_enabled,
                        bridge["id"],
                        channel,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise CollisionError(f"channel {channel} of bridge {serial} refused: {exc}") from None

    def list_bridges(self) -> list[dict[str, Any]]:
        """One row per channel: bridge, site, account, zone (three digits), type, camera, and
        the channel's own library override (``code``/``enabled``, None when it inherits)."""
        with self._read() as conn:
            accounts = {r["id"]: r["effective"] for r in conn.execute(sql.ACCOUNTS)}
            bridges = {r["id"]: r for r in conn.execute(sql.BRIDGES)}
            rows = []
            for c in conn.execute(sql.CHANNELS):
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


def _flag(value: bool | None) -> int | None:
    return None if value is None else int(value)


def _collision(effective: str, station: str, holder: Holder) -> CollisionError:
    return CollisionError(
        f"account {effective} is taken at station {station}: {holder.describe()}",
        holder=holder.describe(),
    )


def _account_params(
    station: StationRecord, line: LineRecord, spec: AccountSpec, site_id: int | None
) -> tuple[Any, ...]:
    return (
        station.id,
        line.id,
        spec.number,
        effective_number(line.prefix, spec.number),
        site_id,
        spec.key.text if spec.key else None,
        spec.key.format if spec.key else None,
        spec.supervision,
        spec.window_past,
        spec.window_future,
        spec.window_policy,
    )


def _overrides(conn: sqlite3.Connection, query: str, owner: int) -> dict[str, LibraryOverride]:
    found = {}
    for row in conn.execute(query):
        if row[0] == owner:
            enabled = None if row["enabled"] is None else bool(row["enabled"])
            found[row["zone_type"]] = LibraryOverride(code=row["code"], enabled=enabled)
    return found


def _zone_holders(
    conn: sqlite3.Connection, account_id: int | None, bridge_id: int | None = None
) -> dict[int, tuple[str, int]]:
    """Zone number -> (serial, channel) on an account; for a bridge still waiting for its
    site's account (``account_id`` None), on that bridge alone."""
    if account_id is None:
        rows = conn.execute(sql.ZONE_HOLDERS_OF_BRIDGE, (bridge_id,)) if bridge_id else []
    else:
        rows = conn.execute(sql.ZONE_HOLDERS, (account_id,))
    return {int(r["zone"]): (r["serial"], int(r["channel"])) for r in rows}


def _attach_waiting_bridges(conn: sqlite3.Connection, site_id: int) -> tuple[str, ...]:
    """Give a site's waiting bridges its account, once it has exactly one. A bridge whose zones
    collide with another bridge on that account keeps waiting (``set-channel`` its zones)."""
    accounts = conn.execute(sql.ACCOUNTS_OF_SITE, (site_id,)).fetchall()
    if len(accounts) != 1:
        return ()
    account_id = int(accounts[0]["id"])
    attached = []
    for bridge in conn.execute(sql.WAITING_BRIDGES, (site_id,)).fetchall():
        conn.execute(sql.SAVEPOINT_ATTACH)
        try:
            conn.execute(sql.ATTACH_BRIDGE, (account_id, bridge["id"]))
            conn.execute(sql.ATTACH_CHANNELS, (account_id, bridge["id"]))
        except sqlite3.IntegrityError:
            conn.execute(sql.ROLLBACK_ATTACH)
        else:
            attached.append(str(bridge["serial"]))
        conn.execute(sql.RELEASE_ATTACH)
    return tuple(attached)
