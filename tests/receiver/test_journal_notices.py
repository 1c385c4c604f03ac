"""How the coordinator learns the ingest workers' commits: each worker tells it on its pipe
(real worker processes, the real pipe), and a slow poll of the store catches a commit no
notice told (another writer, a notice lost)."""

from __future__ import annotations

import multiprocessing
import sys
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from protocols import dc09
from protocols.errors import Reply
from protocols.signal import Signal
from receiver.config import Config, parse_config
from receiver.dispatcher import OutputCursor
from receiver.journal import NOTICE_FALLBACK_POLL, Journal
from receiver.metrics import Counters
from receiver.service import worker_main
from receiver.store.interface import JournalWrite
from receiver.store.memory import MemoryStore
from receiver.store.sqlite_store import SqliteStore
from receiver.workers import (
    WORKER_BOUND,
    WORKER_COMMITTED,
    WORKER_GO,
    CommitNotices,
    WorkerPool,
    report_to_coordinator,
)
from tests.adapters.test_sentinel_package import make_signal
from tests.receiver.conftest import write_config
from tests.receiver.test_dc09_service import read_replies, sia

# Commits the chatty worker makes, each of one signal.
_COMMITS = 200


async def test_a_notice_of_a_newer_commit_wakes_the_waiters_and_a_known_one_does_not() -> None:
    """``learn_committed`` (a worker's notice, handed over by the pool) wakes whoever waits
    for commits, as the journal's own commit does; a seq already known wakes nobody."""
    journal = Journal(MemoryStore())
    woken: list[int] = []

    async def waiter() -> None:
        while True:
            await journal.wait_committed()
            woken.append(journal.last_seq)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        journal.learn_committed(7)
        await trio.testing.wait_all_tasks_blocked()
        journal.learn_committed(7)  # told twice (a notice, then the poll): one wake
        journal.learn_committed(3)
        await trio.testing.wait_all_tasks_blocked()
        journal.learn_committed(9)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert woken == [7, 9]


class Recording:
    """An output that ACKs everything and remembers what it got."""

    name = "recording"
    connected = True
    last_error: str | None = None

    def __init__(self) -> None:
        self.got: list[str] = []
        self.handed = trio.Event()

    async def deliver(self, signal: Signal, package_id: str) -> None:
        self.got.append(package_id)
        self.handed.set()

    async def aclose(self) -> None:
        pass


async def test_a_commit_no_notice_told_is_delivered_within_the_fallback_poll(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """Another writer on the same SQLite file commits an alarm and no notice comes (another
    node, or a notice lost on a full pipe): the coordinator's poll of the store finds it and
    the dispatcher delivers it once the fallback interval has passed (the clock moves only
    when the test moves it)."""
    path = tmp_path / "receiver.sqlite3"
    journal = Journal(SqliteStore(path))
    output = Recording()
    cursor = OutputCursor(output, SqliteStore(path), journal)
    other = SqliteStore(path)  # an ingest worker's store: it commits without this journal
    with trio.fail_after(60):  # a real-time bound: the mock clock moves only when told
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(cursor.run)
            nursery.start_soon(journal.watch_other_writers, SqliteStore(path), NOTICE_FALLBACK_POLL)
            await trio.to_thread.run_sync(
                other.append, [JournalWrite(signals=[make_signal(id="other-1")])]
            )
            mock_clock.jump(NOTICE_FALLBACK_POLL)
            while not output.got:
                await output.handed.wait()
            assert output.got == ["other-1"]
            assert trio.current_time() == NOTICE_FALLBACK_POLL
            nursery.cancel_scope.cancel()
    other.close()


def chatty_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """A stand-in worker: once told go, it commits ``_COMMITS`` signals one at a time while
    it reports its counters every millisecond, both on its pipe."""
    ready.send((WORKER_BOUND, 0))
    assert ready.recv() == WORKER_GO
    ready.send((config.dc09.address[1], None, sys.getswitchinterval()))

    async def work() -> None:
        journal = Journal(MemoryStore())
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            nursery.start_soon(report_to_coordinator, ready, journal, journal.counters, 0.001)
            for n in range(_COMMITS):
                await journal.append([make_signal(id=f"c-{n:04d}")])
                await trio.sleep(0.0005 if n % 10 == 0 else 0)
            await trio.sleep(60)  # until the pool's SIGTERM

    trio.run(work)


@pytest.mark.slow
async def test_a_workers_notices_and_counters_share_its_pipe_untorn(tmp_path: Path) -> None:
    """A real worker process commits 200 times while sending its counters every millisecond
    on the same pipe: the coordinator hears each commit's seq in order up to the last, and
    the counters as well, with no message torn or unknown."""
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    told: list[int] = []
    heard = trio.Event()

    def on_commit(seq: int) -> None:
        told.append(seq)
        if seq == _COMMITS:
            heard.set()

    pool = WorkerPool(config, 1, target=chatty_worker, on_commit=on_commit)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            with trio.fail_after(60):
                await heard.wait()
                while pool.counters().values["journal_signals_stored"] < _COMMITS:
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert told == sorted(set(told))
    assert told[-1] == _COMMITS
    assert not [e for e in logs if e["event"] == "worker_report_unknown"]


@pytest.mark.slow
async def test_a_real_worker_tells_the_coordinator_each_commit_it_acked(tmp_path: Path) -> None:
    """``receiver serve``'s own worker (``worker_main``) ACKs a panel's frames after its
    commit and tells its coordinator the seq committed, so the dispatcher reads at once
    rather than at its next poll of the store."""
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    told: list[int] = []
    pool = WorkerPool(config, 1, target=worker_main, on_commit=told.append)
    async with trio.open_nursery() as nursery:
        dc09_port, _ = await nursery.start(pool.run)
        with trio.fail_after(60):
            stream = await trio.open_tcp_stream("127.0.0.1", dc09_port)
            replies: list[bytes] = []
            for n in range(1, 4):
                await stream.send_all(sia(n, account="7001", zone=f"{n:03d}"))
                replies += await read_replies(stream, 1, timeout=30)
            assert [dc09.decode_reply(r).kind for r in replies] == [Reply.ACK] * 3
            store = SqliteStore(config.store.path)
            newest = await trio.to_thread.run_sync(store.last_seq)
            store.close()
            while not told or told[-1] < newest:
                await trio.sleep(0.01)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert newest >= 3
    assert told[-1] == newest


def test_a_full_pipe_drops_the_notice_and_never_waits() -> None:
    """A coordinator far behind (its end of the pipe unread): notices go until the pipe is
    full, then each is dropped and counted at once, never waited for (this test would hang).
    Every notice that went is whole and in order; once the coordinator has read, they go
    again."""
    coordinator, worker = multiprocessing.get_context("spawn").Pipe(duplex=True)
    counters = Counters()
    notices = CommitNotices(worker, counters)
    sent = 0
    while not counters.values["commit_notices_dropped"]:
        assert notices.send(sent + 1)
        sent += 1
    assert notices.send(sent + 1)  # dropped again, still at once
    assert counters.values["commit_notices_dropped"] == 2
    received = []
    while coordinator.poll(0):
        received.append(coordinator.recv())
    assert received == [(WORKER_COMMITTED, seq) for seq in range(1, sent)]
    assert notices.send(sent + 2)
    assert coordinator.recv() == (WORKER_COMMITTED, sent + 2)
    notices.close()
    worker.close()
    coordinator.close()
