"""A real PostgreSQL server for the store's tests: one throwaway cluster per test session
(``initdb`` and ``pg_ctl`` in a temporary folder, on a free loopback port, as the ``postgres``
user when the tests run as root), and one migrated database, emptied before each test.

Under CI (``CI`` set, or ``HYPOTHESIS_PROFILE=ci`` as ``.ci/run`` sets it) a missing PostgreSQL
fails these tests. On a developer's machine they are skipped with the command that installs it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from receiver.store.postgres.cluster import INSTALL_HINT, Cluster, ClusterError, find_bin_dir
from receiver.store.postgres.cluster import start_cluster as _start_cluster
from receiver.store.postgres.store import PostgresStore

TEMPLATE = "store_test"


def under_ci() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("HYPOTHESIS_PROFILE") == "ci"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """The session's throwaway cluster, stopped and removed at the end."""
    if find_bin_dir() is None:
        if under_ci():
            pytest.fail(f"{INSTALL_HINT} (CI must run the PostgreSQL store tests)")
        pytest.skip(INSTALL_HINT)
    try:
        cluster = _start_cluster()
    except ClusterError as exc:
        pytest.fail(str(exc))
    try:
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
        PostgresStore(cluster.url_for(TEMPLATE)).close()  # migrated once
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
