"""A bridge's state row on SQLite (with a journal write, and alone) binds its missing values
(no firmware yet, disarmed time unknown, not connected) as NULLs without sqlite3's adapter
lookup for None, as the journal's INSERT does, and stores what binding None stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from receiver.store.interface import BridgeStateRow, JournalWrite
from receiver.store.sqlite_store import UPSERT_BRIDGE_STATE, SqliteStore
from receiver.store.state_rows import state_params
from tests.store.none_binds import none_adapter_calls

SPARSE = BridgeStateRow("BR-1", None, None, None, None, None, None, None, 7)
ARMED = BridgeStateRow("BR-2", "VB-8", 8, None, "armed", 5, "127.0.0.1:9", 6, 8)
COLUMNS = (
    "SELECT serial, model, typeof(model), channels, typeof(channels), firmware, armed, "
    "armed_us, typeof(armed_us), peer, connected_us, typeof(connected_us), updated_us "
    "FROM bridge_state ORDER BY serial"
)


def stored(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(COLUMNS).fetchall()
    finally:
        conn.close()


def test_a_bridge_state_row_binds_no_none_and_stores_nulls(tmp_path: Path) -> None:
    """The worker's state rows, in the journal's transaction and written alone, send no value
    through sqlite3's adapters (a None costs a lookup of about 1 us there) and store the same
    rows, NULLs as NULL, as the same statement with None bound. Before, every None went
    through the adapter."""
    path = tmp_path / "store.sqlite3"
    store = SqliteStore(path)
    store.open()
    with none_adapter_calls() as adapted:
        try:
            store.append([JournalWrite(bridge_states=[SPARSE])])
            store.write_bridge_states([ARMED])
            assert adapted == []
            assert store.bridge_states() == [SPARSE, ARMED]
        finally:
            store.close()

    oracle = tmp_path / "oracle.sqlite3"
    SqliteStore(oracle).open()
    conn = sqlite3.connect(oracle)
    try:
        conn.executemany(UPSERT_BRIDGE_STATE, [state_params(SPARSE), state_params(ARMED)])
        conn.commit()
    finally:
        conn.close()
    assert stored(path) == stored(oracle)
    serial, *values, updated_us = stored(path)[0]
    assert (serial, updated_us) == ("BR-1", 7)
    assert set(values) == {None, "null"}  # every unknown value stored as NULL
