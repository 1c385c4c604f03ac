"""The console's users and their API tokens, with the audit trail, as ``receiver users`` uses
them: one typed method per read or write, no SQL in the caller.

Rules:
- A store's ``console()`` gives them on a connection of their own (the caller closes them).
- The statements are the backend's console SQL module's (``receiver.store.console_sql`` or
  ``receiver.store.postgres.console_sql``: the same names); each write is one transaction
  with its audit row, made as ``by``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol

from receiver.store.console_sql import StatementConnection


class ConsoleConnection(StatementConnection, Protocol):
    def close(self) -> None: ...


class SqlConsoleTables:
    """``receiver.store.interface.ConsoleTables`` on either backend's connection."""

    def __init__(self, conn: ConsoleConnection, sql: ModuleType) -> None:
        self.conn = conn
        self.sql = sql

    def close(self) -> None:
        self.conn.close()

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

    def users(self) -> list[dict[str, Any]]:
        """Every user (id, name, role, created_us, disabled), by name."""
        rows: list[dict[str, Any]] = self.sql.users(self.conn)
        return rows

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
