"""The console's own connection to the store: on PostgreSQL (``[store] url``) each write
commits in one transaction of its own, the change with its audit row or neither; a connection
the server ends is a store fault, answered, and the next request connects again. On either
backend the console reads through the store's interface only (``console()``)."""

from __future__ import annotations

import sys
from pathlib import Path

import attrs
import httpx
import psycopg
import pytest

from receiver.config import parse_config
from receiver.console.app import build_app
from receiver.console.state import ConsoleState, StoreReader
from receiver.registry import backends
from receiver.service import Ports, Service
from tests.receiver.console.conftest import ON_BOTH, Console, console_config, send_sia


async def test_on_postgresql_a_change_and_its_audit_row_commit_together(
    pg_url: str, tmp_path: Path
) -> None:
    """A write whose second statement fails leaves nothing behind (not even the audit row
    before it); the next write commits on a fresh connection."""
    config_path = console_config(tmp_path, 1, store=f'[store]\nurl = "{pg_url}"\n')
    reader = StoreReader(parse_config(config_path.read_text(encoding="utf-8")))
    sql = reader.sql
    try:
        audit_row = sql.audit_statement(1, "ada", "user_add", "nina", {"role": "operator"})
        with pytest.raises(psycopg.Error):
            await reader.commit([audit_row, ("INSERT INTO nowhere VALUES (1)", ())])
        assert await reader.run(lambda tables: tables.audit()) == []
        await reader.commit([audit_row])
        [row] = await reader.run(lambda tables: tables.audit())
    finally:
        reader.close()
    assert (row["user"], row["action"], row["subject"], row["detail"]) == (
        "ada",
        "user_add",
        "nina",
        {"role": "operator"},
    )


async def test_on_postgresql_a_lost_connection_is_store_down_then_reconnected(
    pg_url: str, tmp_path: Path
) -> None:
    """The server ends the console's connection: /healthz answers 503 "store down" (no
    crash), and the next request connects again and answers 200."""
    config = parse_config(
        console_config(tmp_path, 1, store=f'[store]\nurl = "{pg_url}"\n').read_text()
    )
    service = Service(config)
    service.ports = Ports(dc09=1, bridge=2)  # as if listening: only the store is in question
    state = ConsoleState(config, service)
    transport = httpx.ASGITransport(app=build_app(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            assert (await client.get("/healthz")).json()["store"] == "up"
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            down = await client.get("/healthz")
            assert (down.status_code, down.json()["store"]) == (503, "down")
            up = await client.get("/healthz")
            assert (up.status_code, up.json()) == (
                200,
                {"status": "ok", "listeners": "up", "store": "up"},
            )
    finally:
        state.reader.close()
        service.journal.close()
        service.registry.close()


async def test_the_console_starts_while_the_postgresql_server_is_down(tmp_path: Path) -> None:
    """Built on a server nobody runs (it stopped after `receiver serve` checked it), the console
    starts without touching it on the event loop; its health, metrics, API and pages answer
    that the store is down (503), never a traceback, and the process goes on."""
    url = "postgresql://receiver@127.0.0.1:1/receiver"  # a loopback port nobody listens on
    config = parse_config(console_config(tmp_path, 1).read_text())
    service = Service(config)
    service.ports = Ports(dc09=1, bridge=2)  # as if listening: only the store is in question
    state = ConsoleState(attrs.evolve(config, store=attrs.evolve(config.store, url=url)), service)
    transport = httpx.ASGITransport(app=build_app(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            down = await client.get("/healthz")
            assert (down.status_code, down.json()["store"]) == (503, "down")
            metrics = await client.get("/metrics")
            assert metrics.status_code == 503, metrics.text
            assert metrics.json()["error"].startswith("the store is unavailable: ")
            api = await client.get("/api/v1/signals", headers={"authorization": "Bearer x"})
            assert api.status_code == 503, api.text
            client.cookies.set("receiver_session", "x")
            page = await client.get("/signals")
            assert page.status_code == 503, page.text
            assert "the store is unavailable" in page.text
    finally:
        state.reader.close()
        service.journal.close()
        service.registry.close()


@pytest.fixture
def no_connection_by_location(monkeypatch: pytest.MonkeyPatch) -> None:
    """From before the receiver starts, ``receiver.registry.backends.connect``, under whatever
    name a module imported it, raises: only the store's interface may open the database."""

    def opened_by_location(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the database was opened by location: {args}")

    connect = backends.connect
    for module in list(sys.modules.values()):
        if getattr(module, "connect", None) is connect:
            monkeypatch.setattr(module, "connect", opened_by_location)


@ON_BOTH
async def test_the_console_reads_and_writes_through_the_store_interface(
    no_connection_by_location: None, console: Console
) -> None:
    """Logins, every page, the API (reads, an account added, an acknowledgement), /metrics
    and /healthz answer as before with ``backends.connect`` made to raise: the console reads
    through the store's ``console()`` tables (DESIGN: only the store speaks SQL). Before, its
    reader opened its own connection by location and every request failed."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("ada") as client:
        [item] = (await client.get("/api/v1/signals")).json()["signals"]
        assert (item["sia"], item["handled_by"]) == ("BA", None)
        pages = {
            "/signals": "Burglary Alarm",
            f"/signals/{item['id']}": "NBA012",
            "/accounts?q=1234": "Main Street",
            "/accounts/S1/1234": "Recent signals",
            "/status": "automation",
            "/manual": 'class="acknowledge"',  # an admin may acknowledge by hand
        }
        for path, text in pages.items():
            answer = await client.get(path)
            assert (answer.status_code, text in answer.text) == (200, True), path
        page = (await client.get("/accounts")).text
        headers = {"X-CSRF-Token": page.split('name="csrf" value="')[1].split('"')[0]}
        added = await client.post(
            "/api/v1/accounts", json={"station": "S1", "number": "4321"}, headers=headers
        )
        assert added.status_code == 201, added.text
        taken = await client.post(
            "/api/v1/accounts", json={"station": "S1", "number": "1234"}, headers=headers
        )
        assert taken.status_code == 409, taken.text
        [queued] = (await client.get("/api/v1/manual")).json()["queue"]  # the sink is down
        assert queued["id"] == item["id"]
        acked = await client.post(f"/api/v1/signals/{item['id']}/acknowledge", headers=headers)
        assert acked.status_code == 200, acked.text
        manual = (await client.get("/api/v1/manual")).json()
        assert [h["handled_by"] for h in manual["handled"]] == ["ada"]
        for path in ("/api/v1/bridges", "/api/v1/troubles", "/api/v1/status", "/api/v1/users"):
            assert (await client.get(path)).status_code == 200, path
        audit = (await client.get("/api/v1/audit")).json()["audit"]
        assert [a["action"] for a in audit] == ["acknowledge", "account_add"]
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert 'receiver_registry_size{kind="accounts"} 2.0' in metrics.text
        assert (await client.get("/healthz")).json()["store"] == "up"
