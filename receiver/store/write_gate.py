"""The writers' queue in front of SQLite's write lock: ``flock(2)`` on ``<store>.writers``.

Rules:
- Several processes write one SQLite file (the ingest workers, the coordinator). SQLite's
  lock cannot be waited on: ``BEGIN IMMEDIATE`` fails at once while another connection
  writes, so a waiter polls (``begin_immediate``: steps doubling to 2 ms), and the lock can
  sit free for up to a step before the next writer notices. Taking this file's lock first,
  a waiter sleeps in the kernel and is woken the moment the holder releases it: the journal's
  commits follow each other without the gap, and the polling is left for writers that do not
  take the gate (the CLI, an older receiver), which the loop still serves.
- The gate is held only around one write transaction (take it, ``BEGIN IMMEDIATE``, the
  statements, ``COMMIT`` or ``ROLLBACK``, release it), never across an await or any I/O but
  the transaction's. The kernel drops it when its process ends, however it ends (SIGKILL
  too), so a worker that dies mid-commit never blocks the others.
- Each process opens its own descriptor (flock locks belong to the open file, which a forked
  child would share): the descriptor is reopened when the pid changed.
- Where the file cannot be created (a read-only folder, an in-memory database), there is no
  gate: writers poll.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


class WriteGate:
    """The gate of one store file; one per store object (its calls are already serialized)."""

    def __init__(self, store: str | Path) -> None:
        # An in-memory database has one connection, and no folder to put the file in.
        self.path: Path | None = None if str(store) == ":memory:" else Path(f"{store}.writers")
        self._fd: int | None = None
        self._pid = 0
        self._held = False

    def _descriptor(self) -> int | None:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        self._fd, self._pid = None, os.getpid()  # a forked child's copy is not ours to close
        if self.path is None:
            return None
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        return self._fd

    def acquire(self, *, wait: bool = True) -> bool:
        """Take the gate (``wait``: sleep until it is free); False when ``wait`` is off and
        another process holds it. True, holding nothing, where there is no gate."""
        fd = self._descriptor()
        if fd is None:
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError:  # a filesystem without flock: SQLite's lock still keeps writers apart
            return True
        self._held = True
        return True

    def release(self) -> None:
        if self._held and self._fd is not None:
            self._held = False
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._fd is not None and self._pid == os.getpid():
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = None
