"""The receiver service: one nursery holding the journal writer, the registry view, the
supervisor, the dispatcher and the listeners.

Each component gets a store object of its own from ``Service.open_store`` (``[store] path``:
SQLite, ``url``: PostgreSQL), never a path: the journal's writer, each output's cursor, the
bridge states, the notifier, retention and the coordinator's link and commit watchers.

Several nodes (``receiver.nodes``): every node ingests, commits and ACKs; each output's
delivery (lease ``output:<name>``), the supervisor, the notifier and retention run only while
this node holds their lease, and the node heartbeats what it holds. On SQLite the node is the
store's only one and holds them all; on PostgreSQL the supervisor learns of traffic committed
by other nodes from the store, and takes the stored trouble states over with its lease.

Shutdown order (SIGINT/SIGTERM or ``request_shutdown``): stop accepting and close connections
(a frame already being committed still gets its ACK: that section is shielded), stop the
supervisor and the dispatcher, then close the journal, which commits what is queued.

Start-up refuses, with a :class:`StartupError` naming what and where, a listener address that
cannot be bound and a ``[dc09] station`` the registry cannot serve: empty while the registry
holds several stations (every frame would be stored as an unknown account), or a name the
registry does not hold. Once it listens it logs ``receiver_started`` (version, config file,
store, listeners, outputs) and warns for each listener that is not on loopback.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import signal as os_signal
import sys
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any, Literal, TypeVar

import attrs
import psycopg
import structlog
import trio

from adapters.output import build_output
from protocols.errors import StartupError
from receiver import __version__
from receiver.bridge_listener import BridgeIntake, BridgeServer, watch_bridge
from receiver.bridge_state import BridgeStateStore
from receiver.config import Config, OutputConfig
from receiver.connection_limits import fit_to_open_files, raise_open_file_limit
from receiver.console import serve_console
from receiver.dc09_listener import Dc09Intake, Dc09Server, account_link
from receiver.dispatcher import Dispatcher, OutputCursor, TroublePolicy
from receiver.journal import NOTICE_FALLBACK_POLL, OTHER_NODES_POLL, Journal
from receiver.logs import configure
from receiver.metrics import Counters
from receiver.nodes import (
    SUPERVISOR_LEASE,
    ClosableLeaseStore,
    Node,
    open_lease_store,
    output_lease,
    take_over_supervision,
)
from receiver.notify import Notifier
from receiver.registry_index import RegistryIndex
from receiver.retention import Retention
from receiver.store import describe, open_registry_store, open_store
from receiver.store.faults import STORE_ERRORS, StoreOutage
from receiver.store.interface import Lease, RegistrySource, RegistryTables, SignalStore
from receiver.store.sqlite import tighten_permissions
from receiver.supervisor import LinkActivity, Supervisor
from receiver.workers import (
    WORKER_GO,
    WorkerPool,
    die_with_parent,
    report_bound,
    report_to_coordinator,
)

Role = Literal["all", "coordinator", "worker"]
_E = TypeVar("_E", bound=BaseException)


class RegistryView:
    """The in-memory registry the hot path reads, refreshed when the store's counter moves:
    every ``interval`` and, through ``refresh``, when a listener meets a bridge it does not
    know (a CLI change takes effect at once). One check at a time on the one connection; asks
    that arrive while a check runs share the next one.

    ``store`` is the store's registry side (``receiver.store.open_registry_store``): a SQLite
    file, or a PostgreSQL database, where the counter is bumped by every node's (and the
    CLI's) registry change, so each node sees it within ``interval``. Its tables
    (``store.registry()``) are read on a connection of their own; one that fails is reopened
    at the next refresh."""

    def __init__(self, store: RegistrySource, *, counters: Counters | None = None) -> None:
        self.store = store
        self._tables: RegistryTables | None = None
        self.index: RegistryIndex | None = None
        # A store that cannot be read keeps the last registry in use, and is retried.
        self._fault = StoreOutage("registry", "refresh", counters=counters)
        self._on_change: Callable[[RegistryIndex], None] | None = None
        self._lock = trio.Lock()
        self._checked_at = -math.inf
        self._backoff = 0.0  # extra wait after a failed refresh

    def _connection(self) -> RegistryTables:
        if self._tables is None:
            self._tables = self.store.registry()
        return self._tables

    def _open(self) -> RegistryIndex:
        return RegistryIndex.load(self._connection())

    def _refresh(self, index: RegistryIndex) -> RegistryIndex:
        try:
            return index.refresh_if_changed(self._connection())
        except _REGISTRY_READ_ERRORS:
            if self._tables is not None:
                self._tables.close()  # a lost server connection: a new one next time
                self._tables = None
            raise

    async def open(self) -> None:
        self.index = await trio.to_thread.run_sync(self._open)

    def current(self) -> RegistryIndex:
        assert self.index is not None
        return self.index

    async def refresh(self) -> RegistryIndex:
        """The index as of a store read that began after this call (one SELECT of the
        counter unless it moved)."""
        asked = trio.current_time()
        async with self._lock:
            if self._checked_at < asked:
                assert self.index is not None
                self._checked_at = trio.current_time()
                try:
                    fresh = await trio.to_thread.run_sync(self._refresh, self.index)
                except _REGISTRY_READ_ERRORS as exc:
                    # A store that cannot be read keeps the last registry in use.
                    self._backoff = self._fault.failed(exc)
                    return self.current()
                self._backoff = 0.0
                self._fault.succeeded()
                if fresh is not self.index:
                    self.index = fresh
                    if self._on_change is not None:
                        self._on_change(fresh)
        return self.current()

    async def run(self, on_change: Callable[[RegistryIndex], None], interval: float = 0.25) -> None:
        self._on_change = on_change
        while True:
            await trio.sleep(interval)
            await self.refresh()
            if self._backoff:
                await trio.sleep(self._backoff)

    def close(self) -> None:
        if self._tables is not None:
            self._tables.close()
            self._tables = None
        self.store.close()


# What a registry read may raise for a fault of the store (a PostgreSQL server gone too).
_REGISTRY_READ_ERRORS = (*STORE_ERRORS, psycopg.Error)


def station_problem(station: str, stations: tuple[str, ...]) -> str | None:
    """Why ``[dc09] station`` cannot serve this registry, or None when it can."""
    if not station and len(stations) > 1:
        return (
            f"the registry has {len(stations)} stations ({', '.join(stations)}) and "
            '[dc09] station is empty: set [dc09] station = "NAME" to the station this '
            "DC-09 port serves"
        )
    if station and stations and station not in stations:
        return (
            f"[dc09] station {station!r} is not in the registry "
            f"(stations: {', '.join(stations)}); add it or fix [dc09] station"
        )
    return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def first_in_group(exc: BaseException, kind: type[_E]) -> _E | None:
    """The first ``kind`` exception in ``exc`` or in trio's (nested) exception groups."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = first_in_group(inner, kind)
            if found is not None:
                return found
    return None


