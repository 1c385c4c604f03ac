"""The receiver service: one nursery holding the journal writer, the registry view, the
supervisor, the dispatcher and the listeners.

Roles (``[ingest] workers``): with one worker everything runs in this process (``all``).
With more, ``receiver serve`` is the ``coordinator`` (dispatcher, supervisor fed from the
store's link times, registry refresh, and the worker processes) and each worker
process runs the listeners and its own journal writer (``worker``); see ``receiver.workers``.

Shutdown order (SIGINT/SIGTERM or ``request_shutdown``): stop accepting and close connections
(a frame already being committed still gets its ACK: that section is shielded), stop the
supervisor and the dispatcher, then close the journal, which commits what is queued.
"""

from __future__ import annotations

import signal as os_signal
import sqlite3
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Literal

import attrs
import structlog
import trio

from adapters.output import build_output
from receiver.bridge_listener import BridgeIntake, BridgeServer, watch_bridge
from receiver.bridge_state import BridgeStateStore
from receiver.config import Config
from receiver.dc09_listener import Dc09Intake, Dc09Server, account_link
from receiver.dispatcher import Dispatcher
from receiver.journal import Journal, load_links
from receiver.logs import configure
from receiver.metrics import Counters
from receiver.registry_index import RegistryIndex
from receiver.store.sqlite import connect
from receiver.supervisor import LinkActivity, Supervisor
from receiver.workers import WorkerPool, die_with_parent

Role = Literal["all", "coordinator", "worker"]


