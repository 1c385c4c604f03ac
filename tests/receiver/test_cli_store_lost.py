"""A PostgreSQL store that goes away, as the engineer at the terminal sees it: the server stopped
(``pg_ctl stop``) before ``receiver serve`` starts, while it starts, or in the middle of a CLI
command is one line on stderr and exit 1 (a store that cannot be reached, as the CLI says of a
store it cannot open), never a traceback and never exit 2 (bad input).

These tests stop their server, so they run on a throwaway cluster of their own (the session's
is shared); a command is caught "in the middle" by holding a lock on the table it reads, so
that it waits inside its query when the server stops.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from receiver.store.postgres.cluster import INSTALL_HINT, Cluster, find_bin_dir, start_cluster
from receiver.store.postgres.schema import connect
from tests.conftest import unavailable

SCRIPT = Path(sys.executable).with_name("receiver")
LOST = "terminating connection due to administrator command"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if find_bin_dir() is None:
        unavailable(f"{INSTALL_HINT} (CI must run the PostgreSQL tests)")
    own = start_cluster()
    try:
        connect(own.url).close()  # migrated
        yield own
    finally:
        own.stop()


@pytest.fixture
def server(cluster: Cluster) -> Cluster:
    """The module's cluster, running (a test before may have stopped it)."""
    cluster.resume()
    return cluster


def write_config(folder: Path, url: str) -> Path:
    """A node on ``url`` with its console on (and every listener on a free loopback port)."""
    path = folder / "receiver.toml"
    path.write_text(
        f"outputs = []\n[store]\nurl = {json.dumps(url)}\n"
        "[dc09]\nlisten = '127.0.0.1:0'\n[bridge]\nlisten = '127.0.0.1:0'\n"
        "[console]\nlisten = '127.0.0.1:0'\n[ingest]\nworkers = 1\n",
        encoding="utf-8",
    )
    return path


def receiver(config: Path, *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(SCRIPT), *command, "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RECEIVER_CONFIG": ""},
    )


def finished(process: subprocess.Popen[str]) -> tuple[int, list[str]]:
    """Its exit code and the lines of stderr that are not log events (JSON lines)."""
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        pytest.fail(f"still running a minute after its store stopped: {err[-2000:]}")
    assert "Traceback" not in err, err
    return process.returncode, [line for line in err.splitlines() if not line.startswith("{")]


@contextlib.contextmanager
def table_locked(url: str, table: str) -> Iterator[None]:
    """``table`` locked against every reader until the server stops."""
    holder = psycopg.connect(url)
    holder.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()


def wait_until_waiting(url: str, table: str) -> None:
    """Until a receiver's query waits on the lock held on ``table`` (bounded)."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(1200):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'receiver' "
                "AND wait_event_type = 'Lock' AND position(%s in query) > 0",
                (table,),
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            time.sleep(0.05)
    pytest.fail(f"no receiver query ever waited on {table}")


@pytest.mark.slow
def test_serve_with_the_server_stopped_is_one_line(server: Cluster, tmp_path: Path) -> None:
    """The server is down when `receiver serve` starts (console on): one line naming the store
    (before the service builds anything), exit 1."""
    config = write_config(tmp_path, server.url)
    server.halt()
    code, lines = finished(receiver(config, "serve"))
    assert code == 1
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"receiver: cannot connect to the PostgreSQL store {server.url}")


@pytest.mark.slow
def test_serve_losing_the_server_while_it_starts_is_one_line(
    server: Cluster, tmp_path: Path
) -> None:
    """The server stops while `receiver serve` loads the registry (after its first check of the
    store): the first failure in one line, exit 1, no traceback."""
    config = write_config(tmp_path, server.url)
    with table_locked(server.url, "accounts"):
        process = receiver(config, "serve")
        wait_until_waiting(server.url, "accounts")
        server.halt()
    code, lines = finished(process)
    assert code == 1
    assert lines == [f"receiver: the PostgreSQL store failed: {LOST}"]


COMMANDS = [
    pytest.param("signals", ("history",), "history failed", id="history"),
    pytest.param("accounts", ("accounts", "list"), "the PostgreSQL store failed", id="accounts"),
    pytest.param("nodes", ("nodes",), "nodes read failed", id="nodes"),
    pytest.param("users", ("users", "list"), "the PostgreSQL store failed", id="users"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("table", "command", "what"), COMMANDS)
def test_a_command_losing_the_server_midway_is_one_line(
    server: Cluster, tmp_path: Path, table: str, command: tuple[str, ...], what: str
) -> None:
    """The server stops while the command waits inside its query: what failed and why in one
    line (after what the command printed before it), exit 1."""
    config = write_config(tmp_path, server.url)
    with table_locked(server.url, table):
        process = receiver(config, *command)
        wait_until_waiting(server.url, table)
        server.halt()
    code, lines = finished(process)
    assert code == 1
    assert lines[-1] == f"receiver: {what}: {LOST}"
    # `receiver nodes` names the store it reads first; nothing else is said
    assert all(line.startswith("receiver: nodes of configuration") for line in lines[:-1])
