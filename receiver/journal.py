"""The journal: every signal is committed to the store before anyone acknowledges it.

Rules:
- One writer task drains a bounded channel and commits a whole batch in one worker-thread call,
  ``store.append(writes)`` (one transaction: SQLite WAL ``synchronous=FULL``, PostgreSQL
  synchronous commit); never a thread call per frame. A full channel makes ``append`` wait:
  backpressure, not unbounded memory, when the disk is slow.
- ``append`` returns only after the transaction holding its signals has committed. If the
  commit fails, ``append`` raises ``JournalError`` and the caller must not ACK: the panel retries
  and the dedupe key absorbs the retry.
- A signal carrying a dedupe key that was committed within the window is not stored again: the
  original row counts the repeat, and ``append`` reports it as a duplicate (ACK it again, never
  forward it again). The store decides (a unique index or an index read inside the commit's
  write transaction), not this process's memory: a retry landing on another ingest worker or
  node is caught, memory does not grow with rate x window, and start-up loads nothing.
- Everything else the receiver writes rides in the same writer as typed records (an output's
  cursor, a bridge's state row, link last-seen times and troubles, a retention batch), so
  supervision deadlines survive a restart and no writer waits on another behind the store's
  write lock.
- The store is the journal's own object (``receiver.store.open_store``): its one connection is
  used by the writer only, in a worker thread, or inline (``commit_inline``, on stores that
  can: ``AppendNowStore``) when the write lock is free at the moment of the try. An inline
  commit skips the thread's handoff and wakeups (about a tenth of an ingest worker's CPU at
  10 connections) and never waits for another writer: a held lock sends the batch to the
  thread. An inline commit still blocks the loop for its own fsync, so one slower than
  ``INLINE_SLOW`` (a disk in trouble) sends every commit to the thread for ``INLINE_PAUSE``.
- A write appended by a task running under a lease (``receiver.nodes.Node.hold`` sets
  :data:`UNDER_LEASE` for its work's tasks) carries the hold's fencing token, and the store
  refuses it once the lease changed hands (nothing of it stored). The hold is told first (it
  stops the work, as when the lease is lost), then the appender gets :class:`LeaseLostError`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import attrs
import trio

from protocols.errors import ReceiverError
from protocols.signal import Signal
from receiver.metrics import Counters
from receiver.store.faults import STORE_ERRORS, StoreOutage
from receiver.store.interface import (
    AppendNowStore,
    BridgeStateRow,
    CommitNoticeStore,
    CursorUpdate,
    FencingToken,
    JournalStore,
    JournalWrite,
    LinkSeen,
    LinkTrouble,
    WriteOutcome,
)
from receiver.store.signal_rows import from_us, to_us

__all__ = [
    "INLINE_PAUSE",
    "INLINE_SLOW",
    "NOTICE_FALLBACK_POLL",
    "OTHER_NODES_POLL",
    "UNDER_LEASE",
    "AppendResult",
    "Journal",
    "JournalClosedError",
    "JournalError",
    "LeaseLostError",
    "WorkUnderLease",
    "from_us",
    "to_us",
]


class JournalError(ReceiverError, OSError):
    """The commit failed or its outcome is unknown: do not ACK."""


class JournalClosedError(JournalError):
    """The journal no longer takes appends (the receiver is stopping)."""


class LeaseLostError(JournalError):
    """The write was made under a lease that changed hands: refused, nothing of it stored."""


class WorkUnderLease(Protocol):
    """The hold a task's writes are made under (``receiver.nodes``)."""

    @property
    def token(self) -> FencingToken: ...

    def refused(self) -> None:
        """The store refused a write under this hold (called in the writer's task)."""
        ...


# How often the coordinator reads the store's newest seq (``watch_other_writers``) when no
# notice told it of a commit: its own workers' commits come as notices on their pipes
# (``learn_committed``), other nodes' (PostgreSQL) as the store's commit notices (LISTEN/NOTIFY,
# ``CommitNoticeStore``); the poll only catches a notice lost: any commit reaches the dispatcher
# within about that long.
OTHER_NODES_POLL = 0.5
NOTICE_FALLBACK_POLL = 0.5

UNDER_LEASE: ContextVar[WorkUnderLease | None] = ContextVar("under_lease", default=None)


@attrs.frozen
class AppendResult:
    """What happened to one append: the signals stored, and those absorbed as duplicates."""

    stored: tuple[Signal, ...]
    duplicates: tuple[Signal, ...]

    @property
    def is_duplicate(self) -> bool:
        return bool(self.duplicates) and not self.stored


@attrs.define(eq=False)
class _Request:
    write: JournalWrite
    hold: WorkUnderLease | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    result: AppendResult | None = None
    error: BaseException | None = None


