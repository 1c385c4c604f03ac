"""Inline commits: the journal commits on the loop's thread while SQLite's write lock is free,
hands the batch to its worker thread when another writer holds the lock, and stops committing
inline for a while after one inline commit blocked the loop too long."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
import trio

from receiver import journal as journal_module
from receiver.journal import Journal
from receiver.store.interface import JournalWrite
from receiver.store.sqlite_store import SqliteStore
from tests.receiver.test_journal import make_signal


def _stored_ids(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute("SELECT id FROM signals ORDER BY seq")]


def _counts(journal: Journal) -> tuple[int, int, int]:
    values = journal.counters.values
    return (
        values.get("journal_inline_commits", 0),
        values.get("journal_inline_busy", 0),
        values.get("journal_inline_paused", 0),
    )


async def test_a_free_lock_commits_inline_and_the_row_is_durable_when_append_returns(
    tmp_path: Path,
) -> None:
    path = tmp_path / "receiver.sqlite3"
    journal = Journal(SqliteStore(path), commit_inline=True)
    signal = make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        result = await journal.append([signal])
        assert _stored_ids(path) == [signal.id]  # another connection sees it at once
        journal.close()
    assert result.stored == (signal,)
    assert _counts(journal) == (1, 0, 0)


async def test_switched_off_it_always_commits_in_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "receiver.sqlite3"
    journal = Journal(SqliteStore(path), commit_inline=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append([make_signal()])
        journal.close()
    assert _counts(journal) == (0, 0, 0)
    assert len(_stored_ids(path)) == 1


async def test_a_held_lock_sends_the_batch_to_the_thread_which_waits_for_it(
    tmp_path: Path,
) -> None:
    """Another process's writer (here a second connection) holds the lock: the inline try
    gives up at once (the loop never waits), the thread waits, and the append returns once the
    other writer has committed and ours has."""
    path = tmp_path / "receiver.sqlite3"
    journal = Journal(SqliteStore(path), commit_inline=True)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    signal = make_signal()
    released = threading.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        other.execute("BEGIN IMMEDIATE")

        def release_later() -> None:
            released.wait(0.3)
            other.execute("COMMIT")

        thread = threading.Thread(target=release_later)
        thread.start()
        ticks = 0

        async def tick() -> None:  # the loop stays free while the thread waits
            nonlocal ticks
            while True:
                ticks += 1
                await trio.sleep(0.01)

        nursery.start_soon(tick)
        result = await journal.append([signal])
        thread.join()
        nursery.cancel_scope.cancel()
    other.close()
    assert result.stored == (signal,)
    assert _stored_ids(path) == [signal.id]
    assert _counts(journal) == (0, 1, 0)
    assert ticks >= 10


def test_the_store_writes_nothing_when_its_lock_is_held(tmp_path: Path) -> None:
    path = tmp_path / "receiver.sqlite3"
    store = SqliteStore(path)
    store.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    write = JournalWrite(signals=(make_signal(),))
    assert store.append_now([write]) is None
    other.execute("COMMIT")
    outcome = store.append_now([write])
    assert outcome is not None
    assert len(outcome[0].stored) == 1
    other.close()
    store.close()
    assert len(_stored_ids(path)) == 1


async def test_a_slow_inline_commit_pauses_inline_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An inline commit slower than INLINE_SLOW (a disk in trouble) sends the next commits to
    the thread for INLINE_PAUSE seconds, so the loop is not blocked commit after commit."""
    monkeypatch.setattr(journal_module, "INLINE_SLOW", -1.0)  # every inline commit is "slow"
    path = tmp_path / "receiver.sqlite3"
    journal = Journal(SqliteStore(path), commit_inline=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        for n in range(3):
            await journal.append([make_signal(str(1000 + n))])
        journal.close()
    assert _counts(journal) == (1, 0, 1)
    assert len(_stored_ids(path)) == 3
