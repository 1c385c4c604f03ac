"""The SQLite side of the journal's hash chain (``receiver/journal_chain.py``): the head the
journal's writer extends (:func:`chain_head`, read under its write lock, inside the append), and
what ``receiver journal verify`` reads: the chain's anchors, the journal rows with their hashes,
the row before a starting point, inside one read transaction (``SqliteStore.read_snapshot``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any

from receiver.journal_chain import GENESIS, NODE
from receiver.store.signal_rows import SIGNAL_COLUMNS

# The hash the node's next row follows: its newest row's, else the anchor retention left.
NEWEST_HASH = "SELECT chain_hash FROM signals WHERE node = ? ORDER BY seq DESC LIMIT 1"
ANCHOR_HASH = "SELECT anchor_hash FROM journal_chain WHERE node = ?"
ANCHORS = "SELECT node, anchor_seq, anchor_hash FROM journal_chain"

_ROWS = f"SELECT seq, node, chain_hash, {', '.join(SIGNAL_COLUMNS)} FROM signals"
FIRST_SINCE = "SELECT min(seq) FROM signals WHERE received_us >= ?"
BEFORE = "SELECT seq, chain_hash FROM signals WHERE node = ? AND seq < ? ORDER BY seq DESC LIMIT 1"


def chain_head(conn: sqlite3.Connection, node: str = NODE) -> bytes:
    """The hash the node's next row follows: its newest row's, else its anchor's, else GENESIS."""
    row = conn.execute(NEWEST_HASH, (node,)).fetchone()
    if row is not None:
        return bytes(row[0]) if row[0] is not None else GENESIS
    anchor = conn.execute(ANCHOR_HASH, (node,)).fetchone()
    return bytes(anchor[0]) if anchor is not None and anchor[0] is not None else GENESIS


class SqliteChainReader:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def anchors(self) -> Iterator[tuple[str, int, bytes | None]]:
        for node, seq, anchor in self.conn.execute(ANCHORS):
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