# An inline commit that took longer than this (seconds) blocked the loop too long: commits go
# to the worker thread for the next INLINE_PAUSE seconds.
INLINE_SLOW = 0.02
INLINE_PAUSE = 5.0


class Journal:
    """Group-committing writer over a store's journal."""

    def __init__(
        self,
        store: JournalStore,
        *,
        max_batch: int = 512,
        queue_size: int = 4096,
        counters: Counters | None = None,
        commit_inline: bool = False,
    ) -> None:
        self.store = store
        # Asked for and where the store can: commit on the loop's thread while the lock is free.
        self._append_now = (
            store.append_now if commit_inline and isinstance(store, AppendNowStore) else None
        )
        self._inline_paused_until = float("-inf")
        self.max_batch = max_batch
        self.counters = counters or Counters()
        self._send, self._receive = trio.open_memory_channel[_Request](queue_size)
        self._committed = trio.Event()
        self.last_seq = 0
        # While ``watch_other_writers`` runs: its interval (other writers' commits wake
        # ``wait_committed`` within about that long); None when only our commits do.
        self.others_learnt_within: float | None = None

    # -- writer side ---------------------------------------------------------------------

    def _open(self) -> None:
        self.last_seq = self.store.last_seq()

    def _commit(self, batch: list[_Request]) -> tuple[int, int]:
        """Commit one batch in one transaction (runs in a worker thread); how many signals it
        stored, and the last one's seq (0: none)."""
        return self._settle(batch, self.store.append([req.write for req in batch]))

    def _commit_now(self, batch: list[_Request]) -> tuple[int, int] | None:
        """The batch committed inline, as ``_commit``; None (nothing written) when inline
        commits are off or paused, or another writer holds the lock."""
        if self._append_now is None:
            return None
        now = trio.current_time()
        if now < self._inline_paused_until:
            return None
        outcomes = self._append_now([req.write for req in batch])
        if outcomes is None:
            self.counters.inc("journal_inline_busy")
            return None
        took = trio.current_time() - now
        if took > INLINE_SLOW:
            self._inline_paused_until = now + took + INLINE_PAUSE
            self.counters.inc("journal_inline_paused")
        self.counters.inc("journal_inline_commits")
        return self._settle(batch, outcomes)

    def _settle(self, batch: list[_Request], outcomes: list[WriteOutcome]) -> tuple[int, int]:
        """Each request's result from the batch's outcomes; how many signals were stored, and
        the last one's seq (0: none)."""
        stored = newest = 0
        for req, outcome in zip(batch, outcomes, strict=True):
            if outcome.refused:
                token = req.write.fence
                req.error = LeaseLostError(f"write refused: lease {token} changed hands")
                continue
            if outcome.duplicates or len(outcome.stored) != len(req.write.signals):
                req.result = AppendResult(tuple(s for _, s in outcome.stored), outcome.duplicates)
            else:  # the usual case: everything stored, in order
                req.result = AppendResult(tuple(req.write.signals), ())
            if outcome.stored:
                stored += len(outcome.stored)
                newest = max(newest, outcome.stored[-1][0])
        return stored, newest

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop. Returns once ``close()`` was called and every append was answered."""
        await trio.to_thread.run_sync(self._open)
        task_status.started()
        try:
            async with self._receive:
                while True:
                    try:
                        first = await self._receive.receive()
                    except trio.EndOfChannel:
                        break
                    batch = [first]
                    size = len(first.write.signals)
                    while size < self.max_batch:
                        try:
                            more = self._receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        batch.append(more)
                        size += len(more.write.signals)
                    await self._commit_batch(batch)
        finally:
            self.store.close()

    async def _commit_batch(self, batch: list[_Request]) -> None:
        started = trio.current_time()
        try:
            done = self._commit_now(batch)
            if done is None:
                # Not abandoned on cancel: we must learn the outcome before answering anyone.
                done = await trio.to_thread.run_sync(self._commit, batch)
            stored, newest = done
        except Exception as exc:  # the outcome is unknown to the appenders: no ACK
            self.counters.inc("journal_commit_failed")
            self.counters.inc("store_errors")  # the same fault counter as every component
            for req in batch:
                req.error = JournalError(f"journal commit failed: {exc}")
                req.done.set()
            return
        self.counters.batch(len(batch))
        self.counters.observe("commit_seconds", trio.current_time() - started)
        self.counters.inc("journal_signals_stored", stored)
        for req in batch:
            if req.hold is not None and isinstance(req.error, LeaseLostError):
                req.hold.refused()  # the work stops before its appender hears of it
            req.done.set()
        if stored:
            self.last_seq = max(self.last_seq, newest)
            self._wake()

    def _wake(self) -> None:
        self._committed.set()
        self._committed = trio.Event()

    def close(self) -> None:
        """Stop accepting appends; the writer commits what is queued, then ``run`` returns."""
        self._send.close()

    # -- caller side ---------------------------------------------------------------------

    async def append(
        self,
        signals: Sequence[Signal],
        *,
        keys: Sequence[str | None] | None = None,
        links: Iterable[tuple[str, int]] = (),
        troubles: Iterable[tuple[str, int, bool]] = (),
        cursors: Sequence[CursorUpdate] = (),
        bridge_states: Sequence[BridgeStateRow] = (),
        prune_through: int | None = None,
        console: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> AppendResult:
        """Commit ``signals`` (and the state that rides with them); return once it is durable.

        ``keys`` are dedupe keys, one per signal (None: never a duplicate). ``links`` are
        (link, last_seen_us) pairs to touch; ``troubles`` are (link, seen_us, open) updates.
        ``cursors`` (an output's delivery state), ``bridge_states``, ``prune_through`` (a
        retention batch) and ``console`` (the console's SQLite writes) commit in the same
        transaction: every write to the store goes through this one writer.
        """
        hold = UNDER_LEASE.get()
        write = JournalWrite(
            signals=signals,
            keys=keys if keys is not None else (),
            links=[LinkSeen(link, seen) for link, seen in links],
            troubles=[LinkTrouble(link, seen, bool(open_)) for link, seen, open_ in troubles],
            cursors=cursors,
            bridge_states=bridge_states,
            prune_through=prune_through,
            console=console,
            fence=hold.token if hold is not None else None,
        )
        req = _Request(write, hold)
        await self._submit(req)
        assert req.result is not None
        return req.result

    async def _submit(self, req: _Request) -> None:
        try:
            await self._send.send(req)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise JournalClosedError("journal is closed") from exc
        await req.done.wait()
        if req.error is not None:
            raise req.error

    async def wait_committed(self) -> None:
        """Wait until the next commit that stores at least one signal (ours, or another
        writer's once learnt: ``learn_committed``, ``watch_other_writers``)."""
        await self._committed.wait()

    def learn_committed(self, seq: int) -> None:
        """Another writer committed signals up to ``seq`` (an ingest worker says so on its
        pipe): wake ``wait_committed`` as for a commit of our own. ``last_seq`` is then the
        newest seq known committed, whoever wrote it; a seq already known wakes nobody."""
        if seq > self.last_seq:
            self.last_seq = seq
            self._wake()

    def _hear_commits(
        self,
        wait: Callable[[float], int],
        interval: float,
        token: trio.lowlevel.TrioToken,
        outage: StoreOutage,
    ) -> None:
        """In a worker thread: the store's commit notices (``wait``), each seq newer than any
        known handed to the event loop without waiting for it; a failure of the store ends
        the thread (``watch_other_writers`` waits the outage out and starts another)."""
        while True:
            newest = wait(interval)
            # Racy reads, on purpose: a seq another notice (a worker's, on its pipe) already
            # told is not handed over; the worst a race costs is one needless hand-over.
            if newest > self.last_seq or outage.failing:
                try:
                    token.run_sync_soon(self._heard, newest, outage)
                except trio.RunFinishedError:
                    return

    def _heard(self, newest: int, outage: StoreOutage) -> None:
        outage.succeeded()
        self.learn_committed(newest)

    async def watch_other_writers(self, store: JournalStore, interval: float = 0.5) -> None:
        """Wake ``wait_committed`` when other processes commit signals: the coordinator's
        dispatcher then reads after its cursors as when it shares a journal. A store that tells
        its commits (``CommitNoticeStore``: PostgreSQL, every node's) wakes it at each notice;
        the store's newest seq is read when no notice came for ``interval``, the fallback for a
        notice lost (a dropped connection, the ingest workers' pipe notices on one SQLite
        file), so any commit is learnt within about that long. ``store`` is a store object of
        its own (the writer's is the writer thread's)."""
        outage = StoreOutage("journal", "watch_other_writers", counters=self.counters)
        self.others_learnt_within = interval
        told = store.wait_commits if isinstance(store, CommitNoticeStore) else None
        try:
            while True:
                try:
                    if told is not None:
                        # One thread call for as long as the store answers, not one per
                        # notice; left to finish on cancel (the store's close ends its wait).
                        token = trio.lowlevel.current_trio_token()
                        hear = (told, interval, token, outage)
                        await trio.to_thread.run_sync(
                            self._hear_commits, *hear, abandon_on_cancel=True
                        )
                        return  # the run is over
                    await trio.sleep(interval)
                    newest = await trio.to_thread.run_sync(store.last_seq)
                except STORE_ERRORS as exc:  # the database is away: wait it out, never end
                    outage.failed(exc)
                    await outage.wait()
                    continue
                outage.succeeded()
                self.learn_committed(newest)
        finally:
            self.others_learnt_within = None
            store.close()
