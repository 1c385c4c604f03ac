"""Backup and restore of the SQLite store.

Rules:
- A backup is SQLite's online backup API copying the whole store in one step: one read
  snapshot, so the copy holds exactly the commits made before it started (a consistent
  prefix of the journal). In WAL mode that reader never blocks the journal's writer, so
  ingest goes on. The copy is written to a temporary file created mode 0600 (it holds keys
  and tokens), fsynced, then renamed into place; an existing file is not overwritten.
- A restore refuses while a receiver holds the store's lock (``<store>.lock``) and holds that
  lock itself until it is done, so none can start meanwhile. It checks the backup (a SQLite
  store, intact, not newer than this program), copies it beside the store, fsyncs it,
  checkpoints the old store, removes its ``-wal``/``-shm`` (frames of the old store must
  never be replayed into the new one) and renames the copy over it.
- PostgreSQL stores are backed up with ``pg_dump`` (see the README), not here.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from protocols.errors import InvalidInputError, NotFoundError, StartupError
from receiver.store.lock import StoreLock
from receiver.store.sqlite import SCHEMA_VERSION, connect, schema_version


class BackupError(StartupError):
    """The backup or restore could not be made (one line: what and why)."""


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 (whatever the umask), refusing an existing one."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, 0o600)
    os.close(fd)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _copy(source: sqlite3.Connection, target: Path) -> None:
    """The whole of ``source`` into the new file ``target`` (one snapshot), closed and fsynced."""
    _private_file(target)
    dest = sqlite3.connect(target, isolation_level=None)
    try:
        source.backup(dest)  # pages=-1: every page in one step, one read snapshot
        dest.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal
    finally:
        dest.close()
    _fsync_file(target)


def backup(store: str | Path, destination: str | Path) -> int:
    """Copy the store to ``destination``; the number of journal rows the copy holds."""
    store, destination = Path(store), Path(destination)
    if destination.exists():
        raise BackupError(f"{destination} already exists; give a new file name")
    if not destination.parent.is_dir():
        raise BackupError(f"cannot write {destination}: folder {destination.parent} does not exist")
    temporary = destination.with_name(f".{destination.name}.partial")
    _remove(temporary)
    source = connect(store, create=False)
    try:
        _copy(source, temporary)
    except (OSError, sqlite3.Error) as exc:
        _remove(temporary)
        raise BackupError(f"cannot back up {store} to {destination}: {exc}") from None
    finally:
        source.close()
    os.replace(temporary, destination)
    _fsync_folder(destination.parent)
    copy = sqlite3.connect(f"file:{destination}?mode=ro", uri=True)
    try:
        return int(copy.execute("SELECT count(*) FROM signals").fetchone()[0])
    finally:
        copy.close()


def _check_backup(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise NotFoundError(f"backup {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        problem = conn.execute("PRAGMA quick_check").fetchone()[0]
        version = schema_version(conn)
        has_journal = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'signals'"
        ).fetchone()[0]
    except sqlite3.Error as exc:
        raise InvalidInputError(f"{path} is not a receiver store: {exc}") from None
    if problem != "ok":
        conn.close()
        raise InvalidInputError(f"backup {path} is damaged: {problem}")
    if not has_journal:
        conn.close()
        raise InvalidInputError(f"{path} is not a receiver store (it has no journal)")
    if version > SCHEMA_VERSION:
        conn.close()
        raise InvalidInputError(
            f"backup {path} has schema version {version}, newer than this program's "
            f"{SCHEMA_VERSION}; restore it with a newer receiver"
        )
    return conn


def restore(store: str | Path, backup_file: str | Path) -> int:
    """Replace the store with ``backup_file``; the number of journal rows restored.

    :class:`~receiver.store.lock.StoreLockedError` while a receiver uses the store.
    """
    store, backup_file = Path(store), Path(backup_file)
    with StoreLock.acquire(store):
        source = _check_backup(backup_file)
        temporary = store.with_name(f".{store.name}.restoring")
        _remove(temporary)
        try:
            _copy(source, temporary)
        except (OSError, sqlite3.Error) as exc:
            _remove(temporary)
            raise BackupError(f"cannot restore {backup_file}: {exc}") from None
        finally:
            source.close()
        if store.exists():
            old = sqlite3.connect(store, isolation_level=None)
            try:
                busy = old.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            finally:
                old.close()
            if busy:
                _remove(temporary)
                raise BackupError(
                    f"store {store} is being read by another process (a `history --follow`?); "
                    "stop it and run restore again"
                )
        for suffix in ("-wal", "-shm"):
            _remove(Path(f"{store}{suffix}"))
        os.replace(temporary, store)
        _fsync_folder(store.parent)
    conn = connect(store)  # migrates an older backup to this program's schema
    try:
        return int(conn.execute("SELECT count(*) FROM signals").fetchone()[0])
    finally:
        conn.close()
