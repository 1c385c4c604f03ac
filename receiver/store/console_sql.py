"""Named SQL for the operator console (tables in ``migrations/0008_console.sql``).

Rules: reads are functions over a connection (run them in a worker thread); writes are
``(sql, params)`` statements, so the service sends them through the journal's one writer
(``Journal.append([], statements=...)``) and the CLI runs them in its own transaction
(:func:`commit`). Only constants and placeholders reach SQLite, never text from a request.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Sequence
from typing import Any, Protocol

import attrs

from receiver.store import history_sql

Statement = tuple[str, tuple[Any, ...]]


class StatementConnection(Protocol):
    """What :func:`commit` needs of a connection: a ``sqlite3.Connection``, or PostgreSQL's
    ``receiver.store.postgres.statements.StatementConnection``."""

    def execute(self, sql: str, params: Any = ..., /) -> Any: ...

    @property
    def in_transaction(self) -> bool: ...


# One transaction per change with its audit row (the CLI's; the service's go through its writer).
BEGIN_WRITE = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

INSERT_USER = (
    "INSERT INTO users (name, role, password_hash, created_us) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
    "password_hash = excluded.password_hash, disabled = 0"
)
USER_BY_NAME = "SELECT id, name, role, password_hash, disabled FROM users WHERE name = ?"
USERS = "SELECT id, name, role, created_us, disabled FROM users ORDER BY name"
INSERT_SESSION = (
    "INSERT INTO console_sessions (token_hash, user_id, csrf, created_us, expires_us) "
    "VALUES (?, ?, ?, ?, ?)"
)
DELETE_SESSION = "DELETE FROM console_sessions WHERE token_hash = ?"
DELETE_USER_SESSIONS = (
    "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM users WHERE name = ?)"
)
DELETE_EXPIRED_SESSIONS = "DELETE FROM console_sessions WHERE expires_us < ?"
SESSION = """
SELECT u.id, u.name, u.role, s.csrf, s.expires_us
FROM console_sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = ? AND u.disabled = 0
"""
ADD_API_ACCESS = (
    "INSERT INTO api_tokens (token_hash, user_id, label, created_us) VALUES (?, ?, ?, ?)"
)
API_ACCESS_USER = """
SELECT u.id, u.name, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = ? AND u.disabled = 0
"""
INSERT_AUDIT = "INSERT INTO audit (at_us, user, action, subject, detail) VALUES (?, ?, ?, ?, ?)"
AUDIT = "SELECT at_us, user, action, subject, detail FROM audit ORDER BY id DESC LIMIT ?"
INSERT_MANUAL_ACK = (
    "INSERT INTO manual_acks (signal_id, user, acked_us, outputs) VALUES (?, ?, ?, ?)"
)
MANUAL_ACK = "SELECT signal_id, user, acked_us, outputs FROM manual_acks WHERE signal_id = ?"
SIGNAL_BY_ID = "SELECT * FROM signals WHERE id = ?"
OPEN_TROUBLES = "SELECT link, last_seen_us FROM links WHERE trouble_open = 1 ORDER BY link"
LINKS = "SELECT link, last_seen_us, trouble_open FROM links ORDER BY link"
MAX_SEQ = "SELECT coalesce(max(seq), 0) FROM signals"
ALIVE = "SELECT 1"
# /metrics: how many accounts and bridges the registry holds.
REGISTRY_SIZE = (
    "SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM bridges) AS bridges"
)


@attrs.frozen
class User:
    id: int
    name: str
    role: str


@attrs.frozen
class Credentials:
    user: User
    password_hash: str
    disabled: bool


@attrs.frozen
class Session:
    user: User
    csrf: str
    expires_us: int


def user_by_name(conn: sqlite3.Connection, name: str) -> Credentials | None:
    row = conn.execute(USER_BY_NAME, (name,)).fetchone()
    if row is None:
        return None
    return Credentials(
        User(int(row["id"]), row["name"], row["role"]), row["password_hash"], bool(row["disabled"])
    )


def users(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(USERS)]


def session(conn: sqlite3.Connection, token_hash: str) -> Session | None:
    row = conn.execute(SESSION, (token_hash,)).fetchone()
    if row is None:
        return None
    user = User(int(row["id"]), row["name"], row["role"])
    return Session(user, row["csrf"], int(row["expires_us"]))


def token_user(conn: sqlite3.Connection, token_hash: str) -> User | None:
    row = conn.execute(API_ACCESS_USER, (token_hash,)).fetchone()
    return None if row is None else User(int(row["id"]), row["name"], row["role"])


def audit_statement(
    at_us: int, user: str, action: str, subject: str | None, detail: dict[str, Any]
) -> Statement:
    return INSERT_AUDIT, (at_us, user, action, subject, json.dumps(detail, sort_keys=True))


def audit(conn: sqlite3.Connection, limit: int = 100) -> list[dict[str, Any]]:
    rows = []
    for row in conn.execute(AUDIT, (limit,)):
        entry = dict(row)
        entry["detail"] = json.loads(entry["detail"]) if entry["detail"] else {}
        rows.append(entry)
    return rows


@attrs.frozen
class SignalFilter:
    """What the live list and ``GET /api/v1/signals`` filter on (all optional)."""

    station: str | None = None
    account: str | None = None
    code: str | None = None
    category: str | None = None
    flags: tuple[str, ...] = ()
    after_seq: int = 0
    limit: int = 50


def signal_rows(conn: sqlite3.Connection, query: SignalFilter) -> list[sqlite3.Row]:
    """Journal rows, newest first (``after_seq``: only those committed after it)."""
    where: list[str] = []
    params: list[Any] = []
    if query.station:
        where.append("station = ?")
        params.append(query.station)
    table = "signals"
    if query.account:
        table, condition, values = history_sql.console_account_condition(
            _scalar(conn),
            history_sql.SQLITE,
            query.account,
            after_seq=query.after_seq,
            limit=query.limit,
        )
        where.append(condition)
        params += values
    if query.code:
        where.append("(code = ? OR sia_code = ?)")
        params += [query.code.strip().upper()] * 2
    if query.category:
        where.append("category = ?")
        params.append(query.category)
    for flag in query.flags:
        # flags is a sorted comma-separated list: match one whole item.
        where.append("(',' || flags || ',') LIKE ?")
        params.append(f"%,{flag},%")
    if query.after_seq:
        where.append("seq > ?")
        params.append(query.after_seq)
    sql = f"SELECT * FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT ?"
    params.append(query.limit)
    return list(conn.execute(sql, params))


def _scalar(conn: sqlite3.Connection) -> history_sql.Scalar:
    def scalar(sql: str, params: Sequence[Any]) -> Any:
        row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    return scalar


def signal_row(conn: sqlite3.Connection, signal_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = conn.execute(SIGNAL_BY_ID, (signal_id,)).fetchone()
    return row


def manual_ack(conn: sqlite3.Connection, signal_id: str) -> dict[str, Any] | None:
    row = conn.execute(MANUAL_ACK, (signal_id,)).fetchone()
    return None if row is None else dict(row)


def manual_acks(conn: sqlite3.Connection, signal_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(signal_ids), 500):
        chunk = list(signal_ids[start : start + 500])
        marks = ", ".join("?" * len(chunk))
        for row in conn.execute(
            f"SELECT signal_id, user, acked_us, outputs FROM manual_acks "
            f"WHERE signal_id IN ({marks})",
            chunk,
        ):
            found[row["signal_id"]] = dict(row)
    return found


def waiting_alarms(conn: sqlite3.Connection, cursor: int, limit: int) -> list[sqlite3.Row]:
    """Alarm-category signals an output has not yet delivered (after its cursor), oldest
    first, with who acknowledged each by hand (NULL: nobody yet)."""
    return list(
        conn.execute(
            "SELECT s.*, m.user AS manual_user, m.acked_us AS manual_acked_us "
            "FROM signals s LEFT JOIN manual_acks m ON m.signal_id = s.id "
            "WHERE s.seq > ? AND s.category = 'alarm' AND (',' || s.flags || ',') "
            "NOT LIKE '%,suppressed,%' ORDER BY s.seq LIMIT ?",
            (cursor, limit),
        )
    )


def recent_manual_acks(conn: sqlite3.Connection, limit: int) -> list[sqlite3.Row]:
    """Signals handled by hand, newest first, with the acknowledgement."""
    return list(
        conn.execute(
            "SELECT s.*, m.user AS manual_user, m.acked_us AS manual_acked_us, "
            "m.outputs AS manual_outputs "
            "FROM manual_acks m JOIN signals s ON s.id = m.signal_id "
            "ORDER BY m.acked_us DESC LIMIT ?",
            (limit,),
        )
    )


def output_cursor(conn: sqlite3.Connection, name: str) -> int | None:
    row = conn.execute("SELECT cursor FROM outputs WHERE name = ?", (name,)).fetchone()
    return None if row is None else int(row[0])


def open_troubles(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(OPEN_TROUBLES)]


def links(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(LINKS)]


def max_seq(conn: sqlite3.Connection) -> int:
    return int(conn.execute(MAX_SEQ).fetchone()[0])


def alive(conn: sqlite3.Connection) -> bool:
    return conn.execute(ALIVE).fetchone() is not None


def registry_size(conn: sqlite3.Connection) -> tuple[int, int]:
    """(accounts, bridges) in the registry."""
    row = conn.execute(REGISTRY_SIZE).fetchone()
    return int(row["accounts"]), int(row["bridges"])


def commit(conn: StatementConnection, statements: Sequence[Statement]) -> None:
    """``statements`` in one transaction of their own: all of them are committed, or none."""
    commit_with(conn, statements, BEGIN_WRITE)


def commit_with(conn: StatementConnection, statements: Sequence[Statement], begin: str) -> None:
    """:func:`commit` with the backend's own ``BEGIN``."""
    conn.execute(begin)
    try:
        for statement, params in statements:
            conn.execute(statement, params)
        conn.execute(COMMIT)
    except BaseException:
        # The first failure is what the caller must see; a rollback on a lost connection
        # fails too, and the server has rolled back already.
        with contextlib.suppress(Exception):
            if conn.in_transaction:
                conn.execute(ROLLBACK)
        raise
