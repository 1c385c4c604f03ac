"""The SQLite journal append: a few dozen prepared statements serve every batch size (at most
two per 256 rows), and a batch split over several is stored whole, in order, its duplicates
still caught."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.store import sqlite_store
from receiver.store.interface import JournalWrite
from receiver.store.sqlite_store import SqliteStore, lookup_size, statement_sizes


def _signal(account: str, sequence: str, when: datetime) -> Signal:
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=Source.DC09,
        account=account,
        effective_account=account,
        token="ADM-CID",
        sequence=sequence,
        cid=ContactIdView("E", "130", "01", "005"),
        raw=b"\nraw\r",
    )


def _write(signals: list[Signal], keys: list[str | None]) -> JournalWrite:
    return JournalWrite(signals=signals, keys=keys)


_SIZES = {*range(1, 33), *range(48, 257, 16)}


@given(st.integers(min_value=0, max_value=2000))
def test_statement_sizes_cover_the_batch_with_at_most_two_chunks_per_256_rows(count: int) -> None:
    """Every row is in exactly one chunk, largest first; 46 sizes at most, two chunks per 256."""
    sizes = statement_sizes(count)
    assert sum(sizes) == count
    assert set(sizes) <= _SIZES
    assert sizes == sorted(sizes, reverse=True)
    assert len(sizes) <= count // 256 + 2


@given(st.integers(min_value=1, max_value=256))
def test_a_lookup_is_padded_to_one_of_the_sizes(pairs: int) -> None:
    """A lookup of 1 to 256 pairs takes one statement of a size that holds them."""
    size = lookup_size(pairs)
    assert size in _SIZES
    assert pairs <= size < pairs + 16


def test_every_batch_size_reuses_a_few_sql_strings(tmp_path: Path) -> None:
    """Batches of 1 to 150 keyed signals prepare at most 46 INSERT and 46 lookup statements,
    which SQLite's statement cache (128) keeps (one SQL string per batch size thrashed it)."""
    store = SqliteStore(tmp_path / "j.sqlite3")
    sqlite_store._insert_sql.cache_clear()
    sqlite_store._lookup_sql.cache_clear()
    now = datetime.now(UTC)
    for size in range(1, 151):
        signals = [_signal(f"{size:X}{i:03X}", "0001", now) for i in range(size)]
        store.append([_write(signals, [f"k{size}-{i}" for i in range(size)])])
    store.close()
    assert sqlite_store._insert_sql.cache_info().misses <= 46
    assert sqlite_store._lookup_sql.cache_info().misses <= 46


def test_a_batch_over_several_statements_is_stored_in_order_with_its_duplicates(
    tmp_path: Path,
) -> None:
    """300 signals (three INSERT chunks), 100 of them retries of an earlier batch: the 200 new
    ones get consecutive seqs in batch order, the 100 retries are absorbed and counted."""
    store = SqliteStore(tmp_path / "j.sqlite3")
    now = datetime.now(UTC)
    first = [_signal(f"A{i:03X}", f"{i:04d}", now) for i in range(100)]
    store.append([_write(first, [f"k{i}" for i in range(100)])])
    later = now + timedelta(seconds=5)
    batch = [_signal(f"A{i:03X}", f"{i:04d}", later) for i in range(300)]
    keys: list[str | None] = [f"k{i}" for i in range(300)]
    (outcome,) = store.append([_write(batch, keys)])
    store.close()
    assert outcome.duplicates == tuple(batch[:100])
    assert [s for _, s in outcome.stored] == batch[100:]
    assert [seq for seq, _ in outcome.stored] == list(range(101, 301))
    reader = SqliteStore(tmp_path / "j.sqlite3")
    rows = reader.read_after(0, 1000)
    reader.close()
    assert [s.id for _, s in rows] == [s.id for s in first + batch[100:]]
    assert all("duplicate_received" in s.flags for _, s in rows[:100])
