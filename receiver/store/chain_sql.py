"""What ``receiver journal verify`` reads from SQLite (``receiver/journal_chain.py`` verifies):
the chain's anchors, the journal rows with their hashes, the row before a starting point. Run
inside one read transaction (``SqliteStore.read_snapshot``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from receiver.store.signal_rows import SIGNAL_COLUMNS

_ROWS = f"SELECT seq, node, chain_hash, {', '.join(SIGNAL_COLUMNS)} FROM signals"
FIRST_SINCE = "SELECT min(seq) FROM signals WHERE received_us >= ?"
BEFORE = "SELECT seq, chain_hash FROM signals WHERE node = ? AND seq < ? ORDER BY seq DESC LIMIT 1"


class SqliteChainReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def anchors(self) -> Iterator[tuple[str, int, bytes | None]]:
        for node, seq, anchor in self.conn.execute(
            "SELECT node, anchor_seq, anchor_hash FROM journal_chain"
        ):
            yield str(node), int(seq), bytes(anchor) if anchor is not None else None

    def rows(self, since_us: int | None) -> Iterator[Sequence[Any]]:
        if since_us is None:
            yield from self.conn.execute(_ROWS + " ORDER BY seq")
            return
        first = self.conn.execute(FIRST_SINCE, (since_us,)).fetchone()[0]
        yield from self.conn.execute(
            _ROWS + " WHERE seq >= ? ORDER BY seq", (first if first is not None else 1 << 62,)
        )

    def before(self, node: str, seq: int) -> tuple[int, bytes | None] | None:
        row = self.conn.execute(BEFORE, (node, seq)).fetchone()
        if row is None:
            return None
        return int(row[0]), bytes(row[1]) if row[1] is not None else None
