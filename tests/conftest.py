"""Shared test settings: hypothesis profiles, the public test vectors (``tests/vectors/``) and a
real PostgreSQL server for every test that needs one.

PostgreSQL: one throwaway cluster per test session (``initdb`` and ``pg_ctl`` in a temporary
folder, on a free loopback port, as the ``postgres`` user when the tests run as root), and one
migrated database, emptied before each test (``pg_url``). Under CI a missing PostgreSQL fails
these tests; on a developer's machine they are skipped with the command that installs it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import psycopg
import pytest
from hypothesis import HealthCheck, settings

from receiver.store.postgres.cluster import INSTALL_HINT, Cluster, ClusterError, find_bin_dir
from receiver.store.postgres.cluster import start_cluster as _start_cluster
from receiver.store.postgres.store import PostgresStore

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

ROOT = Path(__file__).resolve().parent.parent
VECTORS = ROOT / "tests" / "vectors"


def load_vectors(name: str) -> Any:
    """Read ``tests/vectors/<name>`` (each vector names its public source)."""
    path = VECTORS / name
    return json.loads(path.read_text(encoding="utf-8"))


def under_ci() -> bool:
    """CI runs with ``CI`` set or the ``ci`` hypothesis profile (``.ci/run``)."""
    return bool(os.environ.get("CI")) or os.environ.get("HYPOTHESIS_PROFILE") == "ci"


def unavailable(message: str) -> NoReturn:
    """A real part a test needs is missing: under CI that is a failure, never a skip."""
    if under_ci():
        pytest.fail(message)
    pytest.skip(message)


# -- PostgreSQL ------------------------------------------------------------------------------

TEMPLATE = "store_test"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The session's throwaway cluster, stopped and removed at the end."""
    if find_bin_dir() is None:
        unavailable(f"{INSTALL_HINT} (CI must run the PostgreSQL tests)")
    try:
        cluster = _start_cluster()
    except ClusterError as exc:
        pytest.fail(str(exc))
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        PostgresStore(cluster.url_for(TEMPLATE)).open().close()  # migrated once
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(postgres_cluster: Cluster) -> str:
    """The migrated test database, emptied (every table but the migrations' record), for one
    test: cheaper than a database per test, and the tests run one at a time."""
    url = postgres_cluster.url_for(TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                "AND tablename NOT IN ('store_migrations', 'meta')"
            )
        ]
        conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        conn.execute("UPDATE meta SET value = 0")
    return url


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(pg_url)
    try:
        yield store
    finally:
        store.close()


# -- one store, two backends -------------------------------------------------------------------


class Backend:
    """One database for a test on either backend: ``open()`` gives a new store object on it
    (as the service gives each component its own), ``sql`` reads it directly (for what only the
    database shows: repeat counts), ``url``/``path`` say where it is for a config file."""

    def __init__(self, name: str, *, path: Path | None = None, url: str | None = None) -> None:
        self.name = name
        self.path = path
        self.url = url

    def open(self, *, duplicate_window: float = 600.0) -> Any:
        if self.url is not None:
            return PostgresStore(self.url, duplicate_window=duplicate_window)
        from receiver.store.sqlite_store import SqliteStore  # noqa: PLC0415

        assert self.path is not None
        return SqliteStore(self.path, duplicate_window=duplicate_window)

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        if self.url is not None:
            with psycopg.connect(self.url) as conn:
                return [tuple(row) for row in conn.execute(query.encode()).fetchall()]
        import sqlite3  # noqa: PLC0415

        lite = sqlite3.connect(self.path or ":memory:")
        try:
            return [tuple(row) for row in lite.execute(query).fetchall()]
        finally:
            lite.close()

    def store_toml(self) -> str:
        """The ``[store]`` section of a config file on this database."""
        if self.url is not None:
            return f'[store]\nurl = "{self.url}"\n'
        return f'[store]\npath = "{self.path}"\n'


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The test's database, on SQLite (a file in ``tmp_path``) and on PostgreSQL (``pg_url``)."""
    if request.param == "postgresql":
        return Backend("postgresql", url=request.getfixturevalue("pg_url"))
    return Backend("sqlite", path=tmp_path / "store.sqlite3")
