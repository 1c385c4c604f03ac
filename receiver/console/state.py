"""What the console reads from the running service and the store, and how it writes.

Rules:
- Reads run in a worker thread on the console's own store connection, one at a time (a
  ``trio.Lock``): the trio loop that ACKs alarms never waits on the store for a web page.
  The connection is the store's console tables (``console()`` of the store at ``[store] url``
  or ``path``: :class:`~receiver.store.interface.ConsoleTables`), so the pages, the API and
  ``/metrics`` read through its typed methods and never write SQL or pick a backend
  themselves. The reader also holds the backend's console statements (``StoreReader.sql``)
  for the writes. Rows are read by column name (``sqlite3.Row`` or a dict: a Mapping).
- Writes (sessions, audit rows, manual acknowledgements) commit in one transaction each: a
  change and its audit row are committed together or not at all. The one seam is
  :meth:`ConsoleState.write`: on SQLite it hands them to the journal's one writer
  (``Journal.append([], console=...)``: SQLite has one writer); on PostgreSQL, which has no
  single-writer rule, it commits them on the console's own connection
  (:meth:`StoreReader.commit`: ``BEGIN``, the statements, ``COMMIT``; ``ROLLBACK`` on error).
- Manual mode: an output counts as down from the first time the console sees it disconnected;
  once it has been down ``manual_after`` seconds, the alarms waiting for it (after its cursor)
  are the operator's queue. The output still receives every one of them when it returns.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
import structlog
import trio

from protocols.errors import StartupError
from receiver.config import Config
from receiver.dispatcher import output_status
from receiver.journal import to_us
from receiver.store import open_console_store, open_store
from receiver.store.console_sql import Statement
from receiver.store.console_tables import console_statements
from receiver.store.faults import STORE_ERRORS
from receiver.store.interface import ConsoleTables, SignalStore, StoreError

from .auth import LoginLimiter

if TYPE_CHECKING:
    from receiver.service import Service

T = TypeVar("T")

# What a console read or write may raise for a fault of the store, on either backend.
CONSOLE_STORE_ERRORS = (*STORE_ERRORS, psycopg.Error)


def now_us() -> int:
    return to_us(datetime.now(UTC))


class StoreReader:
    """The console's store connection (its console tables), used from worker threads one
    call at a time."""

    def __init__(self, config: Config) -> None:
        self.postgres = bool(config.store.url)
        self.sql = console_statements(config.store)  # the backend's console statements
        self._source = open_console_store(config.store)  # nothing opened yet
        self._tables: ConsoleTables | None = None
        self._lock = trio.Lock()
        self._store: SignalStore = open_store(config.store)  # the outputs' state

    async def outputs(self, names: list[str]) -> list[dict[str, Any]]:
        async with self._lock:
            return await trio.to_thread.run_sync(output_status, self._store, names)

    async def run(self, read: Callable[[ConsoleTables], T]) -> T:
        async with self._lock:
            if self._tables is None:
                self._tables = await trio.to_thread.run_sync(self._connect)
            tables = self._tables
            try:
                return await trio.to_thread.run_sync(read, tables)
            except CONSOLE_STORE_ERRORS:
                if self.postgres:
                    self._drop()  # a lost server: the next call connects again
                raise

    async def commit(self, statements: Sequence[Statement]) -> None:
        """Commit ``statements`` in one transaction of their own on this connection."""
        await self.run(lambda tables: tables.commit(statements))

    def _connect(self) -> ConsoleTables:
        try:
            return self._source.console()
        except StartupError as exc:  # PostgreSQL unreachable: a store fault, tried again
            raise StoreError(str(exc)) from exc

    def _drop(self) -> None:
        if self._tables is not None:
            with contextlib.suppress(*CONSOLE_STORE_ERRORS):
                self._tables.close()
            self._tables = None

    def close(self) -> None:
        self._store.close()
        self._drop()
        self._source.close()


class ConsoleState:
    def __init__(self, config: Config, service: Service) -> None:
        self.config = config
        self.service = service
        self.reader = StoreReader(config)
        self.limiter = LoginLimiter(config.console.max_failed_logins, config.console.login_window)
        self.log = structlog.get_logger("receiver.console")
        self._down_since: dict[str, float] = {}
        self.started = datetime.now(UTC)

    # -- writes -------------------------------------------------------------------------------

    @property
    def sql(self) -> Any:
        """The store's console SQL module (``receiver.store.console_sql`` or its PostgreSQL
        twin): the statements a write names come from here."""
        return self.reader.sql

    async def write(self, statements: list[Statement]) -> None:
        """The one place a console write picks its path: the journal's writer on SQLite, a
        transaction of its own on the console's connection on PostgreSQL."""
        if self.reader.postgres:
            await self.reader.commit(statements)
        else:
            await self.service.journal.append([], console=statements)

    async def audit(
        self,
        user: str,
        action: str,
        subject: str | None,
        detail: dict[str, Any],
        statements: list[Statement] | None = None,
    ) -> None:
        """Commit ``statements`` with the audit row that says who made them."""
        row = self.sql.audit_statement(now_us(), user, action, subject, detail)
        await self.write([*(statements or []), row])
        self.log.info("console_change", user=user, action=action, subject=subject, **detail)

    # -- outputs and manual mode ----------------------------------------------------------------

    def live_outputs(self) -> dict[str, dict[str, Any]]:
        """What the dispatcher knows now (fresher than the saved row)."""
        dispatcher = getattr(self.service, "dispatcher", None)
        live: dict[str, dict[str, Any]] = {}
        if dispatcher is None:
            return live
        for cursor in dispatcher.cursors:
            live[cursor.output.name] = {
                "connected": bool(cursor.output.connected),
                "last_error": cursor.output.last_error,
                "cursor": cursor.cursor,
            }
        return live

    def observe_outputs(self) -> None:
        """Note when each output went down (called every half second and on each request)."""
        now = trio.current_time()
        for name, live in self.live_outputs().items():
            if live["connected"]:
                self._down_since.pop(name, None)
            else:
                self._down_since.setdefault(name, now)

    def down_for(self, name: str) -> float | None:
        since = self._down_since.get(name)
        return None if since is None else trio.current_time() - since

    def manual_outputs(self) -> dict[str, int]:
        """Outputs in manual mode -> their cursor (signals after it wait for them)."""
        self.observe_outputs()
        found = {}
        for name, live in self.live_outputs().items():
            down = self.down_for(name)
            if down is not None and down >= self.config.console.manual_after:
                found[name] = int(live["cursor"])
        return found

    async def outputs(self) -> list[dict[str, Any]]:
        names = [o.name for o in self.config.outputs]
        rows = await self.reader.outputs(names)
        live = self.live_outputs()
        manual = self.manual_outputs()
        kinds = {o.name: o.kind for o in self.config.outputs}
        for row in rows:
            row["kind"] = kinds[row["name"]]
            if row["name"] in live:
                row["connected"] = live[row["name"]]["connected"]
                row["last_error"] = live[row["name"]]["last_error"]
            down = self.down_for(row["name"])
            row["down_for_s"] = None if down is None else round(down, 1)
            row["manual_mode"] = row["name"] in manual
        return rows

    async def manual_queue(self, limit: int = 200) -> list[tuple[Mapping[str, Any], list[str]]]:
        """Alarms waiting for an output in manual mode, oldest first, each with the outputs it
        waits for (acknowledged ones included, marked by ``manual_user``)."""
        manual = self.manual_outputs()
        if not manual:
            return []

        def read(tables: ConsoleTables) -> list[tuple[Mapping[str, Any], list[str]]]:
            lowest = min(manual.values())
            rows = tables.waiting_alarms(lowest, limit)
            return [(row, sorted(n for n, c in manual.items() if row["seq"] > c)) for row in rows]

        return await self.reader.run(read)

    async def watch(self) -> None:
        while True:
            self.observe_outputs()
            await trio.sleep(0.5)

    # -- health -----------------------------------------------------------------------------------

    def listener_state(self) -> dict[str, Any]:
        """Each listener's port, open connections and the peers holding them."""
        ports = self.service.ports
        servers = getattr(self.service, "servers", {})
        found = {}
        for name in ("dc09", "bridge"):
            server = servers.get(name)
            limits = server.limits if server is not None else None
            found[name] = {
                "port": getattr(ports, name) if ports else None,
                "connections": limits.open if limits else 0,
                "peers": dict(sorted(limits.by_peer.items())) if limits else {},
            }
        return found

    def node_state(self) -> dict[str, Any]:
        """This process: one node, one trio loop (workers and coordinators come later)."""
        return {
            "pid": os.getpid(),
            "started": self.started.isoformat(timespec="seconds"),
            "uptime_s": round((datetime.now(UTC) - self.started).total_seconds(), 1),
            "listening": self.service.ports is not None and not self.service.shutting_down,
        }
