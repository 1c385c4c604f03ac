"""A PostgreSQL connection that runs named statements the way the SQLite modules do.

The registry and the console keep their SQL in one module per backend (the same names,
``?`` placeholders for SQLite, ``%s`` for PostgreSQL) and run it on a connection with
``execute``/``executemany``, rows read by column name and explicit ``BEGIN``/``COMMIT``
statements. This wraps one autocommit psycopg connection to offer exactly that, so the service
code is the same on both; it adds nothing else (no retries: a failed call raises psycopg's
error, which the caller's SQL module names).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq
from psycopg.rows import DictRow

from receiver.store.postgres.schema import PgConnection, connect


class StatementConnection:
    """One PostgreSQL connection (autocommit; transactions opened by explicit statements)."""

    def __init__(self, conn: PgConnection) -> None:
        self.raw = conn

    @classmethod
    def open(cls, url: str) -> StatementConnection:
        """Connect (migrating the schema if needed)."""
        return cls(connect(url))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> psycopg.Cursor[DictRow]:
        # Bytes: a statement without parameters is sent as is (several statements allowed).
        if not params:
            return self.raw.execute(sql.encode())
        return self.raw.execute(sql.encode(), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(sql.encode(), list(rows))

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()
