"""`receiver nodes` as typed: every node, its last heartbeat and age, its leases and until when."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from receiver.cli import main
from receiver.store.lease_sql import SqliteLeaseStore
from receiver.store.postgres.store import PostgresStore
from tests.receiver.conftest import write_config


def test_nodes_lists_each_node_with_its_heartbeat_and_leases(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    store = SqliteLeaseStore(tmp_path / "receiver.sqlite3")
    try:
        store.heartbeat(
            "receiver-a",
            {"pid": 41, "version": "1.0", "listeners": {"dc09": "127.0.0.1:9000"}},
        )
        store.heartbeat("receiver-b", {"pid": 42, "version": "1.0"})
        held = store.acquire_lease("output:xml", "receiver-a", 60)
        assert store.acquire_lease("supervisor", "receiver-a", 60) is not None
        assert store.acquire_lease("output:old", "receiver-b", 0.0) is not None  # expired
    finally:
        store.close()
    assert held is not None

    assert main(["--config", str(config), "nodes", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("receiver: nodes of configuration ")
    rows = json.loads(out)
    assert [(r["node"], r["pid"], r["version"]) for r in rows] == [
        ("receiver-a", 41, "1.0"),
        ("receiver-b", 42, "1.0"),
    ]
    a, b = rows
    assert a["listeners"] == ["dc09=127.0.0.1:9000"]
    assert [h.split(" until ")[0] for h in a["holds"]] == ["output:xml", "supervisor"]
    assert b["holds"] == []
    assert 0 <= a["age_s"] < 60
    assert a["heartbeat"].endswith("+00:00")

    assert main(["--config", str(config), "nodes"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == [
        "NODE",
        "HEARTBEAT",
        "AGE_S",
        "HOLDS",
        "PID",
        "VERSION",
        "LISTENERS",
    ]
    assert table[1].startswith("receiver-a ")
    assert "output:xml until " in table[1]


def test_nodes_on_a_store_that_does_not_exist_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert main(["--config", str(config), "nodes"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2
    assert err[1].startswith(f"receiver: store {tmp_path / 'receiver.sqlite3'} does not exist")


def test_nodes_reads_the_postgresql_store(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two nodes on one PostgreSQL: each listed with what it holds, the password never shown."""
    config = tmp_path / "receiver.toml"
    config.write_text(f'[store]\nurl = "{pg_url}"\n', encoding="utf-8")
    store = PostgresStore(pg_url)
    try:
        store.heartbeat("receiver-a", {"pid": 1, "version": "1.0"})
        store.heartbeat("receiver-b", {"pid": 2, "version": "1.0"})
        assert store.acquire_lease("output:xml", "receiver-b", 60) is not None
        assert store.acquire_lease("supervisor", "receiver-a", 60) is not None
    finally:
        store.close()
    assert main(["--config", str(config), "nodes", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert "store postgresql://" in err
    rows = json.loads(out)
    assert [(r["node"], [h.split(" until ")[0] for h in r["holds"]]) for r in rows] == [
        ("receiver-a", ["supervisor"]),
        ("receiver-b", ["output:xml"]),
    ]
