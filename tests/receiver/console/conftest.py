"""A running receiver with its console on a loopback port, users of each role, and an
automation output (Sentinel) whose sink is down, so manual mode can be seen.

The ``console`` fixture runs on SQLite; a test marked ``@ON_BOTH`` runs on SQLite and on
PostgreSQL (the session's throwaway cluster, ``pg_url``)."""

from __future__ import annotations

import functools
import io
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from protocols.signal import SiaView
from receiver.cli import main as receiver_cli
from receiver.config import parse_config
from receiver.console.auth import hash_password
from receiver.store import open_console_store
from receiver.store.console_tables import console_statements
from simulators.panel import PanelFleet, PanelOptions, Transmission
from tests.conftest import Backend
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver, write_config
from tests.receiver.test_crash import free_port

# The console's behaviour on either store: `@ON_BOTH` on a test that takes ``console``.
ON_BOTH = pytest.mark.parametrize("console", ["sqlite", "postgresql"], indirect=True)

PASSWORDS = {"ada": "ada-admin-pw", "otto": "otto-operator-pw", "vera": "vera-viewer-pw"}
ROLES = {"ada": "admin", "otto": "operator", "vera": "viewer"}


@attrs.define
class Console:
    receiver: RunningReceiver
    url: str
    sink_port: int
    store: Backend  # its database, read directly for what only the store shows

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, follow_redirects=False, timeout=10.0)

    @asynccontextmanager
    async def login(self, name: str) -> AsyncIterator[httpx.AsyncClient]:
        """A client holding ``name``'s login session."""
        async with self.client() as client:
            answer = await client.post("/login", data={"name": name, "password": PASSWORDS[name]})
            assert answer.status_code == 303, answer.text
            yield client


def add_user(config: Path, name: str, role: str, password: str) -> int:
    stdin = sys.stdin
    sys.stdin = io.StringIO(password + "\n")
    try:
        return receiver_cli(["--config", str(config), "users", "add", name, "--role", role])
    finally:
        sys.stdin = stdin


@functools.cache
def _password_hash(password: str) -> str:
    return hash_password(password)  # argon2 takes a quarter second: once per test run


def add_users(config: Path) -> None:
    """The three users, written with the statements `receiver users add` runs (its own test
    runs the command itself)."""
    store = parse_config(config.read_text(encoding="utf-8")).store
    sql = console_statements(store)
    source = open_console_store(store)
    tables = source.console()
    try:
        tables.commit(
            [
                (sql.INSERT_USER, (name, role, _password_hash(PASSWORDS[name]), 0))
                for name, role in ROLES.items()
            ]
        )
    finally:
        tables.close()
        source.close()


def console_config(
    tmp_path: Path, sink_port: int, manual_after: float = 0.0, *, store: str | None = None
) -> Path:
    path = write_config(
        tmp_path,
        f'[console]\nlisten = "127.0.0.1:0"\nmanual_after = {manual_after}\n',
        store=store,
    )
    text = path.read_text().replace("outputs = []\n", "")
    text += (
        f'\n[[outputs]]\nname = "automation"\nkind = "sentinel"\n'
        f'address = "127.0.0.1:{sink_port}"\ntimeout = 1.0\n'
    )
    path.write_text(text)
    return path


async def send_sia(
    receiver: RunningReceiver,
    code: str = "BA",
    zone: str = "012",
    count: int = 1,
    account: str = "1234",
) -> None:
    """Frames from the panel simulator, each waiting for its ACK."""
    fleet = PanelFleet(("127.0.0.1", receiver.ports.dc09), PanelOptions(timeout=5.0))
    lane = [Transmission(0, account, "SIA-DCS", SiaView(code, zone)) for _ in range(count)]
    summary = await fleet.run([lane])
    assert summary.acked_events == count, summary.line()


def console_store(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The store a ``console`` test runs on: SQLite unless ``@ON_BOTH`` asks for another."""
    if getattr(request, "param", "sqlite") == "postgresql":
        return Backend("postgresql", url=request.getfixturevalue("pg_url"))
    return Backend("sqlite", path=tmp_path / "receiver.sqlite3")


@pytest.fixture
async def console(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Console]:
    sink_port = free_port()  # nothing listens there: the automation sink is down
    store = console_store(request, tmp_path)
    config = console_config(tmp_path, sink_port, store=store.store_toml())
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
    )
    add_users(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        assert running.ports.console is not None
        yield Console(running, f"http://127.0.0.1:{running.ports.console}", sink_port, store)
        running.service.request_shutdown()
