"""The journal: durable before it answers, group commit, duplicates absorbed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver.journal import Journal, JournalError, load_links, read_after


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


async def test_append_is_readable_from_another_connection_when_it_returns(tmp_path: Path) -> None:
    """Once append returns, a separate connection sees the row with every field intact."""
    db = tmp_path / "j.sqlite3"
    journal = Journal(db)
    signal = make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        result = await journal.append([signal], links=[("account:1", 5)])
        conn = sqlite3.connect(db)
        conn.row_factory = sqlite3.Row
        rows = read_after(conn, 0, 10)
        journal.close()
    assert result.stored == (signal,)
    assert [s for _, s in rows] == [signal]
    assert load_links(conn) == {"account:1": (5, False)}


async def test_concurrent_appends_share_batches(tmp_path: Path) -> None:
    """Many concurrent appends are committed in far fewer transactions than signals."""
    journal = Journal(tmp_path / "j.sqlite3", max_batch=256)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        async with trio.open_nursery() as appenders:
            for i in range(500):
                appenders.start_soon(journal.append, [make_signal(str(1000 + i))])
        journal.close()
    batches = sum(n for k, n in journal.counters.snapshot().items() if k.startswith("batch_le_"))
    assert journal.counters.values["journal_signals_stored"] == 500
    assert batches < 100


async def test_retry_with_same_key_is_acked_but_stored_once(tmp_path: Path) -> None:
    """A retried frame within the window is reported duplicate and the row counts the repeat."""
    db = tmp_path / "j.sqlite3"
    journal = Journal(db, duplicate_window=600)
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
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT id, repeats FROM signals ORDER BY seq").fetchall() == [
        (first.id, 1),
        (late.id, 0),
    ]


async def test_duplicates_inside_one_batch_are_stored_once(tmp_path: Path) -> None:
    """Two copies of a frame arriving together still make one row."""
    db = tmp_path / "j.sqlite3"
    journal = Journal(db)
    a, b = make_signal(), make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        results = await journal.append([a, b], keys=["same", "same"])
        journal.close()
    assert results.stored == (a,)
    assert results.duplicates == (b,)
    assert sqlite3.connect(db).execute("SELECT count(*), sum(repeats) FROM signals").fetchone() == (
        1,
        1,
    )


async def test_dedupe_survives_restart(tmp_path: Path) -> None:
    """A retry arriving after a receiver restart is still recognised."""
    db = tmp_path / "j.sqlite3"
    for expect_dup in (False, True):
        journal = Journal(db)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            result = await journal.append([make_signal()], keys=["k"])
            journal.close()
        assert result.is_duplicate is expect_dup


async def test_append_after_close_refuses(tmp_path: Path) -> None:
    """Nothing can be appended once the journal is closed: the caller will not ACK."""
    journal = Journal(tmp_path / "j.sqlite3")
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        journal.close()
    with pytest.raises(JournalError):
        await journal.append([make_signal()])


async def test_failed_commit_answers_with_an_error_not_an_ack(tmp_path: Path) -> None:
    """When the commit fails (here: a second signal with the same id), append raises."""
    journal = Journal(tmp_path / "j.sqlite3")
    signal = make_signal()
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await journal.append([signal])
        with pytest.raises(JournalError):
            await journal.append([signal])
        # The writer keeps going after a failed batch.
        assert (await journal.append([make_signal()])).stored
        journal.close()
