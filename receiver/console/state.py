"""What the console reads from the running service and the store, and how it writes.

Rules:
- Reads run in a worker thread on the console's own store connection, one at a time (a
  ``trio.Lock``): the trio loop that ACKs alarms never waits on SQLite for a web page.
- Writes (sessions, audit rows, manual acknowledgements) go through the journal's one writer
  (``Journal.append([], console=...)``), in one transaction each: a change and its audit
  row are committed together or not at all.
- Manual mode: an output counts as down from the first time the console sees it disconnected;
  once it has been down ``manual_after`` seconds, the alarms waiting for it (after its cursor)
  are the operator's queue. The output still receives every one of them when it returns.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
import trio

from receiver.config import Config
from receiver.dispatcher import output_status
from receiver.journal import to_us
from receiver.store import console_sql
from receiver.store.interface import SignalStore
from receiver.store.sqlite import connect
from receiver.store.sqlite_store import SqliteStore

from .auth import LoginLimiter

if TYPE_CHECKING:
    from receiver.service import Service

T = TypeVar("T")


def now_us() -> int:
    return to_us(datetime.now(UTC))


class StoreReader:
    """The console's read connection, used from worker threads one call at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = trio.Lock()
        self._store: SignalStore = SqliteStore(
            path
        )  # the outputs' state, through the store's interface

    async def outputs(self, names: list[str]) -> list[dict[str, Any]]:
        async with self._lock:
            return await trio.to_thread.run_sync(output_status, self._store, names)

    async def run(self, read: Callable[[sqlite3.Connection], T]) -> T:
        async with self._lock:
            if self._conn is None:
                self._conn = await trio.to_thread.run_sync(
                    lambda: connect(self.path, check_same_thread=False)
                )
            conn = self._conn
            return await trio.to_thread.run_sync(read, conn)

    def close(self) -> None:
        self._store.close()
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class ConsoleState:
    def __init__(self, config: Config, service: Service) -> None:
        self.config = config
        self.service = service
        self.reader = StoreReader(config.store.path)
        self.limiter = LoginLimiter(config.console.max_failed_logins, config.console.login_window)
        self.log = structlog.get_logger("receiver.console")
        self._down_since: dict[str, float] = {}
        self.started = datetime.now(UTC)

    # -- writes -------------------------------------------------------------------------------

    async def write(self, statements: list[console_sql.Statement]) -> None:
        await self.service.journal.append([], console=statements)

    async def audit(
        self,
        user: str,
        action: str,
        subject: str | None,
        detail: dict[str, Any],
        statements: list[console_sql.Statement] | None = None,
    ) -> None:
        """Commit ``statements`` with the audit row that says who made them."""
        row = console_sql.audit_statement(now_us(), user, action, subject, detail)
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

    async def manual_queue(self, limit: int = 200) -> list[tuple[sqlite3.Row, list[str]]]:
        """Alarms waiting for an output in manual mode, oldest first, each with the outputs it
        waits for (acknowledged ones included, marked by ``manual_user``)."""
        manual = self.manual_outputs()
        if not manual:
            return []

        def read(conn: sqlite3.Connection) -> list[tuple[sqlite3.Row, list[str]]]:
            lowest = min(manual.values())
            rows = console_sql.waiting_alarms(conn, lowest, limit)
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