async def _start_listener(
    nursery: trio.Nursery, serve: Callable[..., Awaitable[Any]], what: str, listen: str
) -> int:
    """Start one listener; an address that cannot be bound is one StartupError line."""
    try:
        port: int = await nursery.start(serve)
    except (OSError, BaseExceptionGroup) as exc:
        error = first_in_group(exc, OSError)
        if error is None:
            raise
        reason = error.strerror or str(error)
        raise StartupError(f"cannot listen on {listen} ({what}): {reason}") from None
    return port


class HeldOutputs:
    """The outputs this node delivers now, each under its lease (what the console reads)."""

    def __init__(self) -> None:
        self.by_name: dict[str, Dispatcher] = {}

    @property
    def cursors(self) -> list[OutputCursor]:
        return [cursor for d in self.by_name.values() for cursor in d.cursors]


@attrs.define
class Ports:
    dc09: int
    bridge: int | None = None
    console: int | None = None


class Service:
    def __init__(
        self, config: Config, *, role: Role = "all", json_logs: bool | None = None
    ) -> None:
        self.role = role
        self.json_logs = json_logs
        self.log = structlog.get_logger("receiver")
        open_files = raise_open_file_limit()
        fitted = fit_to_open_files(config, open_files)
        if fitted != config:
            self.log.warning(
                "connection_limits_lowered",
                open_files=open_files,
                dc09_max_connections=fitted.dc09.max_connections,
                bridge_max_connections=fitted.bridge.max_connections,
            )
        self.config = config = fitted
        self.counters = Counters()
        self.journal = Journal(
            self.open_store(),
            max_batch=config.journal.max_batch,
            queue_size=config.journal.queue_size,
            counters=self.counters,
            commit_inline=config.journal.commit_inline,
        )
        self.registry = RegistryView(open_registry_store(config.store), counters=self.counters)
        self.supervisor = Supervisor(
            self.journal,
            grace=config.supervision.grace_factor,
            trouble_code=config.supervision.trouble_code,
            counters=self.counters,
        )
        self.activity: LinkActivity | None = None
        self.pool: WorkerPool | None = None  # the coordinator's ingest workers
        self._shutdown = trio.Event()
        self.ports: Ports | None = None
        self.dispatcher: HeldOutputs | None = None
        self.node: Node | None = None  # the coordinator's: its heartbeat and its leases
        self.servers: dict[str, Any] = {}
        # An ingest worker's: awaited once its ports are bound, before they listen.
        self.before_listening: Callable[[], Awaitable[None]] | None = None

    def _open_node(self) -> Node:
        """This node on the store: on SQLite the only one (its file is locked), so it holds
        every lease whatever the lease rows say; on PostgreSQL one of several."""
        store: ClosableLeaseStore = open_lease_store(self.config.store)
        return Node(
            store,
            self.config.node.node_name,
            lease=self.config.node.lease,
            sole=not self.config.store.url,
            counters=self.counters,
        )

    def _listeners(self, ports: Ports) -> dict[str, str]:
        found = {
            "dc09": f"{self.config.dc09.address[0]}:{ports.dc09}",
            "bridge": f"{self.config.bridge.address[0]}:{ports.bridge}",
        }
        if ports.console is not None and self.config.console.address is not None:
            found["console"] = f"{self.config.console.address[0]}:{ports.console}"
        return found

    def open_store(self) -> SignalStore:
        """A store object of its own for one component (``receiver.store.open_store``)."""
        return open_store(self.config.store, duplicate_window=self.config.dc09.duplicate_window)

    def all_counters(self) -> Counters:
        """This process's counters, plus every ingest worker's when it coordinates them."""
        if self.pool is None:
            return self.counters
        total = Counters()
        total.add(self.counters)
        total.add(self.pool.counters())
        return total

    def request_shutdown(self) -> None:
        self._shutdown.set()

    @property
    def shutting_down(self) -> bool:
        return self._shutdown.is_set()

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
        problem = station_problem(self.config.dc09.station, index.stations())
        if problem is not None:
            self.log.warning("dc09_station_unresolved", problem=problem)
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
        if self.role == "coordinator" or self.config.store.url:
            # Traffic that other processes (ingest workers, other nodes) commit is learnt
            # from the store.
            self.activity = LinkActivity(
                self.supervisor, self.journal, stored, on_new_link=self._new_link
            )
            self.supervisor.sink = self.activity
            nursery.start_soon(
                self.activity.run, self.open_store(), self.config.supervision.check_interval
            )
            # Our workers tell their commits; only other nodes (PostgreSQL) need the fast poll.
            interval = OTHER_NODES_POLL if self.config.store.url else NOTICE_FALLBACK_POLL
            nursery.start_soon(self.journal.watch_other_writers, self.open_store(), interval)
        assert self.node is not None
        nursery.start_soon(self.node.hold, SUPERVISOR_LEASE, self._supervise)
        nursery.start_soon(self.registry.run, self._registry_changed)

    async def _supervise(
        self, lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Supervision while this node holds its lease: it starts from the troubles stored
        (another node may have opened or closed some), so none is written twice."""
        fault = StoreOutage("supervisor", "take_over", counters=self.counters)
        while True:
            try:
                stored = await self._stored_links()
            except STORE_ERRORS as exc:
                await trio.sleep(fault.failed(exc))
                continue
            fault.succeeded()
            break
        take_over_supervision(self.supervisor, stored)
        await self.supervisor.run(task_status=task_status)

    async def _deliver(
        self,
        number: int,
        output: OutputConfig,
        lease: Lease,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """One output's delivery while this node holds its lease: a cursor of its own each
        time, opened where the store says the last holder got to."""
        dispatcher = Dispatcher(
            [build_output(output)],
            self.open_store,
            self.journal,
            counters=self.counters,
            policy=TroublePolicy(**attrs.asdict(self.config.delivery)),
        )
        for cursor in dispatcher.cursors:
            cursor.number = number  # its troubles' zone: its place in the configuration
        assert self.dispatcher is not None
        self.dispatcher.by_name[output.name] = dispatcher
        try:
            await dispatcher.run(task_status=task_status)
        finally:
            self.dispatcher.by_name.pop(output.name, None)

    async def _notify(
        self, lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await Notifier(
            self.config.notify, self.open_store(), self.journal, counters=self.counters
        ).run()

    async def _retain(
        self, lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        await Retention(self.open_store(), self.journal, self.config.journal.keep_days).run()

    async def _stored_links(self) -> dict[str, tuple[int, bool]]:
        """Every supervised link's last-seen time and trouble state, as stored."""
        store = self.open_store()
        try:
            return await trio.to_thread.run_sync(store.links)
        finally:
            store.close()

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
            state=BridgeStateStore(self.open_store(), self.journal, counters=self.counters),
            supervisor=supervisor,
            counters=self.counters,
            log_signals=self.config.log_signals,
            refresh=self.registry.refresh,
        )
        self.servers = {
            "dc09": Dc09Server(intake, reuse_port=reuse_port),
            "bridge": BridgeServer(bridge_intake, reuse_port=reuse_port),
        }
        dc09 = self.config.dc09
        transports = "TCP and UDP" if dc09.udp else "TCP"
        dc09_port = await _start_listener(
            nursery, self.servers["dc09"].serve, f"DC-09 {transports}", dc09.listen
        )
        bridge_port = await _start_listener(
            nursery, self.servers["bridge"].serve, "video bridges", self.config.bridge.listen
        )
        if self.before_listening is not None:
            await self.before_listening()  # a worker: until its coordinator says go
        if not self.shutting_down:
            for server in self.servers.values():
                server.held.listen()
        return Ports(dc09=dc09_port, bridge=bridge_port)

    async def _run_workers(self, nursery: trio.Nursery) -> Ports:
        self.pool = WorkerPool(
            self.config,
            self.config.ingest.worker_count,
            target=worker_main,
            json_logs=self.json_logs,
            on_commit=self.journal.learn_committed,  # each worker tells its commits
        )
        dc09_port, bridge_port = await nursery.start(self.pool.run)
        return Ports(dc09=dc09_port, bridge=bridge_port)

    async def run(self, *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        if not self.config.store.url:
            for file, mode in tighten_permissions(self.config.store.path):
                # It holds AES keys and bridge tokens: readable by the receiver's user only.
                self.log.warning(
                    "store_permissions_tightened", file=str(file), mode_was=f"{mode:o}"
                )
        async with trio.open_nursery() as root:
            await root.start(self.journal.run)
            try:
                await self.registry.open()
                if self.role != "worker":
                    problem = station_problem(
                        self.config.dc09.station, self.registry.current().stations()
                    )
                    if problem is not None:
                        raise StartupError(problem)
                async with trio.open_nursery() as workers:
                    workers.start_soon(self._stats)
                    if self.role == "worker":
                        # Keep the resolving index fresh; supervision is the coordinator's.
                        workers.start_soon(self.registry.run, lambda index: None)
                    else:
                        node = self.node = self._open_node()
                        workers.start_soon(node.run_heartbeat)
                        stored_links = await self._stored_links()
                        self.supervise_accounts(self.registry.current(), stored_links)
                        self.supervise_bridges(self.registry.current(), stored_links)
                        self._coordinate(workers, stored_links)
                        # Each output on one node at a time, under its lease (the cursor
                        # is open before the listeners start where this node holds it).
                        self.dispatcher = HeldOutputs()
                        for number, output in enumerate(self.config.outputs, start=1):
                            await workers.start(
                                node.hold,
                                output_lease(output.name),
                                functools.partial(self._deliver, number, output),
                            )
                        workers.start_soon(node.hold, "notifier", self._notify)
                        workers.start_soon(node.hold, "retention", self._retain)
                    async with trio.open_nursery() as listeners:
                        if self.role == "coordinator":
                            self.ports = await self._run_workers(listeners)
                        else:
                            self.ports = await self._listen(listeners)
                        if self.role != "worker":
                            self.ports.console = await workers.start(
                                serve_console, self.config, self
                            )
                        if self.node is not None:
                            self.node.listeners = self._listeners(self.ports)
                        task_status.started(self.ports)
                        await self._shutdown.wait()
                        self.log.info("shutting_down")
                        listeners.cancel_scope.cancel()
                    workers.cancel_scope.cancel()
            finally:
                self.journal.close()
                self.registry.close()
                if self.node is not None:
                    lease_store: Any = self.node.store
                    lease_store.close()
        self.log.info("stopped", **self.counters.snapshot())


def _destination(output: OutputConfig) -> str:
    settings = output.settings
    return str(settings.get("address") or settings.get("url") or settings.get("directory") or "")


def log_startup(log: Any, config: Config, config_file: str | None, ports: Ports) -> None:
    """``receiver_started`` with what this receiver uses; a warning per exposed listener."""
    log.info(
        "receiver_started",
        version=__version__,
        config_file=config_file or "(embedded default)",
        store=describe(config.store),
        dc09=config.dc09.listen,
        dc09_udp=config.dc09.udp,
        dc09_station=config.dc09.station or None,
        dc09_port=ports.dc09,
        bridge=config.bridge.listen,
        bridge_port=ports.bridge,
        outputs=[f"{o.name} ({o.kind} {_destination(o)})" for o in config.outputs] or None,
        log_level=config.log.level,
        switch_interval=sys.getswitchinterval(),  # [ingest] switch_interval, as applied
    )
    listeners = (
        ("dc09", config.dc09.listen, config.dc09.address[0]),
        ("bridge", config.bridge.listen, config.bridge.address[0]),
    )
    for listener, listen, host in listeners:
        if not is_loopback(host):
            log.warning(
                "listener_not_loopback",
                listener=listener,
                address=listen,
                advice="reachable from the network: let only the panels' networks in (firewall)",
            )


async def serve_until_signalled(
    config: Config, config_file: str | None = None, *, json_logs: bool | None = None
) -> None:
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

            async def run(
                *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED
            ) -> None:
                await service.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            # Logged once it listens: a receiver that cannot start prints one line, its error.
            log_startup(service.log, config, config_file, await nursery.start(run))


def worker_main(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """Entry point of a worker process (spawned: nothing is inherited but its arguments)."""
    die_with_parent(coordinator)
    configure(json=json_logs, level=logging.getLevelNamesMapping()[config.log.level.upper()])
    structlog.contextvars.bind_contextvars(worker=number)
    sys.setswitchinterval(config.ingest.switch_interval)
    trio.run(_serve_worker, Service(config, role="worker"), ready)


async def _serve_worker(service: Service, ready: Connection) -> None:
    """Run the worker's service until SIGTERM. Its ports bound, it tells the coordinator and
    hands it its TCP sockets (``report_bound``: the coordinator makes every worker's listen at
    once) and accepts once told to (``WORKER_GO``); then it sends its ports.

    SIGINT is ignored: a Ctrl-C on the terminal reaches the whole process group, and the
    coordinator, not each worker, decides the shutdown (a worker stopping on its own would be
    restarted). A SIGTERM, or the coordinator's end of the pipe closing, while it waits for go
    ends it without listening."""
    os_signal.signal(os_signal.SIGINT, os_signal.SIG_IGN)
    waiting = trio.CancelScope()

    async def until_go() -> None:
        with waiting:
            report_bound(
                ready, [s for server in service.servers.values() for s in server.held.sockets]
            )
            await trio.lowlevel.wait_readable(ready.fileno())
            try:
                said = ready.recv()
            except EOFError:  # the coordinator gave up the start (another worker failed)
                service.request_shutdown()
                return
            if said != WORKER_GO:
                raise OSError(f"ingest worker: the coordinator sent {said!r}, not go")

    service.before_listening = until_go
    with trio.open_signal_receiver(os_signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def watch() -> None:
                async for _ in signals:
                    service.request_shutdown()
                    waiting.cancel()
                    return

            async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
                await service.run(task_status=task_status)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            ports = await nursery.start(run)
            if not service.shutting_down:  # else stopped before it listened: nothing to tell
                ready.send((ports.dc09, ports.bridge, sys.getswitchinterval()))
                nursery.start_soon(report_to_coordinator, ready, service.journal, service.counters)
