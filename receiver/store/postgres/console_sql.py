"""Named SQL for the operator console on PostgreSQL (tables in ``migrations/0010_console.sql``).

The same names and functions as ``receiver.store.console_sql`` (SQLite), with ``%s``
placeholders, run on a :class:`StatementConnection`: reads are functions over a connection
(run them in a worker thread); writes are ``(sql, params)`` statements committed in one
transaction with their audit row. ``"user"`` is quoted (a reserved word in PostgreSQL). Only
constants and placeholders reach the server, never text from a request.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from receiver.store import history_sql
from receiver.store.console_sql import (
    Credentials,
    Session,
    SignalFilter,
    Statement,
    User,
    commit_with,
)
from receiver.store.postgres.statements import StatementConnection

__all__ = ["Credentials", "Session", "SignalFilter", "Statement", "User"]

# One transaction per change with its audit row (the CLI's; the service's go through its writer).
BEGIN_WRITE = "BEGIN"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

INSERT_USER = (
    "INSERT INTO users (name, role, password_hash, created_us) VALUES (%s, %s, %s, %s) "
    "ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
    "password_hash = excluded.password_hash, disabled = 0"
)
USER_BY_NAME = "SELECT id, name, role, password_hash, disabled FROM users WHERE name = %s"
USERS = 'SELECT id, name, role, created_us, disabled FROM users ORDER BY name COLLATE "C"'
INSERT_SESSION = (
    "INSERT INTO console_sessions (token_hash, user_id, csrf, created_us, expires_us) "
    "VALUES (%s, %s, %s, %s, %s)"
)
DELETE_SESSION = "DELETE FROM console_sessions WHERE token_hash = %s"
DELETE_USER_SESSIONS = (
    "DELETE FROM console_sessions WHERE user_id = (SELECT id FROM users WHERE name = %s)"
)
DELETE_EXPIRED_SESSIONS = "DELETE FROM console_sessions WHERE expires_us < %s"
SESSION = """
SELECT u.id, u.name, u.role, s.csrf, s.expires_us
FROM console_sessions s JOIN users u ON u.id = s.user_id
WHERE s.token_hash = %s AND u.disabled = 0
"""
ADD_API_ACCESS = (
    "INSERT INTO api_tokens (token_hash, user_id, label, created_us) VALUES (%s, %s, %s, %s)"
)
API_ACCESS_USER = """
SELECT u.id, u.name, u.role FROM api_tokens t JOIN users u ON u.id = t.user_id
WHERE t.token_hash = %s AND u.disabled = 0
"""
INSERT_AUDIT = (
    'INSERT INTO audit (at_us, "user", action, subject, detail) VALUES (%s, %s, %s, %s, %s)'
)
AUDIT = 'SELECT at_us, "user", action, subject, detail FROM audit ORDER BY id DESC LIMIT %s'
INSERT_MANUAL_ACK = (
    'INSERT INTO manual_acks (signal_id, "user", acked_us, outputs) VALUES (%s, %s, %s, %s)'
)
MANUAL_ACK = 'SELECT signal_id, "user", acked_us, outputs FROM manual_acks WHERE signal_id = %s'
MANUAL_ACKS = (
    'SELECT signal_id, "user", acked_us, outputs FROM manual_acks WHERE signal_id = ANY(%s)'
)
SIGNAL_BY_ID = "SELECT * FROM signals WHERE id = %s"
OPEN_TROUBLES = (
    'SELECT link, last_seen_us FROM links WHERE trouble_open = 1 ORDER BY link COLLATE "C"'
)
LINKS = 'SELECT link, last_seen_us, trouble_open FROM links ORDER BY link COLLATE "C"'
MAX_SEQ = "SELECT coalesce(max(seq), 0) AS seq FROM signals"
ALIVE = "SELECT 1 AS alive"
# /metrics: how many accounts and bridges the registry holds.
REGISTRY_SIZE = (
    "SELECT (SELECT count(*) FROM accounts) AS accounts, (SELECT count(*) FROM bridges) AS bridges"
)
# %% is a literal % (the statement has parameters).
WAITING_ALARMS = (
    'SELECT s.*, m."user" AS manual_user, m.acked_us AS manual_acked_us '
    "FROM signals s LEFT JOIN manual_acks m ON m.signal_id = s.id "
    "WHERE s.seq > %s AND s.category = 'alarm' AND (',' || s.flags || ',') "
    "NOT LIKE '%%,suppressed,%%' ORDER BY s.seq LIMIT %s"
)
RECENT_MANUAL_ACKS = (
    'SELECT s.*, m."user" AS manual_user, m.acked_us AS manual_acked_us, '
    "m.outputs AS manual_outputs "
    "FROM manual_acks m JOIN signals s ON s.id = m.signal_id "
    "ORDER BY m.acked_us DESC LIMIT %s"
)
OUTPUT_CURSOR = "SELECT cursor FROM outputs WHERE name = %s"


def user_by_name(conn: StatementConnection, name: str) -> Credentials | None:
    row = conn.execute(USER_BY_NAME, (name,)).fetchone()
    if row is None:
        return None
    return Credentials(
        User(int(row["id"]), row["name"], row["role"]), row["password_hash"], bool(row["disabled"])
    )


def users(conn: StatementConnection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(USERS)]


def session(conn: StatementConnection, token_hash: str) -> Session | None:
    row = conn.execute(SESSION, (token_hash,)).fetchone()
    if row is None:
        return None
    user = User(int(row["id"]), row["name"], row["role"])
    return Session(user, row["csrf"], int(row["expires_us"]))


def token_user(conn: StatementConnection, token_hash: str) -> User | None:
    row = conn.execute(API_ACCESS_USER, (token_hash,)).fetchone()
    return None if row is None else User(int(row["id"]), row["name"], row["role"])


def audit_statement(
    at_us: int, user: str, action: str, subject: str | None, detail: dict[str, Any]
) -> Statement:
    return INSERT_AUDIT, (at_us, user, action, subject, json.dumps(detail, sort_keys=True))


def audit(conn: StatementConnection, limit: int = 100) -> list[dict[str, Any]]:
    rows = []
    for row in conn.execute(AUDIT, (limit,)):
        entry = dict(row)
        entry["detail"] = json.loads(entry["detail"]) if entry["detail"] else {}
        rows.append(entry)
    return rows


def signal_rows(conn: StatementConnection, query: SignalFilter) -> list[dict[str, Any]]:
    """Journal rows, newest first (``after_seq``: only those committed after it)."""
    where: list[str] = []
    params: list[Any] = []
    if query.station:
        where.append("station = %s")
        params.append(query.station)
    table = "signals"
    if query.account:
        table, condition, values = history_sql.console_account_condition(
            _scalar(conn),
            history_sql.POSTGRES,
            query.account,
            after_seq=query.after_seq,
            limit=query.limit,
        )
        where.append(condition.replace("?", "%s"))
        params += values
    if query.code:
        where.append("(code = %s OR sia_code = %s)")
        params += [query.code.strip().upper()] * 2
    if query.category:
        where.append("category = %s")
        params.append(query.category)
    for flag in query.flags:
        # flags is a sorted comma-separated list: match one whole item.
        where.append("(',' || flags || ',') LIKE %s")
        params.append(f"%,{flag},%")
    if query.after_seq:
        where.append("seq > %s")
        params.append(query.after_seq)
    sql = f"SELECT * FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC LIMIT %s"
    params.append(query.limit)
    return list(conn.execute(sql, params))


def _scalar(conn: StatementConnection) -> history_sql.Scalar:
    def scalar(sql: str, params: Sequence[Any]) -> Any:
        row = conn.execute(sql.replace("?", "%s"), params).fetchone()
        return None if row is None else next(iter(row.values()))

    return scalar


def signal_row(conn: StatementConnection, signal_id: str) -> dict[str, Any] | None:
    row: dict[str, Any] | None = conn.execute(SIGNAL_BY_ID, (signal_id,)).fetchone()
    return row


def manual_ack(conn: StatementConnection, signal_id: str) -> dict[str, Any] | None:
    row = conn.execute(MANUAL_ACK, (signal_id,)).fetchone()
    return None if row is None else dict(row)


def manual_acks(conn: StatementConnection, signal_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    return {row["signal_id"]: dict(row) for row in conn.execute(MANUAL_ACKS, (list(signal_ids),))}


def waiting_alarms(conn: StatementConnection, cursor: int, limit: int) -> list[dict[str, Any]]:
    """Alarm-category signals an output has not yet delivered (after its cursor), oldest
    first, with who acknowledged each by hand (NULL: nobody yet)."""
    return list(conn.execute(WAITING_ALARMS, (cursor, limit)))


def recent_manual_acks(conn: StatementConnection, limit: int) -> list[dict[str, Any]]:
    """Signals handled by hand, newest first, with the acknowledgement."""
    return list(conn.execute(RECENT_MANUAL_ACKS, (limit,)))


def output_cursor(conn: StatementConnection, name: str) -> int | None:
    row = conn.execute(OUTPUT_CURSOR, (name,)).fetchone()
    return None if row is None else int(row["cursor"])


def open_troubles(conn: StatementConnection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(OPEN_TROUBLES)]


def links(conn: StatementConnection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(LINKS)]


def max_seq(conn: StatementConnection) -> int:
    row = conn.execute(MAX_SEQ).fetchone()
    return int(row["seq"]) if row else 0


def alive(conn: StatementConnection) -> bool:
    return conn.execute(ALIVE).fetchone() is not None


def registry_size(conn: StatementConnection) -> tuple[int, int]:
    """(accounts, bridges) in the registry."""
    row = conn.execute(REGISTRY_SIZE).fetchone()
    assert row is not None  # one row, always
    return int(row["accounts"]), int(row["bridges"])


def commit(conn: StatementConnection, statements: Sequence[Statement]) -> None:
    """``statements`` in one transaction of their own: all of them are committed, or none."""
    commit_with(conn, statements, BEGIN_WRITE)
