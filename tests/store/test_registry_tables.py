"""The registry's tables as each store gives them (``registry()``: the memory store, the SQLite
file, PostgreSQL): the registry service and the hot path's index run on them with the same
rules, the database's unique index the last line of defence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from protocols.errors import CollisionError
from receiver.registry import AccountSpec, ImportRow, Registry
from receiver.registry_index import RegistryIndex
from receiver.store.interface import AccountRow, RegistryTables, RowRefusedError
from receiver.store.memory import MemoryStore
from receiver.store.postgres.store import PostgresStore
from receiver.store.sqlite_store import SqliteStore


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RegistryTables]:
    """The registry's tables of a store on each backend, with station S1 (line 1, prefix ABC),
    dealer D1 and site Main St."""
    store: MemoryStore | SqliteStore | PostgresStore
    if request.param == "memory":
        store = MemoryStore()
    elif request.param == "sqlite":
        store = SqliteStore(tmp_path / "r.sqlite3")
    else:
        store = PostgresStore(request.getfixturevalue("pg_url"))
    found = store.registry()
    registry = Registry(found)
    registry.add_station("S1")
    registry.add_line("S1", "1", "abc")
    registry.add_dealer("D1")
    registry.add_site("Main St", dealer="D1")
    yield found
    found.close()
    store.close()


def _csv(*numbers: str) -> list[ImportRow]:
    return [
        ImportRow(line, {"line": "0", "number": number, "site": "Main St"})
        for line, number in enumerate(numbers, start=2)
    ]


def test_a_collision_is_refused_with_its_holder_named(tables: RegistryTables) -> None:
    registry = Registry(tables)
    registry.add_account("S1", AccountSpec(line="1", number="1234", site="Main St"))
    with pytest.raises(CollisionError, match=r'held by site "Main St" \(line 1, number 1234\)'):
        registry.add_account("S1", AccountSpec(number="abc1234"))
    index = RegistryIndex.load(tables)
    account = index.resolve("S1", "1", "1234")
    assert account is not None
    assert account.effective == "ABC1234"
    assert index.generation == tables.generation()


def test_an_import_with_a_collision_writes_nothing(tables: RegistryTables) -> None:
    registry = Registry(tables)
    registry.add_account("S1", AccountSpec(number="500"))
    before = tables.generation()
    report = registry.import_accounts("S1", _csv("501", "500", "502"))
    assert report.imported == 0
    assert [(p.line, p.kind) for p in report.problems] == [(3, "collision")]
    assert [a["number"] for a in registry.list_accounts("S1")] == ["500"]
    assert tables.generation() == before
    assert registry.import_accounts("S1", _csv("501", "502")).imported == 2
    assert tables.generation() > before


def test_the_unique_index_refuses_a_taken_number_on_its_own(tables: RegistryTables) -> None:
    """Past every check of the service, the database refuses the row: RowRefusedError, whichever
    driver, and the rolled-back transaction leaves nothing of the batch."""
    registry = Registry(tables)
    registry.add_account("S1", AccountSpec(number="ABC9"))
    tables.begin_read()
    (station,) = tables.stations()
    line = tables.line(station["id"], "0")
    tables.rollback()
    assert line is not None
    rows = [
        AccountRow(station["id"], line["id"], "8", "8"),
        AccountRow(station["id"], line["id"], "abc9", "ABC9"),
    ]
    tables.begin_write()
    with pytest.raises(RowRefusedError):
        tables.insert_account_rows(rows)
    tables.rollback()
    assert [a["effective"] for a in registry.list_accounts("S1")] == ["ABC9"]


def test_a_memory_store_keeps_one_registry() -> None:
    """Every ``registry()`` of one memory store is the same registry; another store's is not."""
    store = MemoryStore()
    Registry(store.registry()).add_station("S1")
    assert [s["name"] for s in store.registry().stations()] == ["S1"]
    assert MemoryStore().registry().stations() == []
