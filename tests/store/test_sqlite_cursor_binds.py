"""An output's cursor save on SQLite binds its missing values (no error, no new success time)
as NULLs without sqlite3's adapter lookup for None, as the journal's INSERT does, and stores
what binding None stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.store.interface import CursorUpdate, JournalWrite
from receiver.store.sqlite_store import SqliteStore
from tests.store.none_binds import none_adapter_calls


def test_a_cursor_save_binds_no_none_and_keeps_the_stored_success_time(tmp_path: Path) -> None:
    """The dispatcher's saves (alone, and with a journal write) leave ``last_error`` NULL and
    keep ``last_success_us`` (``coalesce``) with no value sent through sqlite3's adapters (a
    None costs a lookup of about 1 us there). Before, both None values went through it."""
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    try:
        store.ensure_output("xml", 1)
        store.save_cursor(
            CursorUpdate("xml", 0, last_error="down", last_success_us=5, updated_us=6)
        )
        with none_adapter_calls() as adapted:
            assert store.save_cursor(
                CursorUpdate("xml", 0, delivered=2, connected=True, updated_us=7)
            )
            store.append(
                [JournalWrite(cursors=[CursorUpdate("xml", 0, delivered=1, updated_us=8)])]
            )
        assert adapted == []
    finally:
        store.close()
    conn = sqlite3.connect(path)
    try:
        row = conn.execute(
            "SELECT cursor, delivered, connected, last_error, typeof(last_error), "
            "last_success_us, updated_us FROM outputs WHERE name = 'xml'"
        ).fetchone()
    finally:
        conn.close()
    assert row == (0, 3, 0, None, "null", 5, 8)
