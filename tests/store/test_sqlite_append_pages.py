"""The pages one journal commit writes, counted in the WAL file it leaves: a commit of one row
per account, over a journal that already holds a few hundred rows per account.

Measured (session 7): such a commit writes about 1.1 pages per row for ``signals_by_dedupe``
(each account's entries sit on leaves of their own, so every row dirties one: the duplicate
lookup and the account history both need an account-keyed index) and a handful of pages for
the table and the indexes kept in arrival order (``id``, ``received_us``); every page costs the
commit about 10 us of CPU (written to the WAL, checksummed, synced, later checkpointed). Here
that is 52 pages and 13 more; the budget leaves room for other SQLite versions' page splits,
and fails when the append starts writing a page per row elsewhere (another index keyed by
account, or by anything not in arrival order: 39 pages more)."""

from __future__ import annotations

import sqlite3
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.store.interface import JournalWrite, LinkSeen
from receiver.store.signal_rows import to_us
from receiver.store.sqlite_store import SqliteStore

ACCOUNTS = 50
_HEADER, _FRAME_HEADER = 32, 24


def _signal(account: int, number: int, when: datetime) -> Signal:
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=Source.DC09,
        account=f"{account + 1000}",
        effective_account=f"{account + 1000}",
        token="ADM-CID",
        sequence=f"{number % 9999 + 1:04d}",
        cid=ContactIdView("E", "130", "01", "005"),
        raw=b"\nraw\r",
    )


def _write(store: SqliteStore, signals: list[Signal]) -> None:
    keys = [f"{s.effective_account}|{s.sequence}|{s.id}" for s in signals]
    links = [LinkSeen(f"account:{s.effective_account}", to_us(s.received_at)) for s in signals]
    store.append([JournalWrite(signals=signals, keys=keys, links=links)])


def wal_frames(path: Path) -> list[int]:
    """The page number of every frame in a WAL file (frame headers start with it)."""
    data = path.read_bytes()
    if len(data) < _HEADER:
        return []
    page_size = struct.unpack(">I", data[8:12])[0]
    frame = _FRAME_HEADER + page_size
    count = (len(data) - _HEADER) // frame
    return [
        struct.unpack(">I", data[_HEADER + n * frame : _HEADER + n * frame + 4])[0]
        for n in range(count)
    ]


def _owners(path: Path) -> dict[int, str]:
    """Which table or index each page belongs to (SQLite's dbstat table; {} without it)."""
    conn = sqlite3.connect(path)
    try:
        return {
            int(page): str(name) for page, name in conn.execute("SELECT pageno, name FROM dbstat")
        }
    except sqlite3.OperationalError:  # a build without SQLITE_ENABLE_DBSTAT_VTAB
        return {}
    finally:
        conn.close()


@pytest.mark.slow  # 12,000 rows first
def test_a_commit_writes_about_one_page_per_account_and_a_few_more(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    store = SqliteStore(path)
    start = datetime.now(UTC)
    for batch in range(24):  # 240 rows per account: each account's index entries fill leaves
        when = start + timedelta(seconds=batch)
        _write(store, [_signal(n % ACCOUNTS, batch * 10 + n // ACCOUNTS, when) for n in range(500)])
    store._run(lambda conn: conn.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    assert wal_frames(path.with_name(path.name + "-wal")) == []
    when = start + timedelta(seconds=30)
    _write(store, [_signal(account, 300, when) for account in range(ACCOUNTS)])
    frames = wal_frames(path.with_name(path.name + "-wal"))
    store.close()
    owners = _owners(path)
    if owners:
        per_tree: dict[str, int] = {}
        for page in frames:
            per_tree[owners.get(page, "?")] = per_tree.get(owners.get(page, "?"), 0) + 1
        dedupe = per_tree.pop("signals_by_dedupe", 0)
        assert ACCOUNTS * 0.8 <= dedupe <= ACCOUNTS * 1.3, per_tree
        assert sum(per_tree.values()) <= 24, per_tree
    assert len(frames) <= ACCOUNTS * 1.3 + 24
