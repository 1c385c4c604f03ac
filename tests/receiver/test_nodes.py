"""Several nodes on one store: work runs only while its node holds the lease.

The first tests run on trio's autojump clock over a lease table kept on that clock (the
database's clock, with a network between node and database that the test can slow down or
cut); the last ones run the same code on the real PostgreSQL and SQLite stores.
"""

from __future__ import annotations

import itertools
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs
import psycopg
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from receiver import __version__
from receiver.config import ConfigError, parse_config
from receiver.journal import Journal, JournalError
from receiver.metrics import Counters
from receiver.nodes import RENEW_FRACTION, LeasedWork, Node, output_lease, take_over_supervision
from receiver.store.interface import (
    CursorUpdate,
    FencingToken,
    JournalWrite,
    Lease,
    LeaseStore,
    LinkSeen,
    LinkTrouble,
    NodeBeat,
    StoreError,
)
from receiver.store.lease_sql import SqliteLeaseStore
from receiver.store.postgres.store import PostgresStore
from receiver.supervisor import Supervisor
from tests.conftest import Backend
from tests.receiver.test_journal import make_signal

T = TypeVar("T")
LEASE = 10.0


@attrs.define
class _Row:
    holder: str
    expires: float
    epoch: int


class ClockedLeases:
    """A lease table on the trio clock: the database the nodes share, by the interface's rules."""

    def __init__(self) -> None:
        self.rows: dict[str, _Row] = {}
        self.beats: dict[str, NodeBeat] = {}

    def _lease(self, name: str) -> Lease:
        row = self.rows[name]
        return Lease(name, row.holder, int(row.expires * 1e6), row.epoch)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        now = trio.current_time()
        row = self.rows.get(name)
        if row is None:
            self.rows[name] = _Row(holder, now + ttl, 1)
        elif row.holder == holder or row.expires <= now:
            row.holder, row.expires, row.epoch = holder, now + ttl, row.epoch + 1
        else:
            return None
        return self._lease(name)

    def renew_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        now = trio.current_time()
        row = self.rows.get(name)
        if row is None or row.holder != holder or row.expires <= now:
            return None
        row.expires = now + ttl
        return self._lease(name)

    def release_lease(self, name: str, holder: str) -> bool:
        now = trio.current_time()
        row = self.rows.get(name)
        if row is None or row.holder != holder or row.expires <= now:
            return False
        row.expires = now
        return True

    def leases(self) -> list[Lease]:
        now = trio.current_time()
        return [self._lease(n) for n, r in sorted(self.rows.items()) if r.expires > now]

    def heartbeat(self, node: str, info: Mapping[str, Any]) -> NodeBeat:
        now = int(trio.current_time() * 1e6)
        started = self.beats[node].started_us if node in self.beats else now
        self.beats[node] = NodeBeat(node, started, now, dict(info))
        return self.beats[node]

    def nodes(self) -> list[NodeBeat]:
        return [self.beats[n] for n in sorted(self.beats)]


class Network:
    """One node's path to the database: ``delay`` each way, or ``down`` (calls fail)."""

    def __init__(self) -> None:
        self.delay = 0.001
        self.down = False
        self.reply_lost = False  # the database acts, the reply never arrives
        self.refused = 0  # calls that failed while down

    async def __call__(self, call: Callable[[], T]) -> T:
        await trio.sleep(self.delay)
        if self.down:
            self.refused += 1
            raise StoreError("lease failed: connection refused")
        result = call()
        if self.reply_lost:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        return result


@attrs.define
class Spans:
    """When each node ran the work, and the lease's expiry at each moment it ran."""

    runs: list[tuple[str, float, float]] = attrs.Factory(list)

    def work(self, node: str) -> LeasedWork:
        async def run(
            lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        ) -> None:
            start = trio.current_time()
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self.runs.append((node, start, trio.current_time()))

        return run

    def assert_never_two_at_once(self) -> None:
        ordered = sorted(self.runs, key=lambda r: r[1])
        for (_, _, end), (_, start, _) in itertools.pairwise(ordered):
            assert end <= start


