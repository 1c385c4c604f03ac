"""A store that cannot be written (a full disk, an I/O error): what every component does.

Rules:
- A failed store operation never ends the receiver. The component keeps what it meant to
  write (nothing is ACKed or counted as saved that was not committed), logs
  ``store_error`` (component, operation, error, failures, retry_in), counts
  ``store_errors``, and tries again after a backoff that doubles from ``first`` up to
  ``maximum`` seconds: a full disk is not hammered, and it is noticed soon once it has room.
- The first success after failures logs ``store_recovered`` (with how many failures and how
  long the outage lasted) and resets the backoff.
- The journal behaves the same way on its own path: a failed commit is answered as an error
  (the listeners send no ACK, the panel retries) and counted in ``store_errors`` too.
- ``STORE_ERRORS`` are the exceptions a store raises for a fault of the disk or the database:
  every ``sqlite3.Error`` and ``OSError`` (``JournalError`` is one).
- :func:`fault_line` is what a command says of a store it lost (the CLI: one line, exit 1): the
  first failure of a chain (a rollback on a lost connection fails too, and says less).
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any, Final

import structlog
import trio

from receiver.metrics import Counters
from receiver.store.interface import StoreError

STORE_ERRORS: Final = (sqlite3.Error, OSError)


def _database_error(exc: BaseException) -> str | None:
    """The backend an exception of the database itself comes from, else None."""
    if isinstance(exc, sqlite3.Error):
        return "SQLite"
    psycopg = sys.modules.get("psycopg")  # never imported: no PostgreSQL error to be had
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return "PostgreSQL"
    return None


def fault_line(exc: BaseException) -> str | None:
    """One line saying how the store failed (a :class:`StoreError`, or an error of SQLite or
    PostgreSQL that reached the caller as it is), else None: not a fault of the store."""
    if isinstance(exc, StoreError):  # it names the operation and the database's reason
        return _first_line(exc)
    if _database_error(exc) is None:
        return None
    first = exc  # raised while handling another database error: that one is the cause
    while first.__context__ is not None and _database_error(first.__context__) is not None:
        first = first.__context__
    return f"the {_database_error(first)} store failed: {_first_line(first)}"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class StoreOutage:
    """Failures of one component's store operation, with its backoff and its reports."""

    def __init__(
        self,
        component: str,
        operation: str,
        *,
        counters: Counters | None = None,
        log: Any = None,
        first: float = 0.5,
        maximum: float = 5.0,
    ) -> None:
        self.component = component
        self.operation = operation
        self.counters = counters if counters is not None else Counters()
        self.log = log if log is not None else structlog.get_logger("receiver.store")
        self.first = first
        self.maximum = maximum
        self.failures = 0
        self.retry_at = -float("inf")
        self._since: float | None = None
        self._delay = first

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def ready(self) -> bool:
        """True when the operation may be tried again (its backoff has passed)."""
        return trio.current_time() >= self.retry_at

    def failed(self, exc: BaseException) -> float:
        """Record one failure; the seconds to wait before the next try."""
        now = trio.current_time()
        if self._since is None:
            self._since = now
        self.failures += 1
        delay = self._delay
        self._delay = min(self._delay * 2, self.maximum)
        self.retry_at = now + delay
        self.counters.inc("store_errors")
        self.log.error(
            "store_error",
            component=self.component,
            operation=self.operation,
            error=str(exc) or type(exc).__name__,
            failures=self.failures,
            retry_in=delay,
        )
        return delay

    def succeeded(self) -> None:
        """The operation worked: report the recovery once, and reset the backoff."""
        if self._since is None:
            return
        self.log.warning(
            "store_recovered",
            component=self.component,
            operation=self.operation,
            failures=self.failures,
            outage_s=round(trio.current_time() - self._since, 3),
        )
        self.failures = 0
        self._since = None
        self._delay = self.first
        self.retry_at = -float("inf")

    async def wait(self) -> None:
        """Sleep until the next try is due."""
        await trio.sleep_until(self.retry_at)