class RegistryView:
    """The in-memory registry the hot path reads, refreshed when the store's counter moves."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self.index: RegistryIndex | None = None

    def _open(self) -> RegistryIndex:
        self._conn = connect(self.path, check_same_thread=False)
        return RegistryIndex.load(self._conn)

    async def open(self) -> None:
        self.index = await trio.to_thread.run_sync(self._open)

    def current(self) -> RegistryIndex:
        assert self.index is not None
        return self.index

    @property
    def connection(self) -> sqlite3.Connection:
        assert self._conn is not None
        return self._conn

    def links(self) -> dict[str, tuple[int, bool]]:
        assert self._conn is not None
        return load_links(self._conn)

    async def run(self, on_change: Callable[[RegistryIndex], None], interval: float = 1.0) -> None:
        assert self._conn is not None
        assert self.index is not None
        conn = self._conn
        while True:
            await trio.sleep(interval)
            fresh = await trio.to_thread.run_sync(self.index.refresh_if_changed, conn)
            if fresh is not self.index:
                self.index = fresh
                on_change(fresh)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


@attrs.define
class Ports:
    dc09: int
    bridge: int | None = None


class Service:
    def __init__(
        self, config: Config, *, role: Role = "all", json_logs: bool | None = None
    ) -> None:
        self.config = config
        self.role = role
        self.json_logs = json_logs
        self.counters = Counters()
        self.log = structlog.get_logger("receiver")
        self.journal = Journal(
            config.store.path,
            max_batch=config.journal.max_batch,
            queue_size=config.journal.queue_size,
            duplicate_window=config.dc09.duplicate_window,
            counters=self.counters,
        )
        self.registry = RegistryView(config.store.path)
        self.supervisor = Supervisor(
            self.journal,
            grace=config.supervision.grace_factor,
            trouble_code=config.supervision.trouble_code,
        )
        self.activity: LinkActivity | None = None
        self.pool: WorkerPool | None = None  # the coordinator's ingest workers
        self._shutdown = trio.Event()
        self.ports: Ports | None = None

    def request_shutdown(self) -> None:
        self._shutdown.set()

    def supervise_accounts(self, index: RegistryIndex, stored: dict[str, tuple[int, bool]]) -> None:
        """Watch every account with a supervision interval; forget accounts that lost it."""
        wanted: set[str] = set()
        for account in index.accounts():
            if account.supervision is None:
                continue
            link = account_link(account)
            wanted.add(link)
            subject: dict[str, Any] = {
                "account": account.number,
                "account_id": account.account_id,
                "effective_account": account.effective,
                "station": account.station,
                "line": account.line,
                "site_id": account.site_id,
                "site_name": account.site_name,
            }
            self.supervisor.watch(
                link,
                account.supervision,
                subject,
                trouble_open=stored.get(link, (0, False))[1],
            )
        for link in [k for k in self.supervisor.links if k.startswith("account:")]:
            if link not in wanted:
                self.supervisor.unwatch(link)

    def supervise_bridges(self, index: RegistryIndex, stored: dict[str, tuple[int, bool]]) -> None:
        """Watch every bridge that has ever reported (a new one from its first HELLO); forget
        bridges removed from the registry. A bridge that never connected is not "offline"."""
        links = {k for k in stored if k.startswith("bridge:") and "/" not in k}
        links |= {k for k in self.supervisor.links if k.startswith("bridge:")}
        for link in links:
            info = index.bridge(link.removeprefix("bridge:"))
            if info is None:
                self.supervisor.unwatch(link)
                continue
            watch_bridge(
                self.supervisor,
                self.config.bridge,
                info,
                trouble_open=stored.get(link, (0, False))[1],
            )

    def _registry_changed(self, index: RegistryIndex) -> None:
        self.supervise_accounts(index, {})
        self.supervise_bridges(index, {})

    async def _stats(self) -> None:
        while True:
            await trio.sleep(60)
            self.log.info("counters", **self.counters.snapshot())

    def _new_link(self, link: str, seen_us: int) -> None:
        """A link first seen in the store (a bridge's first HELLO, on some worker)."""
        if link.startswith("bridge:") and "/" not in link:
            self.supervise_bridges(self.registry.current(), {link: (seen_us, False)})

    def _coordinate(self, nursery: trio.Nursery, stored: dict[str, tuple[int, bool]]) -> None:
        """What runs once per node: supervision and registry refresh (and, as
        coordinator, link activity and commits learnt from the store)."""
        if self.role == "coordinator":
            self.activity = LinkActivity(
                self.supervisor, self.journal, stored, on_new_link=self._new_link
            )
            self.supervisor.sink = self.activity
            nursery.start_soon(
                self.activity.run,
                self.registry.connection,
                self.config.supervision.check_interval,
            )
            nursery.start_soon(self.journal.watch_other_writers)
        nursery.start_soon(self.supervisor.run)
        nursery.start_soon(self.registry.run, self._registry_changed)

    async def _listen(self, nursery: trio.Nursery) -> Ports:
        """The DC-09 and bridge listeners of this process (shared ports for a worker)."""
        supervisor = self.supervisor if self.role == "all" else None
        reuse_port = self.role == "worker"
        intake = Dc09Intake(
            self.config.dc09,
            journal=self.journal,
            registry=self.registry.current,
            supervisor=supervisor,
            counters=self.counters,
            log_signals=self.config.log_signals,
        )
        bridge_intake = BridgeIntake(
            self.config.bridge,
            journal=self.journal,
            registry=self.registry.current,
            state=BridgeStateStore(self.config.store.path, self.journal),
            supervisor=supervisor,
            counters=self.counters,
            log_signals=self.config.log_signals,
        )
        dc09_port = await nursery.start(Dc09Server(intake, reuse_port=reuse_port).serve)
        bridge_port = await nursery.start(BridgeServer(bridge_intake, reuse_port=reuse_port).serve)
        return Ports(dc09=dc09_port, bridge=bridge_port)

    async def _run_workers(self, nursery: trio.Nursery) -> Ports:
        self.pool = WorkerPool(
            self.config,
            self.config.ingest.worker_count,
            target=worker_main,
            json_logs=self.json_logs,
        )
        dc09_port, bridge_port = await nursery.start(self.pool.run)
        return Ports(dc09=dc09_port, bridge=bridge_port)

    async def run(self, *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as root:
            await root.start(self.journal.run)
            await self.registry.open()
            try:
                async with trio.open_nursery() as workers:
                    workers.start_soon(self._stats)
                    if self.role == "worker":
                        # Keep the resolving index fresh; supervision is the coordinator's.
                        workers.start_soon(self.registry.run, lambda index: None)
                    else:
                        stored_links = self.registry.links()
                        self.supervise_accounts(self.registry.current(), stored_links)
                        self.supervise_bridges(self.registry.current(), stored_links)
                        self._coordinate(workers, stored_links)
                        dispatcher = Dispatcher(
                            [build_output(o) for o in self.config.outputs],
                            self.config.store.path,
                            self.journal,
                        )
                        await workers.start(dispatcher.run)
                    async with trio.open_nursery() as listeners:
                        if self.role == "coordinator":
                            self.ports = await self._run_workers(listeners)
                        else:
                            self.ports = await self._listen(listeners)
                        task_status.started(self.ports)
                        await self._shutdown.wait()
                        self.log.info("shutting_down")
                        listeners.cancel_scope.cancel()
                    workers.cancel_scope.cancel()
            finally:
                self.journal.close()
                self.registry.close()
        self.log.info("stopped", **self.counters.snapshot())


async def serve_until_signalled(config: Config, *, json_logs: bool | None = None) -> None:
    """Run the service until SIGINT or SIGTERM, then shut down gracefully: with several
    ingest workers this process is their coordinator and stops them first."""
    role: Role = "coordinator" if config.ingest.worker_count > 1 else "all"
    service = Service(config, role=role, json_logs=json_logs)
    with trio.open_signal_receiver(os_signal.SIGINT, os_signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for signum in signals:
                    service.log.info("signal_received", signal=os_signal.Signals(signum).name)
                    service.request_shutdown()
                    return

            async def run() -> None:
                await service.run()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            nursery.start_soon(run)


def worker_main(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """Entry point of a worker process (spawned: nothing is inherited but its arguments)."""
    die_with_parent(coordinator)
    configure(json=json_logs)
    structlog.contextvars.bind_contextvars(worker=number)
    trio.run(_serve_worker, Service(config, role="worker"), ready)


async def _serve_worker(service: Service, ready: Connection) -> None:
    """Run the worker's service until SIGTERM; tell the coordinator its ports.

    SIGINT is ignored: a Ctrl-C on the terminal reaches the whole process group, and the
    coordinator, not each worker, decides the shutdown (a worker stopping on its own would be
    restarted)."""
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)
    with trio.open_signal_receiver(os_signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    service.request_shutdown()
                    return

            async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
                await service.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            ports = await nursery.start(run)
            ready.send((ports.dc09, ports.bridge))
            ready.close()
