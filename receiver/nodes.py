"""Several receiver nodes on one store: each node's membership, and work run under a lease.

Rules:
- A node heartbeats every ``heartbeat`` seconds with what it holds, its listeners, its pid and
  its version (``receiver nodes`` shows them). A failed heartbeat is logged and retried; it never
  stops the node.
- :meth:`Node.hold` runs a piece of work (an output's dispatcher, the supervisor) only while
  this node holds the work's lease. It takes the lease when it is free or expired, renews it
  every ``lease * RENEW_FRACTION`` seconds, and cancels the work *before* the lease can expire
  on the database's clock when a renewal is not confirmed in time (the store unreachable or
  slow, the lease taken): the database sets the expiry at ``ttl`` after it ran our request,
  which is never before we sent it, so our deadline is the moment we sent the last confirmed
  request plus ``lease * SAFE_FRACTION``. Two nodes therefore never run one lease's work at
  once, whatever the network does, as long as the nodes' monotonic clocks run at the same rate.
- A node that does not hold a lease asks for it again every ``lease * RETRY_FRACTION`` seconds:
  a lease left by a node that died is taken over within ``lease`` plus that.
- On a clean shutdown (the work cancelled from outside) the lease is released at once, so
  another node takes over without waiting for the expiry.
- The lease's epoch, with the holder, is the fencing token of one hold: every journal write
  the work makes carries it (``receiver.journal.UNDER_LEASE``), and the store refuses it once
  the lease changed hands, even when it was queued before. A refused write is logged once per
  hold (``lease_write_refused``) and counted (``lease_writes_refused``), and the work stops at
  once, as when the lease is lost.
- A failed lease request (the store unreachable) is logged at its first failure, then once per
  ``FAILURE_LOG_INTERVAL`` per lease with the failures since the last line, and its recovery
  once (``lease_request_recovered``); the requests themselves keep their pace. Heartbeats the
  same.
- On SQLite a single node simply holds every lease (the same code path): it is the store's only
  receiver (``serve`` locks the file), so it is ``sole``: its work runs whatever the lease rows
  say, and they are written on a best-effort basis, for ``receiver nodes``; its writes carry no
  token (nobody can take a lease from it). A store that cannot be written (a full disk) must
  not stop deliveries there.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final, Protocol, TypeVar

import structlog
import trio

from receiver import __version__
from receiver.config import StoreConfig
from receiver.journal import UNDER_LEASE
from receiver.metrics import Counters
from receiver.store.faults import STORE_ERRORS
from receiver.store.interface import FencingToken, Lease, LeaseStore, NodeBeat
from receiver.store.lease_sql import SqliteLeaseStore
from receiver.supervisor import Supervisor

DEFAULT_LEASE: Final = 10.0
RENEW_FRACTION: Final = 1 / 3  # renew three times per lease
SAFE_FRACTION: Final = 0.8  # stop the work this far into an unconfirmed lease
RETRY_FRACTION: Final = 0.25  # ask again for a lease someone else holds
RELEASE_TIMEOUT: Final = 2.0  # a clean shutdown waits this long at most to release a lease
HEARTBEAT_INTERVAL: Final = 3.0
FAILURE_LOG_INTERVAL: Final = 30.0  # a failing request is logged at most this often

T = TypeVar("T")


class StoreCall(Protocol):
    """How a store call runs: in a worker thread (the default), inline in fast tests."""

    async def __call__(self, call: Callable[[], T]) -> T: ...


async def in_thread(call: Callable[[], T]) -> T:
    """A store call in a worker thread; a cancel abandons it (the work must stop on time even
    when the database does not answer)."""
    return await trio.to_thread.run_sync(call, abandon_on_cancel=True)


def output_lease(name: str) -> str:
    """The lease that lets one node deliver output ``name``."""
    return f"output:{name}"


SUPERVISOR_LEASE: Final = "supervisor"


class LeasedWork(Protocol):
    """Work run under a lease: ``nursery.start``-able, given the lease it runs under."""

    def __call__(self, lease: Lease, *, task_status: trio.TaskStatus[None]) -> Awaitable[None]: ...


class FailureLog:
    """The log of one repeated request (a lease's, the heartbeat): its first failure, then one
    line per ``FAILURE_LOG_INTERVAL`` with the failures since the last line, its recovery once."""

    def __init__(self, log: Any, failed: str, recovered: str, **fields: Any) -> None:
        self.log = log.bind(**fields)
        self.failed_event, self.recovered_event = failed, recovered
        self.failures = 0  # since the last success
        self.unlogged = 0  # since the last line
        self.since = 0.0
        self.next_line = -float("inf")

    def failed(self, error: BaseException, **fields: Any) -> None:
        now = trio.current_time()
        if not self.failures:
            self.since = now
        self.failures += 1
        self.unlogged += 1
        if now < self.next_line:
            return
        self.log.warning(self.failed_event, error=str(error), failures=self.unlogged, **fields)
        self.unlogged = 0
        self.next_line = now + FAILURE_LOG_INTERVAL

    def succeeded(self) -> None:
        if not self.failures:
            return
        failed_for = round(trio.current_time() - self.since, 1)
        self.log.info(self.recovered_event, failures=self.failures, failed_for=failed_for)
        self.failures = self.unlogged = 0
        self.next_line = -float("inf")


class _Hold:
    """One hold of a lease, as its work's writes carry it (``receiver.journal.WorkUnderLease``):
    a refused write stops the work at once."""

    def __init__(self, node: Node, lease: Lease, scope: trio.CancelScope) -> None:
        self.node = node
        self.lease = lease
        self.scope = scope
        self.refusals = 0

    @property
    def token(self) -> FencingToken:
        return self.lease.token

    def refused(self) -> None:
        self.node.counters.inc("lease_writes_refused")
        self.refusals += 1
        if self.refusals == 1:
            self.node.log.warning(
                "lease_write_refused",
                lease=self.lease.name,
                epoch=self.lease.epoch,
                why="the lease changed hands; the work under it stops",
            )
        self.scope.cancel()


class _FirstStart:
    """Passes the first ``started()`` on to the holder's own starter; later ones do nothing
    (the work starts again each time the lease comes back)."""

    def __init__(self, task_status: trio.TaskStatus[None]) -> None:
        self._task_status: trio.TaskStatus[None] | None = task_status

    def started(self, value: None = None) -> None:
        if self._task_status is not None:
            task_status, self._task_status = self._task_status, None
            task_status.started()


class Node:
    """This receiver node: its name, its heartbeat, and the leases it holds right now."""

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        *,
        lease: float = DEFAULT_LEASE,
        heartbeat: float = HEARTBEAT_INTERVAL,
        listeners: Mapping[str, str] | None = None,
        call: StoreCall = in_thread,
        sole: bool = False,
        counters: Counters | None = None,
    ) -> None:
        if not lease > 0:
            raise ValueError(f"lease must be more than 0, got {lease!r}")
        self.store = store
        self.name = name
        self.lease = lease
        self.heartbeat_interval = heartbeat
        self.listeners: dict[str, str] = dict(listeners or {})
        self.held: dict[str, Lease] = {}
        self.call = call
        self.sole = sole
        self.counters = counters if counters is not None else Counters()
        self.log = structlog.get_logger("receiver.nodes").bind(node=name)
        self.last_beat: NodeBeat | None = None
        self._beat_failures = FailureLog(
            self.log, "node_heartbeat_failed", "node_heartbeat_recovered"
        )
        self._lease_failures: dict[str, FailureLog] = {}

    # -- membership -------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What the heartbeat says about this node."""
        return {
            "pid": os.getpid(),
            "version": __version__,
            "listeners": dict(self.listeners),
            "holds": sorted(self.held),
        }

    async def beat(self) -> NodeBeat | None:
        """One heartbeat; None (logged) when the store did not take it."""
        info = self.info()
        try:
            beat = await self.call(lambda: self.store.heartbeat(self.name, info))
        except STORE_ERRORS as exc:
            self._beat_failures.failed(exc)
            return None
        self._beat_failures.succeeded()
        self.last_beat = beat
        return beat

    async def run_heartbeat(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Heartbeat until cancelled (the first one before ``started``)."""
        await self.beat()
        task_status.started()
        while True:
            await trio.sleep(self.heartbeat_interval)
            await self.beat()

    # -- leases -----------------------------------------------------------------------------

    async def hold(
        self,
        name: str,
        work: LeasedWork,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run ``work`` whenever, and only while, this node holds lease ``name``; until
        cancelled. ``work(lease, task_status=...)`` gets the lease (its ``epoch`` is a fencing
        token). Work that returns ends the hold (the lease is released); work that raises
        releases it too.

        Started (``nursery.start``) once the first request was answered: when the lease was
        refused, or when the work it runs says it started."""
        retry = self.lease * RETRY_FRACTION
        starting = _FirstStart(task_status)
        try:
            if self.sole:
                await self._hold_alone(name, work, starting)
                return
            while True:
                sent = trio.current_time()
                lease = await self._ask(name, acquire=True)
                if lease is None:
                    starting.started()
                    await trio.sleep(retry)
                    continue
                finished = await self._run_holding(name, lease, sent, work, starting)
                if finished:
                    return
                await trio.sleep(retry)
        finally:
            starting.started()

    async def _ask(self, name: str, *, acquire: bool) -> Lease | None:
        """Acquire or renew; None when refused or when the store failed (logged)."""
        store, holder, ttl = self.store, self.name, self.lease
        failures = self._lease_failures.get(name)
        if failures is None:
            failures = self._lease_failures[name] = FailureLog(
                self.log, "lease_request_failed", "lease_request_recovered", lease=name
            )
        try:
            if acquire:
                lease = await self.call(lambda: store.acquire_lease(name, holder, ttl))
            else:
                lease = await self.call(lambda: store.renew_lease(name, holder, ttl))
        except STORE_ERRORS as exc:
            failures.failed(exc, request="acquire" if acquire else "renew")
            return None
        failures.succeeded()
        return lease

    async def _run_holding(
        self, name: str, lease: Lease, sent: float, work: LeasedWork, starting: _FirstStart
    ) -> bool:
        """Run ``work`` while renewals are confirmed in time; True when the work ended by
        itself (or the hold was cancelled from outside), False when the lease was lost."""
        self.held[name] = lease
        self.log.info("lease_acquired", lease=name, epoch=lease.epoch)  # never when sole
        deadline = sent + self.lease * SAFE_FRACTION
        finished = False
        lost_why = ""
        hold: _Hold | None = None
        try:
            async with trio.open_nursery() as nursery:
                hold = _Hold(self, lease, nursery.cancel_scope)

                async def run_work() -> None:
                    nonlocal finished
                    assert hold is not None
                    UNDER_LEASE.set(hold)  # this task's (and its children's) writes carry it
                    await work(lease, task_status=starting)
                    finished = True
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run_work)
                while True:
                    await trio.sleep_until(min(sent + self.lease * RENEW_FRACTION, deadline))
                    if trio.current_time() >= deadline:
                        lost_why = "renewal not confirmed in time"
                        break
                    asked = trio.current_time()
                    renewed: Lease | None = None
                    with trio.move_on_at(deadline):
                        renewed = await self._ask(name, acquire=False)
                    if renewed is None:
                        lost_why = (
                            "renewal not confirmed in time"
                            if trio.current_time() >= deadline
                            else "renewal refused or failed"
                        )
                        break
                    sent, deadline = asked, asked + self.lease * SAFE_FRACTION
                    self.held[name] = renewed
                nursery.cancel_scope.cancel()
        except BaseException:
            self.held.pop(name, None)
            await self._release(name)
            raise
        self.held.pop(name, None)
        starting.started()  # lost before the work said so: the starter waits no longer
        if finished:
            await self._release(name)
            return True
        if hold is None or not hold.refusals:  # a refused write said it already
            self.log.warning("lease_lost", lease=name, why=lost_why)
        return False

    async def _hold_alone(self, name: str, work: LeasedWork, starting: _FirstStart) -> None:
        """The only node of its store: run the work, keep the lease row up when the store
        takes it (taking it again after an outage), release it at the end."""
        lease = await self._ask(name, acquire=True)
        self.held[name] = lease or Lease(name, self.name, 0, 0)
        try:
            async with trio.open_nursery() as nursery:

                async def run_work() -> None:
                    await work(self.held[name], task_status=starting)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(run_work)
                while True:
                    await trio.sleep(self.lease * RENEW_FRACTION)
                    renewed = await self._ask(name, acquire=False)
                    if renewed is None:
                        renewed = await self._ask(name, acquire=True)
                    if renewed is not None:
                        self.held[name] = renewed
        finally:
            self.held.pop(name, None)
            await self._release(name)

    async def _release(self, name: str) -> None:
        """Give the lease up at once (shielded: this runs while being cancelled)."""
        store, holder = self.store, self.name
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
            try:
                await self.call(lambda: store.release_lease(name, holder))
            except STORE_ERRORS as exc:
                self.log.warning("lease_release_failed", lease=name, error=str(exc))
                return
            # The sole node of a SQLite store holds everything: no news worth a line.
            (self.log.debug if self.sole else self.log.info)("lease_released", lease=name)


class ClosableLeaseStore(LeaseStore, Protocol):
    def close(self) -> None: ...


def open_lease_store(config: StoreConfig, *, create: bool = True) -> ClosableLeaseStore:
    """The leases and heartbeats of the configured store: PostgreSQL (``[store] url``, several
    nodes) or the SQLite file (one node holds everything)."""
    if config.url:
        from receiver.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(config.url)
    return SqliteLeaseStore(config.path, create=create)


def take_over_supervision(supervisor: Supervisor, stored: Mapping[str, tuple[int, bool]]) -> None:
    """The supervisor's lease came (back) to this node: another node may have opened or closed
    troubles meanwhile, and they are in the store (``stored``: each link's last-seen time and
    trouble state). Every watched link takes its stored trouble state and a full fresh
    deadline, as at a start: a trouble already open is never opened twice, a restore already
    written is not written again, and no link is called silent for the time this node did not
    watch it."""
    now = trio.current_time()
    for key, link in supervisor.links.items():
        trouble_open = stored.get(key, (0, False))[1]
        link.restore_due = link.restore_due and trouble_open
        link.trouble_open = trouble_open
        link.deadline = now + link.interval * supervisor.grace
