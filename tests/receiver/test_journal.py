"""The journal: durable before it answers, group commit, duplicates absorbed.

The behaviour tests run on both backends (``backend``: SQLite and PostgreSQL); the writer's own
mechanics (batching, closing, a failed commit) on the in-memory fake of the store.
"""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import pytest
import trio

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver.journal import Journal, JournalError
from receiver.store.interface import JournalWrite
from receiver.store.memory import MemoryStore
from tests.conftest import Backend


def make_signal(account: str = "1234", code: str = "130", when: datetime | None = None) -> Signal:
    now = when or datetime.now(UTC)
    return Signal(
        id=new_signal_id(now),
        received_at=now,
        source=Source.DC09,
        account=account,
        effective_account=account,
        token="ADM-CID",
        sequence="0001",
        cid=ContactIdView("E", code, "01", "005"),
        sia=SiaView("BA", "005", (("ri", "1"),)),
        extended=(("V", "https://video/1"),),
        raw=b"\nraw\r",
    )


async def test_append_is_readable_from_another_connection_when_it_returns(
    backend: Backend,
) -> None:
    """Once append returns, a separate connection sees the row with every field intact."""
    journal = Journal(backend.open())
    signal = make_signal()
    reader = backend.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        result = await journal.append([signal], links=[("account:1", 5)])
        rows = reader.read_after(0, 10)
        links = reader.links()
        journal.close()
    reader.close()
    assert result.stored == (signal,)
    assert [s for _, s in rows] == [signal]
    assert links == {"account:1": (5, False)}


async def test_concurrent_appends_share_batches() -> None:
    """Many concurrent appends are committed in far fewer transactions than signals."""
    store = MemoryStore()
    journal = Journal(store, max_batch=256)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        async with trio.open_nursery() as appenders:
            for i in range(500):
                appenders.start_soon(journal.append, [make_signal(str(1000 + i))])
        journal.close()
    batches = sum(n for k, n in journal.counters.snapshot().items() if k.startswith("batch_le_"))
    assert journal.counters.values["journal_signals_stored"] == 500
    assert batches < 100
    assert store.appends == batches


async def test_retry_with_same_key_is_acked_but_stored_once(backend: Backend) -> None:
    """A retried frame within the window is reported duplicate and the row counts the repeat."""
    journal = Journal(backend.open(duplicate_window=600))
    first = make_signal()
    retry = make_signal(when=first.received_at + timedelta(seconds=5))
    late = make_signal(when=first.received_at + timedelta(seconds=700))
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        r1 = await journal.append([first], keys=["k"])
        r2 = await journal.append([retry], keys=["k"])
        r3 = await journal.append([late], keys=["k"])
        journal.close()
    assert r1.stored == (first,)
    assert r2.is_duplicate
    assert r3.stored == (late,)
    assert backend.sql("SELECT id, repeats FROM signals ORDER BY seq") == [
        (first.id, 1),
        (late.id, 0),
    ]


async def test_duplicates_inside_one_batch_are_stored_once(backend: Backend) -> None:
    """Two copies of a frame arriving together still make one row."""
    journal = Journal(backend.open())
    a, b = make_signal(), make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        results = await journal.append([a, b], keys=["same", "same"])
        journal.close()
    assert results.stored == (a,)
    assert results.duplicates == (b,)
    assert backend.sql("SELECT count(*), sum(repeats) FROM signals") == [(1, 1)]


async def test_dedupe_survives_restart(backend: Backend) -> None:
    """A retry arriving after a receiver restart is still recognised."""
    for expect_dup in (False, True):
        journal = Journal(backend.open())
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            result = await journal.append([make_signal()], keys=["k"])
            journal.close()
        assert result.is_duplicate is expect_dup


async def test_append_after_close_refuses() -> None:
    """Nothing can be appended once the journal is closed: the caller will not ACK."""
    journal = Journal(MemoryStore())
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.close()
    with pytest.raises(JournalError):
        await journal.append([make_signal()])


async def test_failed_commit_answers_with_an_error_not_an_ack(backend: Backend) -> None:
    """When the commit fails (here: a second signal with the same id), append raises."""
    journal = Journal(backend.open())
    signal = make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append([signal])
        with pytest.raises(JournalError):
            await journal.append([signal])
        # The writer keeps going after a failed batch.
        assert (await journal.append([make_signal()])).stored
        journal.close()