def node(store: LeaseStore, name: str, network: Network | None = None) -> Node:
    return Node(store, name, lease=LEASE, call=network or Network())


async def test_two_nodes_one_runs_the_work_and_the_other_takes_over_when_it_dies(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Node B runs the output only after A lost the database and stopped, within one lease."""
    store, spans = ClockedLeases(), Spans()
    net_a = Network()
    a, b = node(store, "a", net_a), node(store, "b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.hold, "output:xml", spans.work("a"))
        await trio.sleep(1)
        nursery.start_soon(b.hold, "output:xml", spans.work("b"))
        await trio.sleep(30)
        assert [r[0] for r in spans.runs] == []  # A still runs, B waits
        assert a.held["output:xml"].holder == "a"
        assert "output:xml" not in b.held
        net_a.down = True
        cut = trio.current_time()
        expiry = store.rows["output:xml"].expires
        await trio.sleep(LEASE * 2)
        assert store.rows["output:xml"].holder == "b"
        assert b.held["output:xml"].epoch == 2
        nursery.cancel_scope.cancel()
    spans.assert_never_two_at_once()
    (_, _, a_stopped), (_, b_started, _) = sorted(spans.runs, key=lambda r: r[1])[:2]
    assert a_stopped < expiry <= b_started
    assert b_started - cut <= LEASE * 1.25 + 0.1


async def test_a_renewal_whose_reply_never_comes_stops_the_work_before_the_lease_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A hung database connection: the work is cancelled before the database could hand the
    lease to anyone else."""
    store, spans, net = ClockedLeases(), Spans(), Network()
    a = node(store, "a", net)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.hold, "supervisor", spans.work("a"))
        await trio.sleep(LEASE * RENEW_FRACTION * 3 + 0.5)  # a few renewals went through
        net.reply_lost = True
        await trio.sleep(LEASE * 3)
        nursery.cancel_scope.cancel()
    (_, _, stopped), *_ = spans.runs
    renewed_at = store.rows["supervisor"].expires - LEASE
    assert stopped < store.rows["supervisor"].expires
    assert stopped <= renewed_at + LEASE * 0.8 + 0.01


async def test_a_slow_database_delays_renewals_but_never_lets_two_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three seconds each way: the holder loses the lease now and then, never overlaps B."""
    store, spans = ClockedLeases(), Spans()
    slow = Network()
    slow.delay = 3.0
    a, b = node(store, "a", slow), node(store, "b")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.hold, "output:xml", spans.work("a"))
        await trio.sleep(0.5)
        nursery.start_soon(b.hold, "output:xml", spans.work("b"))
        await trio.sleep(120)
        nursery.cancel_scope.cancel()
    spans.assert_never_two_at_once()
    assert {r[0] for r in spans.runs} >= {"b"}


async def test_a_clean_shutdown_releases_the_lease_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A stopped node gives its lease up: the other takes over without waiting for expiry."""
    store, spans = ClockedLeases(), Spans()
    a, b = node(store, "a"), node(store, "b")
    async with trio.open_nursery() as nursery:
        a_scope = trio.CancelScope()
        nursery.start_soon(_cancellable, a_scope, a.hold, "output:xml", spans.work("a"))
        await trio.sleep(1)
        nursery.start_soon(b.hold, "output:xml", spans.work("b"))
        await trio.sleep(5)
        a_scope.cancel()
        stopped = trio.current_time()
        await trio.sleep(LEASE)
        nursery.cancel_scope.cancel()
    b_started = next(start for who, start, _ in spans.runs if who == "b")
    assert b_started - stopped <= LEASE * 0.25 + 0.1


async def _cancellable(scope: trio.CancelScope, hold: Any, *args: Any) -> None:
    with scope:
        await hold(*args)


