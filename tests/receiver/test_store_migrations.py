"""Store migrations on a real SQLite file: an older store upgrades in place, keeping its rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from receiver.registry import Registry
from receiver.store import sqlite as store


def _store_at(path: Path, version: int) -> sqlite3.Connection:
    """A store migrated only up to ``version``, as an older receiver left it."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    store.configure(conn)
    for number, _, sql in store.migrations():
        if number > version:
            break
        conn.execute("BEGIN IMMEDIATE")
        for statement in store._statements(sql):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number}")
        conn.execute("COMMIT")
    return conn


def test_bridges_survive_the_rebuild_that_lets_them_wait_for_an_account(tmp_path: Path) -> None:
    """Migration 7 rebuilds bridges and bridge_channels (account_id may be NULL): every row,
    id, channel setting and foreign key survives, and registry changes still bump the
    generation the receiver watches."""
    path = tmp_path / "old.sqlite3"
    conn = _store_at(path, 6)
    conn.executescript(
        """
        INSERT INTO stations (id, name) VALUES (1, 'S1');
        INSERT INTO lines (id, station_id, number, prefix) VALUES (1, 1, '0', '');
        INSERT INTO dealers (id, name) VALUES (1, 'D1');
        INSERT INTO sites (id, name, dealer_id) VALUES (1, 'Main St', 1);
        INSERT INTO accounts (id, station_id, line_id, number, effective, site_id)
            VALUES (1, 1, 1, '1234', '1234', 1);
        INSERT INTO bridges (id, serial, token, model, channels, site_id, account_id)
            VALUES (7, 'B1', 'tok', 'M', 4, 1, 1);
        INSERT INTO bridge_channels (bridge_id, channel, account_id, zone, zone_type, camera)
            VALUES (7, 1, 1, 1, 'instant', 'Gate'), (7, 2, 1, 12, '24_hour', NULL),
                   (7, 3, 1, 3, 'instant', NULL), (7, 4, 1, 4, 'instant', NULL);
        """
    )
    conn.close()
    upgraded = store.connect(path)
    assert store.schema_version(upgraded) == store.SCHEMA_VERSION >= 7
    assert upgraded.execute("PRAGMA foreign_key_check").fetchall() == []
    bridge = upgraded.execute("SELECT * FROM bridges").fetchone()
    assert (bridge["id"], bridge["serial"], bridge["account_id"]) == (7, "B1", 1)
    channels = upgraded.execute(
        "SELECT channel, zone, zone_type, camera FROM bridge_channels ORDER BY channel"
    ).fetchall()
    assert [tuple(c) for c in channels[:2]] == [
        (1, 1, "instant", "Gate"),
        (2, 12, "24_hour", None),
    ]
    upgraded.close()
    registry = Registry.open(path)
    try:
        generation = registry.tables.generation()
        registry.set_channel("B1", 3, zone=30)
        assert {r["zone"] for r in registry.list_bridges()} >= {"001", "012", "030"}
        assert registry.tables.generation() > generation
    finally:
        registry.close()
