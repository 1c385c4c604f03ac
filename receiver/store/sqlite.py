"""SQLite backend: connection settings and numbered migrations.

Rules: WAL journal, ``synchronous=FULL`` (a commit is on disk before we ACK), foreign keys on,
a busy timeout so several processes (CLI and service) can share the file. Migrations are the
files ``migrations/NNNN_name.sql``, applied in order inside one ``BEGIN IMMEDIATE`` transaction
each, so two processes opening a fresh file at once do not both migrate it.

A store that cannot be opened (its folder cannot be created, the file or folder is read-only,
it is not a SQLite file) is a :class:`StoreOpenError`: one line naming the file and why.

The store holds AES keys and bridge tokens: a new store file is created ``0600`` (SQLite gives
its ``-wal`` and ``-shm`` files the store file's mode) in a folder created ``0700``;
``tighten_permissions`` narrows an existing store's files (``receiver serve`` logs each one).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import stat
import time
from importlib import resources
from pathlib import Path

from protocols.errors import InvalidInputError, StartupError

_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration shipped with the package, in order."""
    found = []
    for entry in resources.files("receiver.store").joinpath("migrations").iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort()
    return found


class StoreOpenError(StartupError):
    """The store file cannot be opened, created or migrated."""


SCHEMA_VERSION = max((v for v, _, _ in migrations()), default=0)


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (``sqlite3.complete_statement`` handles triggers)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


def configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")


# A new store file's page size, set before its first table (in WAL mode SQLite cannot change
# it without a VACUUM, so an existing file keeps the size it was made with). 4096 whatever the
# SQLite build's default: measured against 1024, 2048 and 8192 on a 200,000-row journal, smaller
# pages cut a 50-row commit's WAL bytes (296 -> 174 -> 107 KiB) but not its CPU (an append cost
# 3-8% more: more frames, deeper indexes), and 8192 cost more CPU and more bytes.
NEW_STORE_PAGE_SIZE = 4096


def create_settings(conn: sqlite3.Connection) -> None:
    """What only a new (empty) file takes: its page size."""
    if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
        conn.execute(f"PRAGMA page_size = {NEW_STORE_PAGE_SIZE}")


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations; return the resulting version."""
    for version, name, sql in migrations():
        if schema_version(conn) >= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if schema_version(conn) < version:  # another process may have won the lock first
                for statement in _statements(sql):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        del name
    return schema_version(conn)


_SETUP_PATIENCE = 30.0  # seconds a connection waits for another one setting the file up


def _set_up(conn: sqlite3.Connection, path: Path) -> None:
    """Configure and migrate, waiting out another connection doing the same: switching a new
    file to WAL needs a lock that SQLite's busy handler does not wait for, so two processes (a
    coordinator and its workers, two stores) opening one new file at once would otherwise get
    "database is locked"."""
    deadline = time.monotonic() + _SETUP_PATIENCE
    while True:
        try:
            create_settings(conn)
            configure(conn)
            _check_version(conn, path)
            migrate(conn)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


STATEMENT_CACHE = 256


def connect(
    path: str | Path, *, check_same_thread: bool = True, create: bool = True
) -> sqlite3.Connection:
    """Open (creating it unless ``create`` is false) the store file, configured and migrated.

    The connection is in autocommit mode (``isolation_level=None``): callers open their
    transactions explicitly with ``BEGIN`` / ``BEGIN IMMEDIATE``.
    """
    path = Path(path)
    if str(path) != ":memory:":
        if not create and not path.exists():
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
            raise StoreOpenError(f"store {path} does not exist{where}")
        make_store_folder(path)
        if create:
            _create_private(path)
    try:
        # The journal's statements come in many sizes (multi-row INSERTs and lookups, link
        # upserts, history reads): about 120 distinct ones on a serving connection, at the
        # module's default cache of 128; a statement pushed out is parsed again at its next use.
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=check_same_thread,
            cached_statements=STATEMENT_CACHE,
        )
    except sqlite3.Error as exc:
        raise StoreOpenError(f"cannot open store {path}: {_reason(exc, path)}") from None
    try:
        conn.row_factory = sqlite3.Row
        _set_up(conn, path)
        if not create:
            return conn
        # A read-only file opens and reads; find out now, not at the first alarm.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreOpenError(f"cannot open store {path}: {_reason(exc, path)}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def make_store_folder(path: Path) -> None:
    """Create the store's folder (and its parents); one StoreOpenError line if it cannot be."""
    try:
        path.parent.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror
        for folder in (path.parent, *path.parent.parents):
            if folder.exists() and not folder.is_dir():
                what = "it" if folder == path.parent else str(folder)
                reason = f"{what} is a file, not a folder"
                break
        raise StoreOpenError(f"cannot create the store's folder {path.parent}: {reason}") from None


def _check_version(conn: sqlite3.Connection, path: Path) -> None:
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        raise InvalidInputError(
            f"store {path} has schema version {version}, newer than this program's "
            f"{SCHEMA_VERSION}; upgrade the receiver"
        )


def _reason(exc: sqlite3.Error, path: Path) -> str:
    """SQLite's reason, with what the user can do about a store it cannot write."""
    text = str(exc)
    if "readonly" not in text and "unable to open" not in text:
        return text
    try:
        if os.statvfs(path if path.exists() else path.parent).f_flag & os.ST_RDONLY:
            return f"{text} (read-only file system)"
    except OSError:
        pass
    if path.exists() and not os.access(path, os.W_OK):
        return f"{text} (the file is read-only for this user)"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"{text} (its folder {path.parent} is not writable; SQLite needs it for -wal/-shm)"
    return text


PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def _create_private(path: Path) -> None:
    """Create the store's folder and an empty store file, private, before SQLite creates them
    with the umask's modes. Failures are left for ``sqlite3.connect`` to report."""
    if not path.exists():
        with contextlib.suppress(OSError):  # a race, a read-only folder: SQLite will say
            os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def tighten_permissions(path: str | Path) -> list[tuple[Path, int]]:
    """Make the store file and its ``-wal``/``-shm`` readable by their owner only; each file
    whose mode was wider, with that mode. Files that cannot be changed are left as they are."""
    changed = []
    base = Path(path)
    for file in (base, base.with_name(base.name + "-wal"), base.with_name(base.name + "-shm")):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & PRIVATE_FOLDER & ~0o111)
                changed.append((file, mode))
        except OSError:
            continue
    return changed
