"""The store: one database holding the registry, the journal and each output's delivery state.

The interface is ``receiver/store/interface.py``; SQLite (``sqlite_store.py``) is the embedded
engine, PostgreSQL (``postgres/``) the engine for several receiver nodes, and ``memory.py`` a
fake for fast unit tests. Only this package speaks SQL.

``open_store`` (and ``open_report_store``, the read side for audits and reports) are the
places that pick a backend from ``[store]``: ``url`` is PostgreSQL, else ``path`` is SQLite.
Each call returns a new store object with its own connection; the service gives each
component its own (every store is also safe to share between threads: its calls serialize on
a lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from receiver.config import StoreConfig
    from receiver.store.interface import ConsoleSource, RegistrySource, ReportStore, SignalStore


def open_store(
    config: StoreConfig, *, duplicate_window: float = 600.0, create: bool = True
) -> SignalStore:
    """A new store object for ``[store]``. Neither backend touches its database here: SQLite
    opens its file and PostgreSQL connects at the first call, in the thread making it (inside
    trio, a worker thread: never the event loop); a file that cannot be opened or a server that
    cannot be reached is then a store fault of that call (:class:`StoreError`), retried by the
    service, one line and exit 1 at the CLI. ``create`` false: a missing SQLite file is an
    error (the CLI's readers), not a new empty store."""
    if config.url:
        from receiver.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(config.url, duplicate_window=duplicate_window)
    from receiver.store.sqlite_store import SqliteStore  # noqa: PLC0415

    return SqliteStore(config.path, duplicate_window=duplicate_window, create=create)


def open_report_store(config: StoreConfig) -> ReportStore:
    """The read side for ``receiver journal verify`` and ``receiver report`` on ``[store]``
    (either backend); a missing SQLite file is an error, not a new empty store."""
    if config.url:
        from receiver.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(config.url)
    from receiver.store.sqlite_store import SqliteStore  # noqa: PLC0415

    return SqliteStore(config.path, create=False)


def open_registry_store(config: StoreConfig) -> RegistrySource:
    """The registry side of ``[store]``: its tables (``registry()``, each call a connection of
    its own) and its change generation. Nothing is opened here."""
    if config.url:
        from receiver.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(config.url)
    from receiver.store.sqlite_store import SqliteStore  # noqa: PLC0415

    return SqliteStore(config.path)


def open_console_store(config: StoreConfig) -> ConsoleSource:
    """The console's users in ``[store]`` (``console()``, a connection of its own); nothing
    is opened here."""
    if config.url:
        from receiver.store.postgres.store import PostgresStore  # noqa: PLC0415 (psycopg)

        return PostgresStore(config.url)
    from receiver.store.sqlite_store import SqliteStore  # noqa: PLC0415

    return SqliteStore(config.path)


def describe(config: StoreConfig) -> str:
    """The store as logs and messages name it (a URL without its password)."""
    if config.url:
        from receiver.store.postgres.schema import _safe  # noqa: PLC0415

        return _safe(config.url)
    return config.path
