"""One receiver per store: an exclusive lock on ``<store>.lock`` beside the SQLite file.

Rules:
- ``receiver serve`` takes the lock before it opens the store and holds it for the life of the
  process; the file holds the holder's pid, so a second receiver on the same store refuses to
  start and names it (two receivers would share the output cursors: double delivery).
- The lock is ``flock(2)`` on an open file: the kernel drops it when the process ends, however
  it ends (SIGKILL too), so a stale lock file never blocks a restart. It belongs to the process
  that took it (the parent, should ``serve`` ever fork workers: the lock then lasts while any
  of them keeps the inherited descriptor, which is what keeps two writers apart).
- CLI commands (history, registry changes) do not take it: SQLite lets them share the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from protocols.errors import StartupError
from receiver.store.sqlite import make_store_folder


class StoreLockedError(StartupError):
    """Another process holds the store's lock."""


class StoreLock:
    """The held lock; release it with :meth:`release` (or use it as a context manager)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @staticmethod
    def path_for(store: str | Path) -> Path:
        return Path(f"{store}.lock")

    @classmethod
    def acquire(cls, store: str | Path) -> StoreLock:
        """Lock ``store``; :class:`StoreLockedError` naming the holder's pid when it is taken."""
        path = cls.path_for(store)
        make_store_folder(path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StartupError(f"cannot create the store lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"process {holder}" if holder else "another process"
            raise StoreLockedError(
                f"store {store} is in use by another receiver ({who}, lock {path}); "
                "stop it first or give this one its own [store] path"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"cannot lock the store {store}: {exc.strerror}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        # Empty the file first: a reader between unlock and close must not see our pid.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)

    def __enter__(self) -> StoreLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