async def _append_keyed(journal: Journal, first: int, count: int, when: datetime) -> None:
    for start in range(first, first + count, 250):
        batch = [make_signal(str(i), when=when) for i in range(start, start + 250)]
        await journal.append(batch, keys=[f"key-{i}" for i in range(start, start + 250)])


async def test_dedupe_memory_does_not_grow_with_the_keys_in_the_window(backend: Backend) -> None:
    """Thousands of keys inside the window cost the process no memory: the store holds them
    (defect: ~330 bytes per frame kept in a dict, reloaded at start-up)."""
    journal = Journal(backend.open(duplicate_window=600))
    now = datetime.now(UTC)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        tracemalloc.start()
        try:
            await _append_keyed(journal, 0, 1000, now)  # warm caches (statements, allocator)
            before = tracemalloc.take_snapshot()
            await _append_keyed(journal, 1000, 4000, now)
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        retry = await journal.append([make_signal("1500", when=now)], keys=["key-1500"])
        journal.close()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 4000 * 20, f"{grown} bytes kept for 4000 keys"
    assert retry.is_duplicate


async def test_a_retry_on_another_worker_is_a_duplicate_until_the_window_ends(
    backend: Backend,
) -> None:
    """Two journals on one store (two ingest workers, or two nodes): a retry landing on the
    other one is absorbed; the same key after the window is a new signal, and its retries
    count on it."""
    a = Journal(backend.open(duplicate_window=600))
    b = Journal(backend.open(duplicate_window=600))
    now = datetime.now(UTC)
    old = now - timedelta(seconds=700)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        first = await a.append([make_signal(when=old)], keys=["k"])
        fresh = await b.append([make_signal(when=now)], keys=["k"])
        retry = await a.append([make_signal(when=now + timedelta(seconds=1))], keys=["k"])
        other = await b.append([make_signal(when=now + timedelta(seconds=2))], keys=["k2"])
        a.close()
        b.close()
    assert len(first.stored) == len(fresh.stored) == len(other.stored) == 1
    assert retry.is_duplicate
    assert backend.sql("SELECT dedupe_key, repeats FROM signals ORDER BY seq") == [
        ("k", 0),
        ("k", 1),
        ("k2", 0),
    ]


async def test_a_failing_store_fails_the_appends_of_its_batch_and_the_writer_goes_on() -> None:
    """A commit that raises (a full disk, a lost server) answers every append of that batch
    with an error (no ACK) and counts it; the next batch is committed."""
    store = MemoryStore()
    journal = Journal(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        store.fail_next()
        with pytest.raises(JournalError):
            await journal.append([make_signal()])
        assert (await journal.append([make_signal()])).stored
        journal.close()
    assert journal.counters.values["journal_commit_failed"] == 1
    assert len(store.rows) == 1
    assert store.closed


async def test_state_rides_in_the_signals_transaction() -> None:
    """A cursor update and a bridge state row given with signals commit in the same call."""
    from receiver.store.interface import BridgeStateRow, CursorUpdate  # noqa: PLC0415

    store = MemoryStore()
    store.ensure_output("sink", 0)
    journal = Journal(store)
    state = BridgeStateRow("B1", "VB-8", 8, "1.2", "armed", 5, "127.0.0.1", 5, 6)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append(
            [make_signal()],
            cursors=[CursorUpdate("sink", 1, delivered=1, updated_us=7)],
            bridge_states=[state],
        )
        journal.close()
    assert store.appends == 1
    [output] = store.output_states(["sink"])
    assert (output.cursor, output.delivered) == (1, 1)
    assert store.bridge_states() == [state]


async def test_the_watch_on_other_writers_waits_out_a_store_outage() -> None:
    """The coordinator's watch on the workers' commits survives a store that fails for a
    while (PostgreSQL restarting): it counts the failures, backs off, and still wakes the
    dispatcher for a signal another writer committed meanwhile. (On the real clock: the watch
    reads in a worker thread, which an autojump clock would outrun; two failures back off 1.5 s.)"""
    store = MemoryStore()
    journal = Journal(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        # A worker's commit, not through this journal; then the store fails three reads.
        store.append([JournalWrite(signals=[make_signal()])])
        store.fail_next(2)
        nursery.start_soon(journal.watch_other_writers, store)
        with trio.fail_after(20):
            await journal.wait_committed()
        nursery.cancel_scope.cancel()
    assert journal.counters.snapshot()["store_errors"] == 2
