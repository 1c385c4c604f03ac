"""The registry's tables behind typed methods: the :class:`RegistryTables` of both backends.

Rules:
- One method per named statement of the backend's registry SQL module
  (``receiver.store.registry_sql`` for SQLite, ``receiver.store.postgres.registry_sql`` for
  PostgreSQL: the same names), so the registry service and the index call methods and never
  run a statement; the SQL and the driver stay in ``receiver/store/``.
- Rows are read by column name, as the driver gives them (``sqlite3.Row``, psycopg's dict row).
- The transaction is the caller's: ``begin_write`` (SQLite ``BEGIN IMMEDIATE``; PostgreSQL an
  advisory lock, so registry writers on every node serialize), ``begin_read`` (one snapshot),
  ``commit``/``rollback`` and the two named savepoints. The database's unique indexes stay the
  last line of defence: a row one of them (or a check) refuses raises :class:`RowRefusedError`
  with the database's message, whichever driver refused it.
- Not thread-safe: one caller at a time (the service's worker thread, the CLI).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from receiver.store.interface import (
    AccountRow,
    RegistryRow,
    RowRefusedError,
    Savepoint,
    StoreError,
)

if TYPE_CHECKING:
    from receiver.registry.backends import RegistryConnection

_SAVEPOINTS: dict[str, tuple[str, str, str]] = {
    "attach_bridge": ("SAVEPOINT_ATTACH", "ROLLBACK_ATTACH", "RELEASE_ATTACH"),
    "import_row": ("SAVEPOINT_ROW", "ROLLBACK_ROW", "RELEASE_ROW"),
}


class SqlRegistryTables:
    """The registry's tables on one connection (SQLite or PostgreSQL) through ``sql``, that
    backend's registry SQL module."""

    def __init__(self, conn: RegistryConnection, sql: ModuleType) -> None:
        self.conn = conn
        self.sql = sql

    def close(self) -> None:
        self.conn.close()

    # -- running statements --------------------------------------------------------------------

    @contextmanager
    def _refusals(self) -> Iterator[None]:
        try:
            yield
        except self.sql.IntegrityError as exc:
            raise RowRefusedError(str(exc)) from exc

    def _run(self, name: str, params: Sequence[Any] = ()) -> None:
        with self._refusals():
            self.conn.execute(getattr(self.sql, name), params)

    def _one(self, name: str, params: Sequence[Any] = ()) -> RegistryRow | None:
        with self._refusals():
            row: RegistryRow | None = self.conn.execute(getattr(self.sql, name), params).fetchone()
        return row

    def _all(self, name: str, params: Sequence[Any] = ()) -> list[RegistryRow]:
        with self._refusals():
            return self.conn.execute(getattr(self.sql, name), params).fetchall()

    def _row(self, name: str, params: Sequence[Any]) -> RegistryRow:
        """The row of an id read in this transaction (or an ``INSERT ... RETURNING``)."""
        row = self._one(name, params)
        if row is None:
            raise StoreError(f"the registry's {name.lower()} found no row for {tuple(params)}")
        return row

    def _new_id(self, name: str, params: Sequence[Any]) -> int:
        return int(self._row(name, params)["id"])

    # -- transactions --------------------------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def begin_write(self) -> None:
        self._run("BEGIN_WRITE")

    def begin_read(self) -> None:
        self._run("BEGIN_READ")

    def commit(self) -> None:
        self._run("COMMIT")

    def rollback(self) -> None:
        self._run("ROLLBACK")

    def savepoint(self, name: Savepoint) -> None:
        self._run(_SAVEPOINTS[name][0])

    def rollback_to(self, name: Savepoint) -> None:
        self._run(_SAVEPOINTS[name][1])

    def release(self, name: Savepoint) -> None:
        self._run(_SAVEPOINTS[name][2])

    def generation(self) -> int:
        row = self._one("GENERATION")
        return int(row["value"]) if row is not None else 0

    # -- stations and lines --------------------------------------------------------------------

    def station_by_name(self, name: str) -> RegistryRow | None:
        return self._one("STATION_BY_NAME", (name,))

    def stations(self) -> list[RegistryRow]:
        return self._all("STATIONS")

    def insert_station(self, name: str, xml_output: str | None, passkey: str | None) -> int:
        return self._new_id("INSERT_STATION", (name, xml_output, passkey))

    def update_station(
        self, station_id: int, name: str, xml_output: str | None, passkey: str | None
    ) -> None:
        self._run("UPDATE_STATION", (name, xml_output, passkey, station_id))

    def station_lines(self, station_id: int) -> list[RegistryRow]:
        return self._all("STATION_LINES", (station_id,))

    def line(self, station_id: int, number: str) -> RegistryRow | None:
        return self._one("LINE", (station_id, number))

    def line_by_id(self, line_id: int) -> RegistryRow:
        return self._row("LINE_BY_ID", (line_id,))

    def lines_of_station(self, station_id: int) -> list[RegistryRow]:
        return self._all("LINES_OF_STATION", (station_id,))

    def all_lines(self) -> list[RegistryRow]:
        return self._all("ALL_LINES")

    def insert_line(self, station_id: int, number: str, prefix: str) -> None:
        self._run("INSERT_LINE", (station_id, number, prefix))

    # -- dealers and sites ---------------------------------------------------------------------

    def dealer_by_name(self, name: str) -> RegistryRow | None:
        return self._one("DEALER_BY_NAME", (name,))

    def dealers(self) -> list[RegistryRow]:
        return self._all("DEALERS")

    def insert_dealer(self, name: str) -> None:
        self._run("INSERT_DEALER", (name,))

    def rename_dealer(self, dealer_id: int, name: str) -> None:
        self._run("RENAME_DEALER", (name, dealer_id))

    def remove_dealer(self, dealer_id: int, at: float) -> None:
        self._run("REMOVE_DEALER", (at, dealer_id))

    def sites_of_dealer(self, dealer_id: int) -> list[RegistryRow]:
        return self._all("SITES_OF_DEALER", (dealer_id,))

    def site_by_name(self, name: str) -> RegistryRow | None:
        return self._one("SITE_BY_NAME", (name,))

    def site_by_id(self, site_id: int) -> RegistryRow:
        return self._row("SITE_BY_ID", (site_id,))

    def site_details(self, site_id: int) -> RegistryRow:
        return self._row("SITE_DETAILS", (site_id,))

    def site_ids(self) -> list[RegistryRow]:
        return self._all("SITE_IDS")

    def sites(self) -> list[RegistryRow]:
        return self._all("SITES")

    def site_dealers(self) -> list[RegistryRow]:
        return self._all("SITE_DEALERS")

    def insert_site(
        self, name: str, dealer_id: int, address: str | None, arming_source: str | None
    ) -> None:
        self._run("INSERT_SITE", (name, dealer_id, address, arming_source))

    def update_site(
        self,
        site_id: int,
        name: str,
        dealer_id: int,
        address: str | None,
        arming_source: str | None,
    ) -> None:
        self._run("UPDATE_SITE", (name, dealer_id, address, arming_source, site_id))

    def remove_site(self, site_id: int, at: float) -> None:
        self._run("REMOVE_SITE", (at, site_id))

    # -- accounts ------------------------------------------------------------------------------

    def holder(self, station_id: int, effective: str) -> RegistryRow | None:
        return self._one("HOLDER", (station_id, effective))

    def holders_of_station(self, station_id: int) -> list[RegistryRow]:
        return self._all("HOLDERS_OF_STATION", (station_id,))

    def insert_account_rows(self, rows: Sequence[AccountRow]) -> None:
        with self._refusals():
            self.conn.executemany(
                self.sql.INSERT_ACCOUNT,
                [
                    (
                        r.station_id,
                        r.line_id,
                        r.number,
                        r.effective,
                        r.site_id,
                        r.key_text,
                        r.key_format,
                        r.supervision,
                        r.window_past,
                        r.window_future,
                        r.window_policy,
                    )
                    for r in rows
                ],
            )

    def accounts_of_site(self, site_id: int) -> list[RegistryRow]:
        return self._all("ACCOUNTS_OF_SITE", (site_id,))

    def account_by_id(self, account_id: int) -> RegistryRow:
        return self._row("ACCOUNT_BY_ID", (account_id,))

    def account_by_effective(self, station_id: int, effective: str) -> RegistryRow | None:
        return self._one("ACCOUNT_BY_EFFECTIVE", (station_id, effective))

    def account_settings(self, account_id: int) -> RegistryRow:
        return self._row("ACCOUNT_SETTINGS", (account_id,))

    def update_account(
        self,
        account_id: int,
        *,
        line_id: int,
        number: str,
        effective: str,
        site_id: int | None,
        supervision: float | None,
        window_past: float | None,
        window_future: float | None,
        window_policy: str | None,
    ) -> None:
        self._run(
            "UPDATE_ACCOUNT",
            (
                line_id,
                number,
                effective,
                site_id,
                supervision,
                window_past,
                window_future,
                window_policy,
                account_id,
            ),
        )

    def set_account_key(
        self,
        account_id: int,
        *,
        key_text: str,
        key_format: str,
        previous_text: str | None,
        previous_format: str | None,
        grace_until: float | None,
    ) -> None:
        self._run(
            "SET_ACCOUNT_KEY",
            (key_text, key_format, previous_text, previous_format, grace_until, account_id),
        )

    def remove_account(self, account_id: int, at: float) -> None:
        self._run("REMOVE_ACCOUNT", (at, account_id))

    def accounts(self) -> list[RegistryRow]:
        """Every account with what the receiver needs to act on a frame (any order)."""
        return self._all("ACCOUNTS")

    def accounts_ordered(self) -> list[RegistryRow]:
        return self._all("ACCOUNTS_ORDERED")

    def accounts_of_station(self, station: str) -> list[RegistryRow]:
        return self._all("ACCOUNTS_OF_STATION", (station,))

    # -- alarm library -------------------------------------------------------------------------

    def dealer_override(self, dealer_id: int, zone_type: str) -> RegistryRow | None:
        return self._one("DEALER_OVERRIDE", (dealer_id, zone_type))

    def site_override(self, site_id: int, zone_type: str) -> RegistryRow | None:
        return self._one("SITE_OVERRIDE", (site_id, zone_type))

    def insert_override(
        self,
        dealer_id: int | None,
        site_id: int | None,
        zone_type: str,
        code: str | None,
        enabled: int | None,
    ) -> None:
        self._run("INSERT_OVERRIDE", (dealer_id, site_id, zone_type, code, enabled))

    def update_override(self, override_id: int, code: str | None, enabled: int | None) -> None:
        self._run("UPDATE_OVERRIDE", (code, enabled, override_id))

    def delete_override(self, override_id: int) -> None:
        self._run("DELETE_OVERRIDE", (override_id,))

    def dealer_overrides(self) -> list[RegistryRow]:
        return self._all("DEALER_OVERRIDES")

    def site_overrides(self) -> list[RegistryRow]:
        return self._all("SITE_OVERRIDES")

    # -- bridges and channels ------------------------------------------------------------------

    def bridge_by_serial(self, serial: str) -> RegistryRow | None:
        return self._one("BRIDGE_BY_SERIAL", (serial,))

    def bridges(self) -> list[RegistryRow]:
        return self._all("BRIDGES")

    def bridges_of_account(self, account_id: int) -> list[RegistryRow]:
        return self._all("BRIDGES_OF_ACCOUNT", (account_id,))

    def bridges_of_site(self, site_id: int) -> list[RegistryRow]:
        return self._all("BRIDGES_OF_SITE", (site_id,))

    def waiting_bridges(self, site_id: int) -> list[RegistryRow]:
        return self._all("WAITING_BRIDGES", (site_id,))

    def sites_waiting(self) -> list[RegistryRow]:
        return self._all("SITES_WAITING")

    def insert_bridge(
        self,
        serial: str,
        *,
        token: str,
        model: str | None,
        channels: int,
        site_id: int,
        account_id: int | None,
    ) -> int:
        return self._new_id("INSERT_BRIDGE", (serial, token, model, channels, site_id, account_id))

    def update_bridge(
        self,
        bridge_id: int,
        *,
        serial: str,
        model: str | None,
        site_id: int,
        account_id: int | None,
    ) -> None:
        self._run("UPDATE_BRIDGE", (serial, model, site_id, account_id, bridge_id))

    def set_bridge_token(
        self, bridge_id: int, token: str, previous: str | None, grace_until: float | None
    ) -> None:
        self._run("SET_BRIDGE_TOKEN", (token, previous, grace_until, bridge_id))

    def remove_bridge(self, bridge_id: int, at: float) -> None:
        self._run("REMOVE_BRIDGE", (at, bridge_id))

    def attach_bridge(self, bridge_id: int, account_id: int) -> None:
        """The bridge and its channels report under ``account_id`` (it waited for it)."""
        self._run("ATTACH_BRIDGE", (account_id, bridge_id))
        self._run("ATTACH_CHANNELS", (account_id, bridge_id))

    def detach_bridge(self, bridge_id: int) -> None:
        """The bridge and its channels report under no account (they wait for one)."""
        self._run("DETACH_BRIDGE", (bridge_id,))
        self._run("DETACH_CHANNELS", (bridge_id,))

    def insert_channels(self, rows: Sequence[tuple[int, int, int | None, int, str]]) -> None:
        """(bridge id, channel, account id, zone, zone type) rows."""
        with self._refusals():
            self.conn.executemany(self.sql.INSERT_CHANNEL, rows)

    def channel(self, bridge_id: int, channel: int) -> RegistryRow:
        return self._row("CHANNEL", (bridge_id, channel))

    def channels(self) -> list[RegistryRow]:
        return self._all("CHANNELS")

    def update_channel(
        self,
        bridge_id: int,
        channel: int,
        *,
        zone: int,
        zone_type: str,
        camera: str | None,
        code: str | None,
        enabled: int | None,
    ) -> None:
        self._run("UPDATE_CHANNEL", (zone, zone_type, camera, code, enabled, bridge_id, channel))

    def detach_channels(self, bridge_id: int) -> None:
        self._run("DETACH_CHANNELS", (bridge_id,))

    def set_channels_account(self, bridge_id: int, account_id: int | None) -> None:
        self._run("BRIDGE_CHANNELS_ACCOUNT", (account_id, bridge_id))

    def shift_bridge_zones(self, bridge_id: int, first_zone: int) -> None:
        self._run("SHIFT_BRIDGE_ZONES", (first_zone, bridge_id))

    def bridge_zones(self, bridge_id: int) -> list[RegistryRow]:
        return self._all("BRIDGE_ZONES", (bridge_id,))

    def delete_bridge_channels(self, bridge_id: int) -> None:
        self._run("DELETE_BRIDGE_CHANNELS", (bridge_id,))

    def zone_holders(self, account_id: int) -> list[RegistryRow]:
        return self._all("ZONE_HOLDERS", (account_id,))

    def zone_holders_of_bridge(self, bridge_id: int) -> list[RegistryRow]:
        return self._all("ZONE_HOLDERS_OF_BRIDGE", (bridge_id,))
