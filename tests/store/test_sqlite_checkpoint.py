"""SQLite's automatic checkpoint: a journal commit copies the WAL into the store file only once
the WAL holds ``WAL_CHECKPOINT_BYTES`` (32 MiB), not SQLite's default of 1,000 pages, so a busy
receiver pays the checkpoint's copy and two flushes inside a commit eight times less often.

Observed on a real file: the ``-wal`` file grows past 1,000 pages (a checkpoint restarts it from
its beginning, so it would stop growing near 1,000 pages), and every connection of the store
reports the threshold."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.store.interface import JournalWrite
from receiver.store.sqlite import WAL_CHECKPOINT_BYTES, connect
from receiver.store.sqlite_store import SqliteStore

_WAL_HEADER = 32
_FRAME_HEADER = 24


def _signal(n: int) -> Signal:
    when = datetime.now(UTC)
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=Source.DC09,
        account=f"{n % 997:04d}",
        effective_account=f"{n % 997:04d}",
        token="ADM-CID",
        sequence=f"{n % 10_000:04d}",
        cid=ContactIdView("E", "130", "01", f"{n % 999:03d}"),
        raw=b"\nraw %d\r" % n,
    )


def _wal_pages(path: Path, page_size: int) -> int:
    wal = Path(f"{path}-wal")
    size = wal.stat().st_size if wal.exists() else 0
    return max(0, size - _WAL_HEADER) // (page_size + _FRAME_HEADER)


def test_the_journal_commits_past_1000_wal_pages_without_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite3"
    store = SqliteStore(path)
    try:
        store.open()
        page_size = store._run(lambda conn: int(conn.execute("PRAGMA page_size").fetchone()[0]))
        n = 0
        for _ in range(200):  # bounded: about 20 batches reach 1,500 pages
            if _wal_pages(path, page_size) > 1_500:
                break
            store.append([JournalWrite(signals=[_signal(n + i) for i in range(50)])])
            n += 50
        # The default threshold would have restarted the WAL near 1,000 pages.
        assert _wal_pages(path, page_size) > 1_500
        assert 1_500 * page_size < WAL_CHECKPOINT_BYTES
        with sqlite3.connect(path) as reader:
            assert reader.execute("SELECT count(*) FROM signals").fetchone()[0] == n
    finally:
        store.close()


def test_every_store_connection_checkpoints_at_the_threshold(tmp_path: Path) -> None:
    conn = connect(tmp_path / "r.sqlite3")
    try:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        pages = int(conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        assert pages == WAL_CHECKPOINT_BYTES // page_size
    finally:
        conn.close()
