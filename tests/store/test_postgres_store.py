"""The PostgreSQL store against a real server: what several receiver nodes rely on.

Each "node" here is a store object of its own (its own connection), as each receiver node has.
Races start from a barrier in two threads; a race either way must leave one winner.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest
import trio

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver.history import HistoryQuery
from receiver.store.interface import (
    AccountRow,
    BridgeStateRow,
    CursorUpdate,
    JournalWrite,
    LinkSeen,
    LinkTrouble,
    RowRefusedError,
    Store,
    StoreError,
    User,
)
from receiver.store.postgres import store as store_module
from receiver.store.postgres.schema import SCHEMA_VERSION, PostgresOpenError, connect
from receiver.store.postgres.store import PostgresStore
from receiver.store.signal_rows import signal_row
from receiver.store.sqlite import connect as sqlite_connect

T = TypeVar("T")
NOW = datetime.now(UTC).replace(microsecond=0)


def make_signal(
    account: str = "1234", code: str = "130", when: datetime | None = None, seq: str = "0001"
) -> Signal:
    moment = when or NOW
    return Signal(
        id=new_signal_id(moment),
        received_at=moment,
        source=Source.DC09,
        peer="127.0.0.1:5000",
        account=account,
        effective_account=account,
        station="main",
        token="ADM-CID",
        sequence=seq,
        device_time=moment - timedelta(seconds=2),
        cid=ContactIdView("E", code, "01", "005"),
        sia=SiaView("BA", "005", (("ri", "1"),), "text"),
        extended=(("V", "https://video/1"),),
        flags=frozenset({"encrypted"}),
        raw=b"\nraw\x00\r",
    )


def race(first: Callable[[], T], second: Callable[[], T]) -> list[T | BaseException]:
    """Run both at once (released together by a barrier); each one's result or error."""
    barrier = threading.Barrier(2, timeout=30)
    results: list[T | BaseException] = [RuntimeError("did not finish")] * 2

    def run(index: int, call: Callable[[], T]) -> None:
        barrier.wait()
        try:
            results[index] = call()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def rows(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def test_the_store_implements_the_interface(pg_store: PostgresStore) -> None:
    store: Store = pg_store  # mypy checks the protocol
    assert store.last_seq() == 0


def test_commits_are_synchronous(pg_store: PostgresStore) -> None:
    """A commit is on the server's disk before append returns (as SQLite FULL)."""
    assert pg_store._connection().execute("SHOW synchronous_commit").fetchone() == {
        "synchronous_commit": "on"
    }


def test_signal_rows_read_back_as_the_signal() -> None:
    """The one row writer of every backend and its one reader agree, column for column."""
    from receiver.store.signal_rows import SIGNAL_COLUMNS, signal_from_row  # noqa: PLC0415

    signal = make_signal()
    row = {**dict(zip(SIGNAL_COLUMNS, signal_row(signal, "k"), strict=True)), "repeats": 0}
    assert signal_from_row(row) == signal


def test_batch_append_is_read_after_a_cursor_from_another_node(
    pg_store: PostgresStore, pg_url: str
) -> None:
    first = [make_signal(code="130"), make_signal(code="131"), make_signal(code="132")]
    second = [make_signal(account="9999", code="110"), make_signal(account="9999", code="111")]
    pg_store.ensure_output("sentinel", 1)
    outcomes = pg_store.append(
        [
            JournalWrite(first, ["a", "b", None], links=[LinkSeen("account:1", 5)]),
            JournalWrite(
                second,
                troubles=[LinkTrouble("account:2", 7, open=True)],
                cursors=[CursorUpdate("sentinel", 2, delivered=2, connected=True, updated_us=9)],
                bridge_states=[
                    BridgeStateRow("BR1", "NVR", 8, "1.2", "armed", 3, "127.0.0.1:1", 4, 9)
                ],
            ),
        ]
    )
    assert [s for _, s in outcomes[0].stored] == first
    assert [s for _, s in outcomes[1].stored] == second
    assert outcomes[0].duplicates == outcomes[1].duplicates == ()
    seqs = [seq for o in outcomes for seq, _ in o.stored]
    assert seqs == sorted(seqs)

    other = PostgresStore(pg_url)  # another node: what it reads was committed
    try:
        assert [s for _, s in other.read_after(0, 100)] == first + second
        assert other.read_after(seqs[2], 100) == list(outcomes[1].stored)
        assert other.read_after(seqs[0], 2) == list(outcomes[0].stored[1:])
        assert other.links() == {"account:1": (5, False), "account:2": (7, True)}
        [state] = other.output_states(["sentinel"])
        assert (state.cursor, state.delivered, state.connected) == (2, 2, True)
        assert other.bridge_states()[0].armed == "armed"
        assert other.last_seq() == seqs[-1]
    finally:
        other.close()


def test_a_retry_inside_the_window_is_a_duplicate_and_counted(pg_store: PostgresStore) -> None:
    original = make_signal()
    [outcome] = pg_store.append([JournalWrite([original], ["k1"])])
    retry = make_signal(when=NOW + timedelta(seconds=30))
    again = make_signal(when=NOW + timedelta(seconds=40))
    [outcome] = pg_store.append([JournalWrite([retry, again], ["k1", "k1"])])
    assert outcome.stored == ()
    assert outcome.duplicates == (retry, again)
    [(seq, stored)] = pg_store.read_after(0, 10)
    assert stored == original.with_flags("duplicate_received")
    assert pg_store.recent_keys(0) == [("k1", seq, int(NOW.timestamp() * 1_000_000))]


def test_a_repeat_within_one_batch_is_stored_once(pg_store: PostgresStore) -> None:
    one, two = make_signal(), make_signal()
    outcomes = pg_store.append([JournalWrite([one], ["k"]), JournalWrite([two], ["k"])])
    assert [o.duplicates for o in outcomes] == [(), (two,)]
    assert len(pg_store.read_after(0, 10)) == 1


def test_a_key_older_than_the_window_is_stored_again(pg_store: PostgresStore) -> None:
    old = make_signal(when=NOW - timedelta(seconds=601))
    pg_store.append([JournalWrite([old], ["k"])])
    [outcome] = pg_store.append([JournalWrite([make_signal()], ["k"])])
    assert len(outcome.stored) == 1
    assert pg_store.purge_keys(int(NOW.timestamp() * 1_000_000)) == 0  # the new key stays
    assert pg_store.purge_keys(int(NOW.timestamp() * 1_000_000) + 1) == 1


def test_the_same_key_from_two_nodes_at_once_is_stored_once(pg_url: str) -> None:
    """Two nodes commit the same panel retry at the same moment: one row, the other a dup."""
    node_a, node_b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        for round_ in range(20):
            key = f"acct|ADM-CID|{round_:04d}|payload"
            a, b = make_signal(seq=f"{round_:04d}"), make_signal(seq=f"{round_:04d}")
            results = race(
                lambda a=a, key=key: node_a.append([JournalWrite([a], [key])]),  # type: ignore[misc]
                lambda b=b, key=key: node_b.append([JournalWrite([b], [key])]),  # type: ignore[misc]
            )
            outcomes = [r[0] for r in results if isinstance(r, list)]
            assert len(outcomes) == 2, results
            assert sorted(len(o.stored) for o in outcomes) == [0, 1]
            assert sorted(len(o.duplicates) for o in outcomes) == [0, 1]
        counts = rows(
            pg_url, "SELECT count(*), count(DISTINCT dedupe_key), sum(repeats) FROM signals"
        )
        assert counts == [(20, 20, 20)]
    finally:
        node_a.close()
        node_b.close()


def _registry(store: PostgresStore) -> tuple[int, int]:
    tables = store.registry()
    try:
        tables.begin_write()
        station = tables.insert_station("main", None, None)
        tables.insert_line(station, "1", "ABC")
        line = int(tables.line(station, "1")["id"])  # type: ignore[index]
        tables.commit()
    finally:
        tables.close()
    return station, line


def _insert_accounts(store: PostgresStore, rows: list[AccountRow]) -> None:
    """``rows`` in one registry write of their own (all or none), as an import writes them."""
    tables = store.registry()
    try:
        tables.begin_write()
        try:
            tables.insert_account_rows(rows)
        except BaseException:
            tables.rollback()
            raise
        tables.commit()
    finally:
        tables.close()


def _holder(store: PostgresStore, station: int, effective: str) -> str | None:
    tables = store.registry()
    try:
        row = tables.holder(station, effective)
        return None if row is None else str(row["number"])
    finally:
        tables.close()


def test_colliding_account_numbers_racing_from_two_nodes_one_wins(pg_url: str) -> None:
    """The unique index is the last line of defence: two nodes writing the same effective
    number at once (each unchecked), one commits, the other is refused and stores nothing."""
    node_a, node_b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        station, line = _registry(node_a)
        for n in range(10):
            # Typed differently on each node; the same effective number (line prefix added).
            row_a = AccountRow(station, line, f"{n:04d}", f"ABC{n:04d}")
            row_b = AccountRow(station, line, f"ABC{n:04d}", f"ABC{n:04d}")
            results = race(
                lambda r=row_a: _insert_accounts(node_a, [r]),  # type: ignore[misc]
                lambda r=row_b: _insert_accounts(node_b, [r]),  # type: ignore[misc]
            )
            won = [i for i, r in enumerate(results) if r is None]
            lost = [r for r in results if isinstance(r, RowRefusedError)]
            assert (len(won), len(lost)) == (1, 1), results
            assert "accounts_effective" in str(lost[0])
            assert _holder(node_b, station, f"ABC{n:04d}") == (row_a, row_b)[won[0]].number
        assert rows(pg_url, "SELECT count(*) FROM accounts") == [(10,)]
    finally:
        node_a.close()
        node_b.close()


def test_an_import_with_a_taken_number_stores_nothing(pg_store: PostgresStore, pg_url: str) -> None:
    station, line = _registry(pg_store)
    _insert_accounts(pg_store, [AccountRow(station, line, "2", "ABC2")])
    batch = [AccountRow(station, line, "1", "ABC1"), AccountRow(station, line, "2", "ABC2")]
    with pytest.raises(RowRefusedError, match="accounts_effective"):
        _insert_accounts(pg_store, batch)
    assert rows(pg_url, "SELECT effective FROM accounts") == [("ABC2",)]


def test_a_registry_change_on_one_node_wakes_the_others(pg_url: str) -> None:
    watcher, cli = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        assert watcher.wait_registry_change(0) is False
        before = watcher.registry_generation()
        _registry(cli)
        assert watcher.wait_registry_change(30) is True  # NOTIFY: at once, not after 30 s
        assert watcher.registry_generation() > before
        assert watcher.wait_registry_change(0) is False
    finally:
        watcher.close()
        cli.close()


def test_a_notice_that_arrives_during_the_wait_wakes_it_and_the_watch_goes_on(pg_url: str) -> None:
    """A NOTIFY that lands while the watcher already waits (here one that changes no
    generation, as a repeated or stray notice) returns True, and the next wait works. Before,
    the wait drained the backlog inside psycopg's notifies() generator, whose connection lock
    is not reentrant: the watch thread hung for good on the first such notice."""
    watcher = PostgresStore(pg_url)
    assert watcher.wait_registry_change(0) is False
    woke: list[bool] = []
    waiting = threading.Thread(
        target=lambda: woke.append(watcher.wait_registry_change(60)), daemon=True
    )
    waiting.start()
    with psycopg.connect(pg_url, autocommit=True) as notifier:
        for _ in range(200):  # until one lands inside the wait; bounded: 200 x 0.1 s
            notifier.execute("NOTIFY registry_changed")
            waiting.join(0.1)
            if not waiting.is_alive():
                break
    waiting.join(30)
    if waiting.is_alive():
        pytest.fail("the registry watch hung on a notice that arrived while it waited")
    try:
        assert woke == [True]
        assert watcher.wait_registry_change(0) is False
    finally:
        watcher.close()


def _age(url: str, name: str) -> None:
    """What the lease looks like once its holder stopped renewing it for longer than its ttl."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second' "
            "WHERE name = %s",
            (name,),
        )


def test_two_nodes_racing_for_a_lease_only_one_holds_it(pg_url: str) -> None:
    node_a, node_b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        for n in range(20):
            name = f"output:sentinel-{n}"
            results = race(
                lambda name=name: node_a.acquire_lease(name, "A", 10),  # type: ignore[misc]
                lambda name=name: node_b.acquire_lease(name, "B", 10),  # type: ignore[misc]
            )
            held = [r for r in results if r is not None]
            assert len(held) == 1, results
            assert not any(isinstance(r, BaseException) for r in results), results
            assert [
                (lease.name, lease.holder) for lease in node_a.leases() if lease.name == name
            ] == [
                (name, held[0].holder)  # type: ignore[union-attr]
            ]
        # Expired leases racing: still one taker.
        for n in range(20):
            _age(pg_url, f"output:sentinel-{n}")
            results = race(
                lambda n=n: node_a.acquire_lease(f"output:sentinel-{n}", "A2", 10),  # type: ignore[misc]
                lambda n=n: node_b.acquire_lease(f"output:sentinel-{n}", "B2", 10),  # type: ignore[misc]
            )
            assert len([r for r in results if r is not None]) == 1, results
    finally:
        node_a.close()
        node_b.close()


def test_an_expired_lease_is_taken_over_and_only_its_holder_renews(
    pg_store: PostgresStore, pg_url: str
) -> None:
    a = pg_store.acquire_lease("output:sentinel", "A", 10)
    assert a is not None
    assert a.epoch == 1
    assert pg_store.acquire_lease("output:sentinel", "B", 10) is None
    assert pg_store.renew_lease("output:sentinel", "B", 10) is None  # not B's
    assert pg_store.release_lease("output:sentinel", "B") is False
    renewed = pg_store.renew_lease("output:sentinel", "A", 10)
    assert renewed is not None
    assert renewed.expires_us >= a.expires_us

    _age(pg_url, "output:sentinel")  # A died: no renewal for longer than the ttl
    assert pg_store.leases() == []
    assert pg_store.renew_lease("output:sentinel", "A", 10) is None  # too late for A
    b = pg_store.acquire_lease("output:sentinel", "B", 10)
    assert b is not None
    assert (b.holder, b.epoch) == ("B", 2)  # the epoch fences A's late writes
    assert pg_store.acquire_lease("output:sentinel", "A", 10) is None

    assert pg_store.release_lease("output:sentinel", "B") is True  # clean shutdown
    a_again = pg_store.acquire_lease("output:sentinel", "A", 10)
    assert a_again is not None
    assert (a_again.holder, a_again.epoch) == ("A", 3)


def test_nodes_report_their_heartbeat(pg_store: PostgresStore) -> None:
    first = pg_store.heartbeat("node-a", {"ports": [7000]})
    second = pg_store.heartbeat("node-a", {"ports": [7000, 7001]})
    pg_store.heartbeat("node-b", {})
    assert second.started_us == first.started_us
    assert second.heartbeat_us >= first.heartbeat_us
    assert [(n.name, dict(n.info)) for n in pg_store.nodes()] == [
        ("node-a", {"ports": [7000, 7001]}),
        ("node-b", {}),
    ]


def test_history_filters_by_account_and_code(pg_store: PostgresStore) -> None:
    signals = [
        make_signal(account="1234", code="130", when=NOW),
        make_signal(account="1234", code="110", when=NOW + timedelta(seconds=1)),
        make_signal(account="5678", code="130", when=NOW + timedelta(seconds=2)),
    ]
    pg_store.append([JournalWrite(signals)])
    found = pg_store.history(HistoryQuery(account="1234"))
    assert [s for _, s in found] == [signals[1], signals[0]]
    assert [s for _, s in pg_store.history(HistoryQuery(code="E130"))] == [signals[2], signals[0]]
    last, after = pg_store.history_after(HistoryQuery(account="5678"), 0, 10)
    assert (last, after) == (pg_store.last_seq(), [signals[2]])


def test_users(pg_store: PostgresStore) -> None:
    pg_store.add_user(User("ana", "operator", "scrypt$..."))
    pg_store.add_user(User("ana", "admin", "scrypt$new"))
    assert pg_store.user("ana") == User("ana", "admin", "scrypt$new")
    assert pg_store.user("bob") is None
    assert pg_store.users() == [User("ana", "admin", "scrypt$new")]


def test_a_lost_connection_fails_the_call_and_the_next_one_reconnects(
    pg_store: PostgresStore, pg_url: str
) -> None:
    """Outcome unknown: the append raises (no ACK); the panel's retry then commits."""
    pid = pg_store._connection().info.backend_pid
    rows(pg_url, "SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(StoreError, match="journal commit failed"):
        pg_store.append([JournalWrite([make_signal()], ["k"])])
    [outcome] = pg_store.append([JournalWrite([make_signal()], ["k"])])
    assert len(outcome.stored) == 1


def test_migrations_apply_once_even_when_two_nodes_start_together(
    postgres_cluster: Any,
) -> None:
    url = postgres_cluster.url_for("fresh_migrations")
    with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
        conn.execute("CREATE DATABASE fresh_migrations")
    try:
        results = race(lambda: connect(url), lambda: connect(url))
        for opened in results:
            assert isinstance(opened, psycopg.Connection), results
            opened.close()
        applied = rows(url, "SELECT version FROM store_migrations ORDER BY version")
        assert applied == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO store_migrations (version, name) VALUES (9999, 'future')")
        with pytest.raises(Exception, match="newer than this program's"):
            connect(url)
    finally:
        with psycopg.connect(postgres_cluster.url, autocommit=True) as conn:
            conn.execute("DROP DATABASE fresh_migrations WITH (FORCE)")


def test_an_unreachable_server_is_one_clear_error() -> None:
    with pytest.raises(PostgresOpenError, match="cannot connect to the PostgreSQL store"):
        connect("postgresql://nobody:secret@127.0.0.1:1/none")


def receiver_connections(url: str) -> int:
    """The receiver's sessions on the test database, as the server counts them."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'receiver'"
        ).fetchone()
    assert row is not None
    return int(row[0])


async def test_a_store_built_inside_trio_connects_in_the_thread_of_its_first_call(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A component built on the event loop opens no connection there: the server sees none
    until the first call, which connects (and migrates) in the worker thread running it."""
    threads: list[threading.Thread] = []
    real = connect  # what the store module calls

    def recorded(url: str, **options: Any) -> Any:
        threads.append(threading.current_thread())
        return real(url, **options)

    monkeypatch.setattr(store_module, "connect", recorded)
    before = receiver_connections(pg_url)
    store = PostgresStore(pg_url)
    try:
        assert (threads, receiver_connections(pg_url)) == ([], before)
        assert await trio.to_thread.run_sync(store.last_seq) == 0
        assert len(threads) == 1
        assert threads[0] is not threading.main_thread()
        assert receiver_connections(pg_url) == before + 1
        await trio.to_thread.run_sync(store.last_seq)  # the same connection serves on
        assert len(threads) == 1
    finally:
        store.close()


def test_an_unreachable_server_is_a_store_fault_of_the_first_call_or_of_open() -> None:
    """Built on a server nobody runs, a store says so at its first call (a StoreError: what
    the service retries, one line at the CLI), or at once when asked to ``open``; the password
    is never shown."""
    url = "postgresql://nobody:secret@127.0.0.1:1/none"
    store = PostgresStore(url)
    with pytest.raises(
        StoreError,
        match="^journal read failed: cannot connect to the PostgreSQL "
        r"store postgresql://nobody:\*\*\*@127.0.0.1:1/none",
    ) as lost:
        store.last_seq()
    assert "secret" not in str(lost.value)
    with pytest.raises(PostgresOpenError, match="cannot connect to the PostgreSQL store"):
        store.open()
    store.close()


def _columns_sqlite(table: str) -> list[str]:
    conn = sqlite_connect(":memory:")
    try:
        return [row["name"] for row in conn.execute(f"PRAGMA table_info({table})")]
    finally:
        conn.close()


SQLITE_TABLES = (
    "signals",
    "links",
    "bridge_state",
    "outputs",
    "stations",
    "lines",
    "dealers",
    "sites",
    "accounts",
    "library_overrides",
    "bridges",
    "bridge_channels",
    "meta",
)


def test_the_schema_mirrors_sqlite(pg_url: str) -> None:
    """Every SQLite table has its PostgreSQL twin with the same columns in the same order."""
    for table in SQLITE_TABLES:
        pg = [
            r[0]
            for r in rows(
                pg_url,
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = %s ORDER BY ordinal_position",
                (table,),
            )
        ]
        assert pg == _columns_sqlite(table), table


def test_a_cursor_reading_while_two_nodes_append_misses_nothing(pg_url: str) -> None:
    """Journal order is commit order: a reader that moved past seq never finds a signal that
    commits later below it (an output's cursor would skip it forever)."""
    nodes = [PostgresStore(pg_url), PostgresStore(pg_url)]
    reader = PostgresStore(pg_url)
    stored: list[str] = []
    lock = threading.Lock()

    def write(node: PostgresStore) -> None:
        for _ in range(30):
            [outcome] = node.append([JournalWrite([make_signal() for _ in range(8)])])
            with lock:
                stored.extend(s.id for _, s in outcome.stored)

    writers = [threading.Thread(target=write, args=(node,)) for node in nodes]
    try:
        for thread in writers:
            thread.start()
        cursor, seen = 0, []
        for _ in range(100_000):  # bounded; ends once the writers are done and read through
            done = not any(thread.is_alive() for thread in writers)
            batch = reader.read_after(cursor, 1000)
            seen += [s.id for _, s in batch]
            if batch:
                cursor = batch[-1][0]
            elif done:
                break
        for thread in writers:
            thread.join(timeout=60)
        assert sorted(seen) == sorted(stored)
        assert len(seen) == 2 * 30 * 8
    finally:
        for store in (*nodes, reader):
            store.close()
