"""The registry on PostgreSQL where several nodes share it: the unique index decides a race
the check cannot see, and a change made by the CLI reaches every running node's index."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
import trio

from protocols.errors import CollisionError
from receiver.registry import AccountSpec, Registry, read_import_csv
from receiver.registry_index import RegistryIndex
from receiver.service import RegistryView
from receiver.store.postgres.store import PostgresStore
from tests.receiver.conftest import store_section

SCRIPT = Path(sys.executable).with_name("receiver")


@pytest.fixture
def seeded(pg_url: str) -> str:
    """Station S1 (line 0), dealer D1, site Main St, account 1234 at Main St."""
    reg = Registry.open(pg_url)
    reg.add_station("S1")
    reg.add_dealer("D1")
    reg.add_site("Main St", dealer="D1")
    reg.add_account("S1", AccountSpec(number="1234", site="Main St"))
    reg.close()
    return pg_url


def test_a_registry_on_a_url_lives_in_the_postgresql_server(seeded: str) -> None:
    """Registry.open with a postgresql:// URL writes to the server (never to a SQLite file
    named like the URL): the rows, and the generation counter the triggers moved, are there."""
    with psycopg.connect(seeded, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT st.name, a.effective, s.name FROM accounts a "
            "JOIN stations st ON st.id = a.station_id JOIN sites s ON s.id = a.site_id"
        ).fetchall()
        generation = conn.execute(
            "SELECT value FROM meta WHERE key = 'registry_generation'"
        ).fetchone()
    assert rows == [("S1", "1234", "Main St")]
    assert generation is not None
    assert generation[0] > 0


def wait_for_a_lock_wait(url: str) -> None:
    """Until some backend of the test database waits on another's row lock (bounded)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(600):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.05)
    pytest.fail("the import never waited on the other writer's uncommitted row")


def test_unique_index_refuses_an_import_racing_another_writer_and_names_the_holder(
    seeded: str,
) -> None:
    """Another writer (one that does not take the registry's write lock: another node's code)
    inserts 5000 and has not committed when an import holding 5000 runs its check: the check
    sees nothing, the insert waits on the index, the writer commits, and the import is refused
    with the holder named; nothing of the file is stored."""
    other = psycopg.connect(seeded)  # a transaction of its own, open until commit()
    ids = other.execute("SELECT station_id, line_id FROM accounts LIMIT 1").fetchone()
    assert ids is not None
    other.execute(
        "INSERT INTO accounts (station_id, line_id, number, effective) "
        "VALUES (%s, %s, '5000', '5000')",
        ids,
    )
    rows = read_import_csv(io.StringIO("line,number\n0,4000\n0,5000\n"))
    outcome: list[BaseException | object] = []

    def importing() -> None:
        reg = Registry.open(seeded)
        try:
            outcome.append(reg.import_accounts("S1", rows))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            reg.close()

    thread = threading.Thread(target=importing)
    thread.start()
    try:
        wait_for_a_lock_wait(seeded)
    finally:
        other.commit()
        other.close()
        thread.join(timeout=60)
    [refused] = outcome
    assert isinstance(refused, CollisionError), refused
    assert str(refused) == (
        "import refused: account 5000 was taken at station S1 while importing: "
        "held by no site (line 0, number 5000)"
    )
    reg = Registry.open(seeded)
    assert sorted(a["effective"] for a in reg.list_accounts("S1")) == ["1234", "5000"]
    reg.close()


def test_unique_index_refuses_an_add_racing_another_writer(seeded: str) -> None:
    """The same race for one account added: refused with the holder named, not an error."""
    other = psycopg.connect(seeded)
    ids = other.execute("SELECT station_id, line_id FROM accounts LIMIT 1").fetchone()
    assert ids is not None
    other.execute(
        "INSERT INTO accounts (station_id, line_id, number, effective) "
        "VALUES (%s, %s, '5000', '5000')",
        ids,
    )
    outcome: list[BaseException | object] = []

    def adding() -> None:
        reg = Registry.open(seeded)
        try:
            outcome.append(reg.add_account("S1", AccountSpec(number="5000")))
        except BaseException as exc:
            outcome.append(exc)
        finally:
            reg.close()

    thread = threading.Thread(target=adding)
    thread.start()
    try:
        wait_for_a_lock_wait(seeded)
    finally:
        other.commit()
        other.close()
        thread.join(timeout=60)
    [refused] = outcome
    assert isinstance(refused, CollisionError), refused
    assert "account 5000 is taken at station S1: held by no site (line 0, number 5000)" in str(
        refused
    )


async def test_every_node_sees_a_cli_change_at_its_next_poll(seeded: str, tmp_path: Path) -> None:
    """Two running nodes' registry views on one database: an account the CLI adds (another
    process) appears in both, each at its next poll of the generation counter (0.25 s)."""
    config = tmp_path / "receiver.toml"
    config.write_text(store_section(seeded), encoding="utf-8")
    views = [RegistryView(PostgresStore(seeded)), RegistryView(PostgresStore(seeded))]
    changed = [trio.Event(), trio.Event()]
    async with trio.open_nursery() as nursery:
        for view, event in zip(views, changed, strict=True):
            await view.open()
            assert view.current().resolve("S1", "0", "4321") is None

            def seen(index: RegistryIndex, event: trio.Event = event) -> None:
                if index.resolve("S1", "0", "4321") is not None:
                    event.set()

            nursery.start_soon(view.run, seen)
        done = await trio.to_thread.run_sync(
            lambda: subprocess.run(
                [str(SCRIPT), "--config", str(config), "accounts", "add", "--station", "S1",
                 "4321", "--site", "Main St"],
                capture_output=True, text=True, check=False, timeout=60,
            )
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        with trio.fail_after(30):  # generous for a loaded machine; the poll is every 0.25 s
            for event in changed:
                await event.wait()
        nursery.cancel_scope.cancel()
    for view in views:
        account = view.current().resolve("S1", "0", "4321")
        assert account is not None
        assert (account.site_name, account.dealer) == ("Main St", "D1")
        view.close()


async def test_a_view_keeps_its_registry_while_the_server_is_gone_and_reconnects(
    seeded: str,
) -> None:
    """The server ends the view's connection (a restart, a network cut): the refresh keeps the
    registry it has, and the next one opens a new connection and sees later changes."""
    view = RegistryView(PostgresStore(seeded))
    await view.open()
    before = view.current()
    with psycopg.connect(seeded, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert await view.refresh() is before
    reg = Registry.open(seeded)
    reg.add_account("S1", AccountSpec(number="4321"))
    reg.close()
    fresh = await view.refresh()
    assert fresh is not before
    assert fresh.resolve("S1", "0", "4321") is not None
    view.close()