async def test_a_hold_has_started_once_its_work_started_or_the_lease_was_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``nursery.start(node.hold, ...)``: the holder's work is running when it returns (an
    output's cursor is open before the listeners start); the other node is not kept waiting."""
    store, spans = ClockedLeases(), Spans()
    a, b = node(store, "a"), node(store, "b")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.hold, "output:xml", spans.work("a"))
        assert "output:xml" in a.held
        started = trio.current_time()
        await nursery.start(b.hold, "output:xml", spans.work("b"))
        assert trio.current_time() - started < 0.1
        assert "output:xml" not in b.held
        nursery.cancel_scope.cancel()


async def test_work_that_ends_releases_its_lease(autojump_clock: trio.testing.MockClock) -> None:
    store = ClockedLeases()
    a = node(store, "a")
    ran: list[int] = []

    async def once(
        lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        ran.append(lease.epoch)

    await a.hold("output:xml", once)
    assert ran == [1]
    assert store.leases() == []
    assert a.held == {}


async def test_the_heartbeat_says_what_the_node_holds_and_where_it_listens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = ClockedLeases()
    a = Node(
        store, "a", lease=LEASE, heartbeat=3.0, call=Network(), listeners={"dc09": "127.0.0.1:1"}
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run_heartbeat)
        nursery.start_soon(a.hold, output_lease("xml"), Spans().work("a"))
        await trio.sleep(7)
        nursery.cancel_scope.cancel()
    (beat,) = store.nodes()
    assert beat.info == {
        "pid": os.getpid(),
        "version": __version__,
        "listeners": {"dc09": "127.0.0.1:1"},
        "holds": ["output:xml"],
    }
    assert 6_000_000 <= beat.heartbeat_us - beat.started_us < 9_000_000  # two beats after the first


async def test_a_heartbeat_the_store_refuses_does_not_stop_the_node(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, net = ClockedLeases(), Network()
    net.down = True
    a = Node(store, "a", lease=LEASE, heartbeat=1.0, call=net)
    with trio.move_on_after(5):
        await a.run_heartbeat()
    net.down = False
    assert await a.beat() is not None


async def test_a_lease_request_failing_for_minutes_is_logged_first_then_every_30_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The database is unreachable for 95 s while B asks for the lease every 2.5 s: four lines
    (the first failure, then one per 30 s with the failures since), the recovery once, and
    nothing more once the requests go through (refused: A holds it)."""
    store, net = ClockedLeases(), Network()
    assert store.acquire_lease("output:xml", "a", 3600) is not None
    with capture_logs() as logs:
        b = node(store, "b", net)
        async with trio.open_nursery() as nursery:
            net.down = True
            nursery.start_soon(b.hold, "output:xml", Spans().work("b"))
            await trio.sleep(95)
            failed = net.refused
            net.down = False
            await trio.sleep(120)
            nursery.cancel_scope.cancel()
    lines = [e for e in logs if e["event"].startswith("lease_request")]
    assert [e["event"] for e in lines] == ["lease_request_failed"] * 4 + ["lease_request_recovered"]
    assert lines[0]["failures"] == 1
    assert sum(e["failures"] for e in lines[:4]) <= failed == lines[4]["failures"]
    assert failed >= 95 / (LEASE * 0.25)
    assert all(e["lease"] == "output:xml" and e["request"] == "acquire" for e in lines[:4])
    assert lines[0]["error"] == "lease failed: connection refused"
    assert 94 <= lines[4]["failed_for"] <= 96


async def test_each_lease_logs_its_own_failures_and_a_new_outage_its_first_failure_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two leases failing at once give a line each; after a recovery the next outage's first
    failure is logged at once, not 30 s after the last line."""
    store, net = ClockedLeases(), Network()
    with capture_logs() as logs:
        a = node(store, "a", net)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.hold, "output:xml", Spans().work("a"))
            await nursery.start(a.hold, "supervisor", Spans().work("a"))
            for _ in range(2):
                net.down = True
                await trio.sleep(10)  # renewals fail, the leases are lost, asked for again
                net.down = False
                await trio.sleep(5)
            nursery.cancel_scope.cancel()
    lines = [(e["event"], e["lease"]) for e in logs if e["event"].startswith("lease_request")]
    outage = [
        ("lease_request_failed", "output:xml"),
        ("lease_request_failed", "supervisor"),
        ("lease_request_recovered", "output:xml"),
        ("lease_request_recovered", "supervisor"),
    ]
    assert sorted(lines[:4]) == outage
    assert sorted(lines[4:]) == outage


async def test_a_heartbeat_failing_for_a_minute_is_logged_first_then_every_30_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store, net = ClockedLeases(), Network()
    net.down = True
    with capture_logs() as logs:
        a = Node(store, "a", lease=LEASE, heartbeat=3.0, call=net)
        with trio.move_on_after(61):
            await a.run_heartbeat()
        net.down = False
        assert await a.beat() is not None
        assert await a.beat() is not None
    lines = [e for e in logs if e["event"].startswith("node_heartbeat")]
    assert [(e["event"], e["failures"]) for e in lines] == [
        ("node_heartbeat_failed", 1),
        ("node_heartbeat_failed", 10),
        ("node_heartbeat_failed", 10),
        ("node_heartbeat_recovered", 21),
    ]


# -- the node section of the configuration ---------------------------------------------------


def test_node_settings_are_read_and_checked() -> None:
    config = parse_config('[node]\nname = "receiver-b"\nlease = 4.5\n')
    assert (config.node.node_name, config.node.lease) == ("receiver-b", 4.5)
    assert parse_config("").node.node_name  # the host name
    with pytest.raises(ConfigError) as info:
        parse_config('[node]\nlease = 0.1\nname = 3\nholder = "x"\n')
    assert info.value.errors == (
        "[node] lease: must be 1.0 to 3600.0 seconds, got 0.1",
        "[node] name: must be a string, got 3",
        "[node] holder: unknown key (known: name, lease)",
    )


# -- the real stores -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def lease_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[LeaseStore, LeaseStore]]:
    """Two nodes' lease stores (a connection each) on one database of each backend."""
    opened: list[SqliteLeaseStore | PostgresStore] = []
    if request.param == "sqlite":
        path = tmp_path / "receiver.sqlite3"
        opened = [SqliteLeaseStore(path), SqliteLeaseStore(path)]
    else:
        url: str = request.getfixturevalue("pg_url")
        opened = [PostgresStore(url), PostgresStore(url)]
    try:
        yield opened[0], opened[1]
    finally:
        for store in opened:
            store.close()


def test_a_lease_has_one_holder_and_changes_hands_only_when_free(
    lease_stores: tuple[LeaseStore, LeaseStore],
) -> None:
    a, b = lease_stores
    first = a.acquire_lease("output:xml", "a", 30)
    assert first is not None
    assert (first.holder, first.epoch) == ("a", 1)
    assert b.acquire_lease("output:xml", "b", 30) is None
    assert b.renew_lease("output:xml", "b", 30) is None
    renewed = a.renew_lease("output:xml", "a", 30)
    assert renewed is not None
    assert renewed.expires_us >= first.expires_us
    assert renewed.epoch == 1
    assert b.release_lease("output:xml", "b") is False
    assert a.release_lease("output:xml", "a") is True
    assert a.leases() == []
    taken = b.acquire_lease("output:xml", "b", 30)
    assert taken is not None
    assert (taken.holder, taken.epoch) == ("b", 2)
    assert a.renew_lease("output:xml", "a", 30) is None
    assert [(lease.name, lease.holder) for lease in a.leases()] == [("output:xml", "b")]


def test_an_expired_lease_is_taken_over(lease_stores: tuple[LeaseStore, LeaseStore]) -> None:
    a, b = lease_stores
    assert a.acquire_lease("supervisor", "a", 0.001) is not None
    import time  # noqa: PLC0415 (the one real wait of this file: past a 1 ms lease)

    time.sleep(0.01)
    assert a.renew_lease("supervisor", "a", 30) is None
    taken = b.acquire_lease("supervisor", "b", 30)
    assert taken is not None
    assert (taken.holder, taken.epoch) == ("b", 2)


def test_nodes_are_listed_with_their_heartbeat(
    lease_stores: tuple[LeaseStore, LeaseStore],
) -> None:
    a, b = lease_stores
    first = a.heartbeat("a", {"pid": 1, "holds": []})
    again = a.heartbeat("a", {"pid": 1, "holds": ["supervisor"]})
    b.heartbeat("b", {"pid": 2})
    assert again.started_us == first.started_us <= again.heartbeat_us
    listed = b.nodes()
    assert [(n.name, dict(n.info)) for n in listed] == [
        ("a", {"pid": 1, "holds": ["supervisor"]}),
        ("b", {"pid": 2}),
    ]


async def test_two_nodes_hold_one_lease_in_turn_on_a_real_store(
    lease_stores: tuple[LeaseStore, LeaseStore],
) -> None:
    """The same code over real threads and a real database: B runs only once A stopped."""
    store_a, store_b = lease_stores
    spans = Spans()
    a = Node(store_a, "a", lease=1.0)
    b = Node(store_b, "b", lease=1.0)
    async with trio.open_nursery() as nursery:
        a_scope = trio.CancelScope()
        nursery.start_soon(_cancellable, a_scope, a.hold, "output:xml", spans.work("a"))
        with trio.fail_after(5):
            while "output:xml" not in a.held:
                await trio.sleep(0.01)
        nursery.start_soon(b.hold, "output:xml", spans.work("b"))
        await trio.sleep(1.2)  # A renews past its first lease; B keeps asking
        assert "output:xml" in a.held
        assert "output:xml" not in b.held
        a_scope.cancel()
        with trio.fail_after(5):
            while "output:xml" not in b.held:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    spans.assert_never_two_at_once()
    assert [who for who, _, _ in sorted(spans.runs, key=lambda r: r[1])] == ["a", "b"]
    assert json.dumps(a.info())


# -- supervision changing hands ---------------------------------------------------------------


class _Troubles:
    def __init__(self) -> None:
        self.written: list[tuple[str, str]] = []

    async def append(self, signals: list[Any], *, troubles: list[tuple[str, int, bool]]) -> Any:
        for signal, (link, _, _) in zip(signals, troubles, strict=True):
            self.written.append((link, signal.cid.qualifier))


async def test_a_node_taking_supervision_over_opens_no_trouble_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Node A opened a trouble for a silent panel and closed another's; B, taking the lease
    over, takes both states from the store: no second trouble, no second restore, and every
    link gets a full deadline from the takeover."""
    sink = _Troubles()
    b = Supervisor(sink, grace=1.5)
    for link in ("account:1", "account:2", "account:3"):
        b.watch(link, 10.0, {"account": link})
    b.seen("account:2")  # traffic B saw itself before it held the lease
    await trio.sleep(20)  # past every deadline, while B did not supervise
    take_over_supervision(
        b, {"account:1": (1, True), "account:2": (2, False), "account:3": (3, False)}
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(b.run)
        await trio.sleep(14)
        assert sink.written == []  # fresh deadlines: 15 s from the takeover
        await trio.sleep(2)
        nursery.cancel_scope.cancel()
    assert sink.written == [("account:2", "E"), ("account:3", "E")]


async def test_the_sole_node_of_a_sqlite_store_delivers_through_a_store_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On SQLite one node holds everything: a store that cannot be written (a full disk) does
    not stop its work, and the lease row is taken again once the store is back."""
    store, spans, net = ClockedLeases(), Spans(), Network()
    a = Node(store, "a", lease=LEASE, call=net, sole=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.hold, "output:xml", spans.work("a"))
        net.down = True
        await trio.sleep(LEASE * 5)
        assert spans.runs == []  # still running
        assert store.leases() == []  # the row expired meanwhile
        net.down = False
        await trio.sleep(LEASE)
        assert [lease.holder for lease in store.leases()] == ["a"]
        nursery.cancel_scope.cancel()
    assert len(spans.runs) == 1
    assert store.leases() == []  # released at the end


# -- the epoch fences late writes --------------------------------------------------------------


def _leases_on(backend: Backend) -> Any:
    """A lease store of its own on the backend's database."""
    if backend.url is not None:
        return PostgresStore(backend.url)
    assert backend.path is not None
    return SqliteLeaseStore(backend.path)


def _stored(store: Any) -> list[str]:
    return [signal.account for _, signal in store.read_after(0, 100)]


def test_a_write_under_a_lease_that_changed_hands_is_refused_and_nothing_of_it_is_stored(
    backend: Backend,
) -> None:
    """A's trouble, link time and cursor move, queued before B took the lease, are refused in
    their own transaction: not the signal, nor its dedupe key, nor any state of it is stored;
    the panel's signal and B's write in the same batch commit."""
    store, leases = backend.open(), _leases_on(backend)
    try:
        store.ensure_output("xml", 0)
        a = leases.acquire_lease("output:xml", "a", 30)
        assert leases.release_lease("output:xml", "a")  # A's lease ended (expired, say)
        b = leases.acquire_lease("output:xml", "b", 30)
        assert (a.epoch, b.epoch) == (1, 2)
        late = JournalWrite(
            signals=[make_signal("7001")],
            keys=["late-key"],
            links=[LinkSeen("account:7001", 5)],
            troubles=[LinkTrouble("account:7001", 5, True)],
            cursors=[CursorUpdate("xml", 40, delivered=40)],
            fence=a.token,
        )
        panel = JournalWrite(signals=[make_signal("7002")], keys=["panel-key"])
        current = JournalWrite(
            signals=[make_signal("7003")],
            cursors=[CursorUpdate("xml", 1, delivered=1)],
            fence=b.token,
        )
        outcomes = store.append([late, panel, current])
        assert [o.refused for o in outcomes] == [True, False, False]
        assert outcomes[0].stored == outcomes[0].duplicates == ()
        assert [s.account for o in outcomes[1:] for _, s in o.stored] == ["7002", "7003"]
        assert _stored(store) == ["7002", "7003"]
        assert "account:7001" not in store.links()
        (state,) = store.output_states(["xml"])
        assert (state.cursor, state.delivered) == (1, 1)
        assert store.verify_journal().mismatch is None  # the chain skips nothing
        # The refused signal's key was not claimed: sent again without the lease, it is new.
        (again,) = store.append([JournalWrite(signals=[make_signal("7001")], keys=["late-key"])])
        assert (len(again.stored), again.duplicates) == (1, ())
    finally:
        store.close()
        leases.close()


def test_each_take_of_a_lease_is_a_new_epoch_even_by_the_same_node(backend: Backend) -> None:
    """A node that takes its lease again (after an outage, or a restart) fences the writes of
    its own earlier hold; a lease that has no row is not held."""
    store, leases = backend.open(), _leases_on(backend)
    try:
        first = leases.acquire_lease("supervisor", "a", 30)
        again = leases.acquire_lease("supervisor", "a", 30)  # unexpired, already ours
        renewed = leases.renew_lease("supervisor", "a", 30)
        assert (first.epoch, again.epoch, renewed.epoch) == (1, 2, 2)
        unknown = FencingToken("output:nowhere", "a", 1)
        outcomes = store.append(
            [
                JournalWrite(signals=[make_signal("7101")], fence=first.token),
                JournalWrite(signals=[make_signal("7102")], fence=unknown),
                JournalWrite(signals=[make_signal("7103")], fence=renewed.token),
            ]
        )
        assert [o.refused for o in outcomes] == [True, True, False]
        assert _stored(store) == ["7103"]
    finally:
        store.close()
        leases.close()


def test_a_write_waits_for_a_takeover_under_way_and_is_refused_once_it_commits(
    pg_store: PostgresStore, pg_url: str
) -> None:
    """On PostgreSQL the check locks the lease row: a takeover not yet committed when A's write
    reads the row makes the write wait, and then refuse (a plain read would see A's row)."""
    a = pg_store.acquire_lease("output:xml", "a", 30)
    assert a is not None
    writer = PostgresStore(pg_url)
    outcome: list[Any] = []
    with psycopg.connect(pg_url) as takeover, psycopg.connect(pg_url, autocommit=True) as watch:
        takeover.execute(
            "UPDATE leases SET holder = 'b', epoch = epoch + 1 WHERE name = 'output:xml'"
        )  # not committed yet
        thread = threading.Thread(
            target=lambda: outcome.extend(
                writer.append([JournalWrite(signals=[make_signal("7201")], fence=a.token)])
            )
        )
        thread.start()
        try:
            for _ in range(500):  # until A's write waits on the row (at most ~5 s)
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%FROM leases%'"
                ).fetchone()
                if (waiting is not None and waiting[0]) or not thread.is_alive():
                    break
                thread.join(0.01)
            takeover.commit()
        finally:
            thread.join(10)
    writer.close()
    assert [o.refused for o in outcome] == [True]
    assert _stored(pg_store) == []


