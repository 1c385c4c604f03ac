"""The console's tables as ``receiver users`` and the running console use them: users, API
tokens and sessions with the audit trail, and what the pages, the API and ``/metrics`` read
(journal rows, manual acknowledgements, links, the registry, the bridge report); one typed
method per read or write, no SQL in the caller.

Rules:
- A store's ``console()`` gives them on a connection of their own (the caller closes them).
- The statements are the backend's console SQL module's (``receiver.store.console_sql`` or
  ``receiver.store.postgres.console_sql``: the same names); each write is one transaction
  with its audit row, made as ``by``. ``registry()`` is the registry's tables on the same
  connection, ``bridge_report_rows`` the backend's bridge report read.
- :func:`console_statements` is the backend's statements module for ``[store]``, for the
  console's writes that go through the journal's writer on SQLite (``JournalWrite.console``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

from receiver.store import console_sql as sqlite_console_sql
from receiver.store.console_sql import (
    Credentials,
    Session,
    SignalFilter,
    Statement,
    User,
)
from receiver.store.registry_tables import SqlRegistryTables

if TYPE_CHECKING:
    from receiver.bridge_state import BridgeReportRead
    from receiver.config import StoreConfig
    from receiver.registry.backends import RegistryConnection
    from receiver.store.interface import RegistryTables


def console_statements(config: StoreConfig) -> ModuleType:
    """The console's SQL module (statements with the same names) for ``[store]``'s backend."""
    if config.url:
        from receiver.store.postgres import console_sql  # noqa: PLC0415 (psycopg)

        return console_sql
    return sqlite_console_sql


class SqlConsoleTables:
    """``receiver.store.interface.ConsoleTables`` on either backend's connection."""

    def __init__(
        self,
        conn: RegistryConnection,
        sql: ModuleType,
        *,
        registry_sql: ModuleType,
        bridge_report_sql: ModuleType,
    ) -> None:
        self.conn = conn
        self.sql = sql
        self._registry = SqlRegistryTables(conn, registry_sql)
        self._bridge_report_sql = bridge_report_sql

    def close(self) -> None:
        self.conn.close()

    # -- writes ----------------------------------------------------------------------------

    def commit(self, statements: Sequence[Statement]) -> None:
        """``statements`` (the backend's) in one transaction of their own, all or none."""
        self.sql.commit(self.conn, statements)

    def save_user(self, name: str, role: str, password_hash: str, at_us: int, by: str) -> None:
        """Add the user ``name``, or reset its role and password (enabled again); either way
        the sessions opened under the old ones end."""
        sql = self.sql
        sql.commit(
            self.conn,
            [
                (sql.INSERT_USER, (name, role, password_hash, at_us)),
                (sql.DELETE_USER_SESSIONS, (name,)),
                sql.audit_statement(at_us, by, "user_add", name, {"role": role}),
            ],
        )

    def add_api_token(
        self, name: str, token_hash: str, label: str | None, at_us: int, by: str
    ) -> bool:
        """Give the user ``name`` an API token (stored as its hash); false: no such user."""
        sql = self.sql
        found = sql.user_by_name(self.conn, name)
        if found is None:
            return False
        sql.commit(
            self.conn,
            [
                (sql.ADD_API_ACCESS, (token_hash, found.user.id, label, at_us)),
                sql.audit_statement(at_us, by, "token_add", name, {"label": label}),
            ],
        )
        return True

    # -- users, sessions, tokens, audit -----------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Every user (id, name, role, created_us, disabled), by name."""
        rows: list[dict[str, Any]] = self.sql.users(self.conn)
        return rows

    def user_by_name(self, name: str) -> Credentials | None:
        found: Credentials | None = self.sql.user_by_name(self.conn, name)
        return found

    def session(self, token_hash: str) -> Session | None:
        found: Session | None = self.sql.session(self.conn, token_hash)
        return found

    def token_user(self, token_hash: str) -> User | None:
        found: User | None = self.sql.token_user(self.conn, token_hash)
        return found

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The audit trail, newest first (``detail`` decoded)."""
        rows: list[dict[str, Any]] = self.sql.audit(self.conn, limit)
        return rows

    # -- the journal and manual acknowledgements ---------------------------------------------

    def signal_rows(self, query: SignalFilter) -> list[Mapping[str, Any]]:
        """Journal rows matching ``query``, newest first."""
        rows: list[Mapping[str, Any]] = self.sql.signal_rows(self.conn, query)
        return rows

    def signal_row(self, signal_id: str) -> Mapping[str, Any] | None:
        row: Mapping[str, Any] | None = self.sql.signal_row(self.conn, signal_id)
        return row

    def manual_ack(self, signal_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.sql.manual_ack(self.conn, signal_id)
        return found

    def manual_acks(self, signal_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self.sql.manual_acks(self.conn, signal_ids)
        return found

    def waiting_alarms(self, cursor: int, limit: int) -> list[Mapping[str, Any]]:
        """Alarms after ``cursor`` (not suppressed), oldest first, with any manual ack."""
        rows: list[Mapping[str, Any]] = self.sql.waiting_alarms(self.conn, cursor, limit)
        return rows

    def recent_manual_acks(self, limit: int) -> list[Mapping[str, Any]]:
        """Signals handled by hand, newest first, with the acknowledgement."""
        rows: list[Mapping[str, Any]] = self.sql.recent_manual_acks(self.conn, limit)
        return rows

    def max_seq(self) -> int:
        """The journal's last position (0: empty)."""
        return int(self.sql.max_seq(self.conn))

    # -- links, registry, health -------------------------------------------------------------

    def open_troubles(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.sql.open_troubles(self.conn)
        return rows

    def links(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.sql.links(self.conn)
        return rows

    def registry_size(self) -> tuple[int, int]:
        """(accounts, bridges) in the registry."""
        accounts, bridges = self.sql.registry_size(self.conn)
        return int(accounts), int(bridges)

    def registry(self) -> RegistryTables:
        """The registry's tables on this connection (closed with it)."""
        return self._registry

    def bridge_report_rows(self, dealer: str | None, site: str | None) -> BridgeReportRead:
        """What the bridge report is built from (``receiver.bridge_state.bridge_report_rows``)."""
        read: BridgeReportRead = self._bridge_report_sql.read(self.conn, dealer=dealer, site=site)
        return read

    def alive(self) -> bool:
        return bool(self.sql.alive(self.conn))
