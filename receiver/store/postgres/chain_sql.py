"""What ``receiver journal verify`` reads from PostgreSQL (``receiver/journal_chain.py``
verifies), inside one read-only repeatable-read transaction: the journal streams through a
server-side cursor, so a journal of years is never held in memory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from psycopg.rows import tuple_row

from receiver.store.postgres.schema import PgConnection
from receiver.store.signal_rows import SIGNAL_COLUMNS

_ROWS = f"SELECT seq, node, chain_hash, {', '.join(SIGNAL_COLUMNS)} FROM signals"
FIRST_SINCE = "SELECT min(seq) AS seq FROM signals WHERE received_us >= %s"
BEFORE = """
SELECT seq, chain_hash FROM signals WHERE node = %s AND seq < %s ORDER BY seq DESC LIMIT 1
"""
_FETCH = 2000  # rows per round trip of the server-side cursor


class PgChainReader:
    def __init__(self, conn: PgConnection) -> None:
        self.conn = conn

    def anchors(self) -> Iterator[tuple[str, int, bytes | None]]:
        for row in self.conn.execute("SELECT node, anchor_seq, anchor_hash FROM journal_chain"):
            anchor = row["anchor_hash"]
            yield (
                str(row["node"]),
                int(row["anchor_seq"]),
                bytes(anchor) if anchor is not None else None,
            )

    def rows(self, since_us: int | None) -> Iterator[Sequence[Any]]:
        sql = _ROWS + " ORDER BY seq"
        params: tuple[Any, ...] = ()
        if since_us is not None:
            found = self.conn.execute(FIRST_SINCE, (since_us,)).fetchone()
            first = found["seq"] if found is not None else None
            sql = _ROWS + " WHERE seq >= %s ORDER BY seq"
            params = (first if first is not None else 1 << 62,)
        with self.conn.cursor(name="journal_verify", row_factory=tuple_row) as cursor:
            cursor.itersize = _FETCH
            cursor.execute(sql, params)
            yield from cursor

    def before(self, node: str, seq: int) -> tuple[int, bytes | None] | None:
        row = self.conn.execute(BEFORE, (node, seq)).fetchone()
        if row is None:
            return None
        chain_hash = row["chain_hash"]
        return int(row["seq"]), bytes(chain_hash) if chain_hash is not None else None