async def test_a_refused_write_stops_the_work_at_once_and_is_logged_once(
    backend: Backend,
) -> None:
    """A takes the output's lease; behind its back B takes it over (A's renewal is seconds
    away). A's next cursor move, made by a task its work started, is refused: the work stops
    at once, before A's appender even hears of it, with one log line and one count, and
    nothing of it is stored."""
    leases, other = _leases_on(backend), _leases_on(backend)
    journal = Journal(backend.open())
    reader = backend.open()
    reader.ensure_output("xml", 0)
    move = trio.Event()
    seen: list[str] = []

    async def deliver(
        lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async def cursor() -> None:
            await move.wait()
            try:
                await journal.append([], cursors=[CursorUpdate("xml", 9, delivered=9)])
                seen.append("saved")
            except JournalError as exc:
                seen.append(type(exc).__name__)
            except trio.Cancelled:
                seen.append("cancelled")
                raise

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cursor)
            task_status.started()

    with capture_logs() as logs:
        counters = Counters()
        a = Node(leases, "a", lease=30.0, counters=counters)
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(a.hold, "output:xml", deliver)
            assert "output:xml" in a.held
            assert other.release_lease("output:xml", "a")
            assert other.acquire_lease("output:xml", "b", 30) is not None
            move.set()
            with trio.fail_after(5):
                while "output:xml" in a.held:
                    await trio.sleep(0.01)
            journal.close()
            nursery.cancel_scope.cancel()
    leases.close()
    other.close()
    try:
        (state,) = reader.output_states(["xml"])
    finally:
        reader.close()
    assert seen == ["cancelled"]
    assert (state.cursor, state.delivered) == (0, 0)
    assert counters.values["lease_writes_refused"] == 1
    events = [e for e in logs if e["event"].startswith("lease_")]
    assert [(e["event"], e.get("epoch")) for e in events] == [
        ("lease_acquired", 1),
        ("lease_write_refused", 1),
    ]


async def test_the_sole_node_of_a_sqlite_store_writes_whatever_its_lease_rows_say(
    tmp_path: Path,
) -> None:
    """On SQLite the node holds every lease (the file is locked to it): its work's writes carry
    no token, so a lease row it could not keep up (a full disk) never refuses them."""
    backend = Backend("sqlite", path=tmp_path / "store.sqlite3")
    leases = _leases_on(backend)
    journal = Journal(backend.open())
    saved = trio.Event()

    async def deliver(
        lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        assert leases.release_lease("output:xml", "a")
        assert leases.acquire_lease("output:xml", "someone", 30) is not None
        await journal.append([make_signal("7301")])
        saved.set()
        await trio.sleep_forever()

    a = Node(leases, "a", lease=30.0, sole=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await nursery.start(a.hold, "output:xml", deliver)
        with trio.fail_after(5):
            await saved.wait()
        assert "output:xml" in a.held
        journal.close()
        nursery.cancel_scope.cancel()
    reader = backend.open()
    try:
        assert _stored(reader) == ["7301"]
    finally:
        reader.close()
        leases.close()
