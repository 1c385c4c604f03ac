"""PostgreSQL connections and numbered migrations (``migrations/NNNN_name.sql``).

Rules: every connection runs with ``synchronous_commit = on`` (a commit is durable on the
server before the call returns, as SQLite ``synchronous=FULL``). Migrations apply in order,
each in its own transaction under an advisory lock, so several nodes starting on a fresh
database at once do not both migrate it; ``store_migrations`` records what was applied.
"""

from __future__ import annotations

import re
from importlib import resources

import psycopg
from psycopg.rows import DictRow, dict_row

from protocols.errors import InvalidInputError, StartupError

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# pg_advisory_xact_lock keys (one bigint namespace per database).
MIGRATION_LOCK = 0x5245_4301  # "REC" 1
JOURNAL_LOCK = 0x5245_4302  # "REC" 2: appenders serialize, so seq order is commit order

PgConnection = psycopg.Connection[DictRow]


class PostgresOpenError(StartupError):
    """The PostgreSQL store cannot be reached, opened or migrated."""


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every PostgreSQL migration shipped with the package, in order."""
    found = []
    folder = resources.files("receiver.store.postgres").joinpath("migrations")
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    return found


SCHEMA_VERSION = max((v for v, _, _ in migrations()), default=0)


def schema_version(conn: PgConnection) -> int:
    row = conn.execute("SELECT to_regclass('store_migrations') IS NOT NULL AS present").fetchone()
    if row is None or not row["present"]:
        return 0
    found = conn.execute("SELECT coalesce(max(version), 0) AS v FROM store_migrations").fetchone()
    return int(found["v"]) if found else 0


def migrate(conn: PgConnection) -> int:
    """Apply pending migrations; return the resulting version."""
    for version, name, sql in migrations():
        if schema_version(conn) >= version:
            continue
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS store_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            if schema_version(conn) < version:  # another node may have won the lock first
                conn.execute(sql.encode())  # no parameters: several statements in one call
                conn.execute(
                    "INSERT INTO store_migrations (version, name) VALUES (%s, %s)",
                    (version, name),
                )
    return schema_version(conn)


def connect(
    url: str, *, migrate_schema: bool = True, application_name: str = "receiver"
) -> PgConnection:
    """Open an autocommit connection (callers open transactions with ``conn.transaction()``),
    with synchronous commit, the schema migrated unless ``migrate_schema`` is false.
    ``application_name`` is what ``pg_stat_activity`` shows for it."""
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            row_factory=dict_row,
            connect_timeout=10,
            options="-c synchronous_commit=on",
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise PostgresOpenError(
            f"cannot connect to the PostgreSQL store {_safe(url)}: {_first_line(exc)}"
        ) from None
    try:
        _check_version(conn, url)
        if migrate_schema:
            migrate(conn)
    except psycopg.Error as exc:
        conn.close()
        raise PostgresOpenError(
            f"cannot migrate the PostgreSQL store {_safe(url)}: {_first_line(exc)}"
        ) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(conn: PgConnection, url: str) -> None:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise InvalidInputError(
            f"PostgreSQL store {_safe(url)} has schema version {version}, newer than this "
            f"program's {SCHEMA_VERSION}; upgrade the receiver"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _safe(url: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)
