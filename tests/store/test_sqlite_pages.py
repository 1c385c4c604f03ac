"""The page size of a store file, as it is on disk: a new store file gets the receiver's page size
before its first table (SQLite cannot change it later in WAL mode without a VACUUM), and an
existing file made with another page size keeps it, opens, migrates and appends as before."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store.interface import JournalWrite
from receiver.store.sqlite import SCHEMA_VERSION, migrations
from receiver.store.sqlite_store import SqliteStore
from tests.receiver.test_journal import make_signal


def page_size_on_disk(path: Path) -> int:
    """The page size in the file's header (bytes 16-17, big-endian; 1 means 65536)."""
    size = int.from_bytes(path.read_bytes()[16:18], "big")
    return 65536 if size == 1 else size


def test_a_new_store_file_has_the_receivers_page_size(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    store = SqliteStore(path)
    store.append([JournalWrite(signals=[make_signal()], keys=["k1"])])
    store.close()
    assert page_size_on_disk(path) == 4096


def test_an_existing_file_with_another_page_size_keeps_it_migrates_and_appends(
    tmp_path: Path,
) -> None:
    """A file an older receiver (or another SQLite build) made with 1024-byte pages, at the
    schema version before the newest, still opens, migrates and appends, and keeps its pages."""
    path = tmp_path / "journal.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute("PRAGMA page_size = 1024")
    old.execute("PRAGMA journal_mode = WAL")
    older = [m for m in migrations() if m[0] < SCHEMA_VERSION]
    for version, _, sql in older:
        old.executescript(sql)
        old.execute(f"PRAGMA user_version = {version}")
    old.close()
    assert page_size_on_disk(path) == 1024

    store = SqliteStore(path)
    signals = [make_signal(account=f"{1000 + n}") for n in range(30)]
    outcomes = store.append([JournalWrite(signals=signals, keys=[f"k{n}" for n in range(30)])])
    assert [seq for seq, _ in outcomes[0].stored] == list(range(1, 31))
    assert store._run(lambda conn: conn.execute("PRAGMA user_version").fetchone()[0]) == (
        SCHEMA_VERSION
    )
    assert [signal.id for _, signal in store.read_after(0, 100)] == [s.id for s in signals]
    assert store.verify_journal().verified == 30
    store.close()
    assert page_size_on_disk(path) == 1024
