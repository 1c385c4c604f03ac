"""The receiver service: one nursery holding the journal writer, the registry view, the
supervisor, the dispatcher and the listeners.

Shutdown order (SIGINT/SIGTERM or ``request_shutdown``): stop accepting and close connections
(a frame already being committed still gets its ACK: that section is shielded), stop the
supervisor and the dispatcher, then close the journal, which commits what is queued.
"""

from __future__ import annotations

import signal as os_signal
import sqlite3
from collections.abc import Callable
from typing import Any

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
from receiver.metrics import Counters
from receiver.registry_index import RegistryIndex
from receiver.store.sqlite import connect
from receiver.supervisor import Supervisor


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
    def __init__(self, config: Config) -> None:
        self.config = config
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

    async def run(self, *, task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as root:
            await root.start(self.journal.run)
            await self.registry.open()
            stored_links = self.registry.links()
            self.supervise_accounts(self.registry.current(), stored_links)
            self.supervise_bridges(self.registry.current(), stored_links)
            try:
                async with trio.open_nursery() as workers:
                    workers.start_soon(self.supervisor.run)
                    workers.start_soon(
                        self.registry.run,
                        self._registry_changed,
                    )
                    workers.start_soon(self._stats)
                    workers.start_soon(self.journal.purge_periodically)
                    dispatcher = Dispatcher(
                        [build_output(o) for o in self.config.outputs],
                        self.config.store.path,
                        self.journal,
                    )
                    await workers.start(dispatcher.run)
                    intake = Dc09Intake(
                        self.config.dc09,
                        journal=self.journal,
                        registry=self.registry.current,
                        supervisor=self.supervisor,
                        counters=self.counters,
                        log_signals=self.config.log_signals,
                    )
                    bridge_intake = BridgeIntake(
                        self.config.bridge,
                        journal=self.journal,
                        registry=self.registry.current,
                        state=BridgeStateStore(self.config.store.path, self.journal),
                        supervisor=self.supervisor,
                        counters=self.counters,
                        log_signals=self.config.log_signals,
                    )
                    async with trio.open_nursery() as listeners:
                        dc09_port = await listeners.start(Dc09Server(intake).serve)
                        bridge_port = await listeners.start(BridgeServer(bridge_intake).serve)
                        self.ports = Ports(dc09=dc09_port, bridge=bridge_port)
                        task_status.started(self.ports)
                        await self._shutdown.wait()
                        self.log.info("shutting_down")
                        listeners.cancel_scope.cancel()
                    workers.cancel_scope.cancel()
            finally:
                self.journal.close()
                self.registry.close()
        self.log.info("stopped", **self.counters.snapshot())


async def serve_until_signalled(config: Config) -> None:
    """Run the service until SIGINT or SIGTERM, then shut down gracefully."""
    service = Service(config)
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
