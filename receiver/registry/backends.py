"""Which store a registry connection runs on: the connection and the SQL module, and nothing
else.

Rules:
- A store location is a SQLite file path or a ``postgresql://USER@HOST:PORT/DB`` URL
  (``[store] url``). Each backend owns its SQL: ``receiver.store.registry_sql`` (SQLite) and
  ``receiver.store.postgres.registry_sql`` (PostgreSQL) hold the same names; so do
  ``receiver.store.bridge_report_sql`` and ``receiver.store.postgres.bridge_report_sql`` for
  the bridge report. The console reads and writes through the store's ``console()`` tables
  (``receiver.store.console_tables``), not through this module.
- The registry service and the index call the typed methods of
  :class:`~receiver.store.interface.RegistryTables` (``tables_for``): the store's
  ``SqlRegistryTables`` runs the backend's statements on a :class:`RegistryConnection` (a
  ``sqlite3.Connection`` as is, or a PostgreSQL connection wrapped to behave like one,
  ``receiver.store.postgres.statements``). This module is the one place that tells the
  backends apart; the service never does, and never runs a statement.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from receiver.store import bridge_report_sql as sqlite_bridge_report_sql
from receiver.store import registry_sql as sqlite_sql
from receiver.store.interface import RegistryTables
from receiver.store.registry_tables import SqlRegistryTables
from receiver.store.sqlite import connect as sqlite_connect

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class RegistryCursor(Protocol):
    """Rows read by column name (``row["id"]``)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class RegistryConnection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> RegistryCursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> object: ...

    @property
    def in_transaction(self) -> bool: ...

    def close(self) -> None: ...


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def connect(location: str | Path, *, threads: bool = False) -> RegistryConnection:
    """A connection to the store at ``location`` (migrated). ``threads``: it may be used from
    a worker thread other than the one that opened it (one thread at a time)."""
    if is_postgres(location):
        from receiver.store.postgres.statements import StatementConnection  # noqa: PLC0415

        return StatementConnection.open(str(location))
    return sqlite_connect(location, check_same_thread=not threads)


def sql_for(conn: RegistryConnection) -> ModuleType:
    """The registry's SQL module for a connection's backend."""
    if isinstance(conn, _postgres_connection_class()):
        from receiver.store.postgres import registry_sql as postgres_sql  # noqa: PLC0415

        return postgres_sql
    return sqlite_sql


def tables_for(source: RegistryConnection | RegistryTables) -> RegistryTables:
    """The registry's tables on a connection (either backend), or ``source`` itself when it
    already is the registry's tables (a store's, ``MemoryStore.registry()``)."""
    if isinstance(source, RegistryTables):
        return source
    return SqlRegistryTables(source, sql_for(source))


def bridge_report_sql_for(conn: RegistryConnection) -> ModuleType:
    """The bridge report's SQL module (``read``) for a connection's backend."""
    if isinstance(conn, _postgres_connection_class()):
        from receiver.store.postgres import bridge_report_sql  # noqa: PLC0415

        return bridge_report_sql
    return sqlite_bridge_report_sql


def _postgres_connection_class() -> type:
    from receiver.store.postgres.statements import StatementConnection  # noqa: PLC0415

    return StatementConnection
