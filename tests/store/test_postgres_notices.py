"""Other nodes' commits reach the coordinator by LISTEN/NOTIFY (migration 0014, the store's
``wait_commits``, ``Journal.watch_other_writers``), on the real throwaway cluster: a commit
wakes the watch at once, not at the fallback poll (set to an hour here, so only a notice can
wake it); a commit no notice told is still learnt by the poll; a listening connection the
server terminates is opened again."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
import trio

from receiver.journal import Journal
from receiver.store.interface import JournalWrite, LinkSeen, StoreError
from receiver.store.memory import MemoryStore
from receiver.store.postgres.store import PostgresStore
from tests.store.test_postgres_store import make_signal

HOUR = 3600.0
# Generous bounds on the real clock for what takes milliseconds (the machine is shared).
BOUND = 60.0
LISTENERS = (
    "SELECT pid FROM pg_stat_activity "
    "WHERE application_name = 'receiver commit notices' AND datname = current_database()"
)


def _commit(url: str, count: int = 1) -> int:
    """Another node appends ``count`` signals in one transaction; the newest seq."""
    node = PostgresStore(url)
    try:
        [outcome] = node.append(
            [JournalWrite(signals=[make_signal(seq=f"{n:04d}") for n in range(count)])]
        )
    finally:
        node.close()
    return outcome.stored[-1][0]


def _listeners(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(LISTENERS)]


async def _learnt(journal: Journal, seq: int) -> None:
    """Until the journal knows ``seq`` committed (woken by ``wait_committed``)."""
    with trio.fail_after(BOUND):
        while journal.last_seq < seq:
            await journal.wait_committed()


@contextmanager
def _no_notices(url: str) -> Iterator[None]:
    """Commits that tell nobody (as if every notice were lost), for the fallback's test."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE signals DISABLE TRIGGER signals_committed")
        try:
            yield
        finally:
            conn.execute("ALTER TABLE signals ENABLE TRIGGER signals_committed")


def test_one_append_is_one_notice_with_its_newest_seq(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as listener:
        listener.execute("LISTEN journal_committed")
        newest = _commit(pg_url, count=3)
        state = PostgresStore(pg_url)
        try:  # a commit that stores no signal tells nobody
            state.append([JournalWrite(signals=[], links=[LinkSeen("panel:1234", 5)])])
        finally:
            state.close()
        told = [n.payload for n in listener.notifies(timeout=BOUND, stop_after=1)]
        told += [n.payload for n in listener.notifies(timeout=0.5)]
    assert told == [str(newest)]


async def test_another_nodes_commit_wakes_the_watch_without_waiting_for_the_poll(
    pg_url: str,
) -> None:
    """Before, the watch read the store every interval only: with an hour's interval it never
    learnt either commit within the bound."""
    first = _commit(pg_url)
    journal = Journal(MemoryStore())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.watch_other_writers, PostgresStore(pg_url), HOUR)
        await _learnt(journal, first)  # read once it listens: nothing committed before is missed
        second = await trio.to_thread.run_sync(_commit, pg_url)
        await _learnt(journal, second)  # told by the notice: the poll is an hour away
        nursery.cancel_scope.cancel()
    assert journal.last_seq == second


async def test_a_commit_no_notice_told_is_learnt_by_the_fallback_poll(pg_url: str) -> None:
    journal = Journal(MemoryStore())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.watch_other_writers, PostgresStore(pg_url), 0.2)
        await _learnt(journal, await trio.to_thread.run_sync(_commit, pg_url))  # listening
        with _no_notices(pg_url):
            silent = await trio.to_thread.run_sync(_commit, pg_url)
            await _learnt(journal, silent)
        nursery.cancel_scope.cancel()
    assert journal.last_seq == silent


async def test_the_watch_listens_again_after_the_server_ends_its_connection(pg_url: str) -> None:
    """The listening backend terminated (pg_terminate_backend): the watch connects again,
    reads what was committed while nobody listened, and is told again."""
    journal = Journal(MemoryStore())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.watch_other_writers, PostgresStore(pg_url), HOUR)
        await _learnt(journal, await trio.to_thread.run_sync(_commit, pg_url))  # listening
        with trio.fail_after(BOUND):
            while not (before := _listeners(pg_url)):
                await trio.sleep(0.05)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (before[0],))
        during = await trio.to_thread.run_sync(_commit, pg_url)  # in the gap, or told after
        await _learnt(journal, during)
        with trio.fail_after(BOUND):
            while not (after := _listeners(pg_url)):
                await trio.sleep(0.05)
        assert after != before
        told = await trio.to_thread.run_sync(_commit, pg_url)
        await _learnt(journal, told)  # the new connection listens: told, not polled
        nursery.cancel_scope.cancel()
    # pg_terminate_backend only signals the backend: the wait that sees it go fails (one store
    # error counted), or, when the connection is found closed as the next wait begins, is
    # reopened there at once (none). Never more than the one loss.
    assert journal.counters.snapshot().get("store_errors", 0) <= 1


def test_close_during_a_wait_ends_the_wait_and_its_connection(pg_url: str) -> None:
    """A wait its caller left (a cancelled trio task) closes the connection itself once
    ``close()`` asked, within a slice of its wait, not an hour later."""
    store = PostgresStore(pg_url)
    assert store.wait_commits(0) == 0  # listening
    outcome: list[BaseException | int] = []

    def wait() -> None:
        try:
            outcome.append(store.wait_commits(HOUR))
        except StoreError as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    for _ in range(int(BOUND / 0.01)):  # until it waits (holding its lock); bounded
        if store._notices_lock.locked():
            break
        waiting.join(0.01)
    store.close()
    waiting.join(BOUND)
    if waiting.is_alive():
        pytest.fail("the wait went on after close()")
    assert [type(o) for o in outcome] == [StoreError]
    assert _listeners(pg_url) == []
