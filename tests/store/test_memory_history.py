"""The in-memory fake's history by account finds what SQLite finds, for accounts outside ASCII
too: SQLite's ``upper()`` folds ASCII letters only, and so does the fake."""

from __future__ import annotations

from pathlib import Path

from receiver.history import HistoryQuery
from receiver.store.interface import JournalWrite
from receiver.store.memory import MemoryStore
from receiver.store.sqlite_store import SqliteStore
from tests.store.test_history_plan import signal

# Accounts as received (no registry account): lower-case non-ASCII letters, a German sharp s
# (Python's upper() makes it "SS"), and plain ASCII in mixed case.
RECEIVED = ["é12", "straße", "Ab1", "ÉTÉ"]
TYPED = ["é12", "É12", " straße ", "STRASSE", "STRAßE", "ab1", "AB1", "été", "ÉTÉ"]


def test_the_fake_and_sqlite_find_the_same_rows_for_any_account_typed(tmp_path: Path) -> None:
    """Each account typed finds the same signals in MemoryStore as in a SQLite file. Before,
    the fake upper-cased the account received with Python's ``upper()``: "é12" typed found
    the "é12" row there (both "É12") and nothing in SQLite."""
    writes = [
        JournalWrite(signals=[signal(n, account=account, effective=None)], keys=[None])
        for n, account in enumerate(RECEIVED)
    ]
    fake = MemoryStore()
    lite = SqliteStore(tmp_path / "store.sqlite3")
    try:
        for store in (fake, lite):
            store.append(writes)
        found = {
            typed: (
                [s.account for _, s in fake.history(HistoryQuery(account=typed))],
                [s.account for _, s in lite.history(HistoryQuery(account=typed))],
            )
            for typed in TYPED
        }
    finally:
        lite.close()
    assert {typed: mine for typed, (mine, _) in found.items()} == {
        typed: theirs for typed, (_, theirs) in found.items()
    }
    assert found["ab1"] == (["Ab1"], ["Ab1"])  # ASCII still folds
    assert found["ÉTÉ"] == (["ÉTÉ"], ["ÉTÉ"])
