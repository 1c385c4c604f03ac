"""The console's JSON API and its login rules, over real HTTP on loopback against a running
receiver (real SQLite file, frames from the panel simulator)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx
import pytest
import structlog.testing
import trio

from simulators.sink import SentinelSink
from tests.receiver.conftest import registry_setup
from tests.receiver.console.conftest import ON_BOTH, Console, add_user, send_sia


@ON_BOTH
async def test_healthz_answers_without_login(console: Console) -> None:
    """/healthz is open to anyone and says the listeners and the store are up."""
    async with console.client() as client:
        answer = await client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "listeners": "up", "store": "up"}


async def test_nothing_but_login_is_served_before_logging_in(console: Console) -> None:
    """Pages redirect to the login page; the API answers 401 with a message."""
    async with console.client() as client:
        page = await client.get("/signals")
        assert page.status_code == 303
        assert page.headers["location"].startswith("/login")
        for path in (
            "/api/v1/signals",
            "/api/v1/outputs",
            "/api/v1/openapi.json",
            "/events/signals",
        ):
            answer = await client.get(path)
            assert answer.status_code == 401, path
            assert answer.json() == {"error": "log in first"}
        assert (await client.get("/login")).status_code == 200


@ON_BOTH
async def test_signal_sent_by_a_panel_is_listed_and_shown_in_full(console: Console) -> None:
    """A frame from the panel simulator is in /api/v1/signals and its page holds the raw
    frame, the peer and where each output stands."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("vera") as client:
        listed = (await client.get("/api/v1/signals", params={"account": "1234"})).json()
        [item] = listed["signals"]
        assert (item["account"], item["sia"], item["category"]) == ("1234", "BA", "alarm")
        detail = (await client.get(f"/api/v1/signals/{item['id']}")).json()
    assert detail["peer"].startswith("127.0.0.1:")
    assert re.search(r'"SIA-DCS"\d{4}L0#1234\[#1234\|NBA012\]', detail["raw"])
    assert detail["deliveries"] == [{"output": "automation", "state": "waiting"}]


async def test_filters_select_signals(console: Console) -> None:
    """category, code and limit narrow the list; a bad filter is a 422 naming it."""
    await send_sia(console.receiver, "BA", "001")
    await send_sia(console.receiver, "OP", "002")
    async with console.login("vera") as client:
        alarms = (await client.get("/api/v1/signals", params={"category": "alarm"})).json()
        assert [s["sia"] for s in alarms["signals"]] == ["BA"]
        opening = (await client.get("/api/v1/signals", params={"code": "op"})).json()
        assert [s["sia"] for s in opening["signals"]] == ["OP"]
        one = (await client.get("/api/v1/signals", params={"limit": "1"})).json()
        assert len(one["signals"]) == 1
        bad = await client.get("/api/v1/signals", params={"category": "panic"})
        assert bad.status_code == 422
        assert "unknown category 'panic'" in bad.json()["error"]
        assert (await client.get("/api/v1/signals", params={"limit": "x"})).status_code == 422
        assert (await client.get("/api/v1/signals", params={"color": "red"})).status_code == 422


async def test_unknown_signal_and_account_are_404(console: Console) -> None:
    """An unknown signal, account or endpoint is a 404 with a message."""
    async with console.login("vera") as client:
        answer = await client.get("/api/v1/signals/nope")
        assert answer.status_code == 404
        assert answer.json() == {"error": "no signal 'nope'"}
        answer = await client.get("/api/v1/accounts/S1/9999")
        assert answer.status_code == 404
        assert (await client.get("/api/v1/nothing")).status_code == 404


@ON_BOTH
async def test_accounts_outputs_bridges_troubles(console: Console) -> None:
    """The registry, the outputs' state (down sink: manual mode at manual_after = 0)."""
    async with console.login("vera") as client:
        accounts = (await client.get("/api/v1/accounts", params={"q": "main"})).json()["accounts"]
        assert [(a["station"], a["effective"]) for a in accounts] == [("S1", "1234")]
        account = (await client.get("/api/v1/accounts/S1/1234")).json()
        assert account["site"] == "Main Street"
        [output] = (await client.get("/api/v1/outputs")).json()["outputs"]
        assert output["name"] == "automation"
        assert output["connected"] is False
        assert output["manual_mode"] is True
        assert (await client.get("/api/v1/bridges")).json() == {"bridges": []}
        assert (await client.get("/api/v1/troubles")).json() == {"troubles": []}
        spec = (await client.get("/api/v1/openapi.json")).json()
        assert "/api/v1/signals/{signal_id}/acknowledge" in spec["paths"]


@ON_BOTH
async def test_a_registered_bridge_is_in_the_bridge_report(console: Console) -> None:
    """A bridge added with the CLI is listed with its site and dealer, never seen yet."""
    registry_setup(
        console.receiver.config_path,
        [
            *("bridges", "add", "--site", "Main Street", "--serial", "CKB304-0002"),
            *("--token", "t2", "--channels", "4"),
        ],
    )
    async with console.login("vera") as client:
        [bridge] = (await client.get("/api/v1/bridges")).json()["bridges"]
        status = (await client.get("/api/v1/status")).json()
    assert (bridge["serial"], bridge["site"], bridge["dealer"], bridge["account"]) == (
        "CKB304-0002",
        "Main Street",
        "D1",
        "1234",
    )
    assert (bridge["status"], bridge["channels"], bridge["troubles"]) == ("never", 4, [])
    assert [b["serial"] for b in status["bridges"]] == ["CKB304-0002"]


@ON_BOTH
async def test_operator_acknowledges_a_manual_mode_alarm_and_it_is_journaled(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the automation sink down, an operator acknowledges the alarm through the API
    token; the acknowledgement and its audit row name the operator; a second try is 409."""
    await send_sia(console.receiver, "BA", "012")
    capsys.readouterr()
    code = console.receiver.cli("users", "token", "otto", "--label", "automation bridge")
    assert code == 0
    async with console.login("vera") as client:
        [item] = (await client.get("/api/v1/manual")).json()["queue"]
    signal_id = item["id"]
    token = capsys.readouterr().out.strip().splitlines()[0]
    async with httpx.AsyncClient(
        base_url=console.url, headers={"Authorization": f"Bearer {token}"}
    ) as machine:
        answer = await machine.post(f"/api/v1/signals/{signal_id}/acknowledge")
        assert answer.status_code == 200, answer.text
        assert answer.json()["acknowledged_by"] == "otto"
        again = await machine.post(f"/api/v1/signals/{signal_id}/acknowledge")
        assert again.status_code == 409
        assert "already acknowledged by otto" in again.json()["error"]
    assert console.store.sql('SELECT "user", outputs FROM manual_acks') == [("otto", "automation")]
    assert console.store.sql(
        "SELECT \"user\", action, subject FROM audit WHERE action = 'acknowledge'"
    ) == [("otto", "acknowledge", signal_id)]


async def test_viewer_cannot_acknowledge(console: Console) -> None:
    """403 with the reason, a log line, and no acknowledgement stored."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("vera") as client:
        [item] = (await client.get("/api/v1/manual")).json()["queue"]
        with structlog.testing.capture_logs() as logs:
            answer = await client.post(f"/api/v1/signals/{item['id']}/acknowledge")
    assert answer.status_code == 403
    assert answer.json() == {"error": "vera is a viewer; this needs an operator"}
    assert any(e["event"] == "console_refused" and e["status"] == 403 for e in logs)
    conn = sqlite3.connect(console.receiver.db)
    try:
        assert conn.execute("SELECT count(*) FROM manual_acks").fetchone() == (0,)
    finally:
        conn.close()


@ON_BOTH
async def test_session_changes_need_the_csrf_token(console: Console) -> None:
    """An operator's session without the CSRF token is refused (403), with it accepted."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("otto") as client:
        [item] = (await client.get("/api/v1/manual")).json()["queue"]
        url = f"/api/v1/signals/{item['id']}/acknowledge"
        refused = await client.post(url)
        assert refused.status_code == 403
        assert "CSRF" in refused.json()["error"]
        page = (await client.get(f"/signals/{item['id']}")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        assert (
            await client.post(url, content=b"{not json", headers={"X-CSRF-Token": csrf})
        ).status_code == 422
        accepted = await client.post(url, headers={"X-CSRF-Token": csrf})
        assert accepted.status_code == 200, accepted.text
    # The change and the audit row that names who made it, committed together.
    assert console.store.sql('SELECT signal_id, "user" FROM manual_acks') == [(item["id"], "otto")]
    assert console.store.sql(
        "SELECT \"user\", subject FROM audit WHERE action = 'acknowledge'"
    ) == [("otto", item["id"])]


async def test_wrong_password_is_401_and_repeated_failures_are_rate_limited(
    console: Console,
) -> None:
    """Five wrong passwords, then even the right one is refused with 429 for a while."""
    async with console.client() as client:
        for _ in range(5):
            answer = await client.post("/login", data={"name": "otto", "password": "wrong"})
            assert answer.status_code == 401
            assert "wrong user name or password" in answer.text
        answer = await client.post("/login", data={"name": "otto", "password": "otto-operator-pw"})
        assert answer.status_code == 429
        assert "too many failed logins" in answer.text
        assert int(answer.headers["retry-after"]) > 0
        assert "receiver_session" not in answer.cookies


async def test_unknown_token_is_401(console: Console) -> None:
    """A forged API token is refused."""
    async with httpx.AsyncClient(
        base_url=console.url, headers={"Authorization": "Bearer forged"}
    ) as client:
        answer = await client.get("/api/v1/signals")
    assert answer.status_code == 401
    assert answer.json() == {"error": "unknown or revoked API token"}


async def test_users_cli_lists_users_and_refuses_short_passwords(
    console: Console, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver users add` reads the password from stdin, `receiver users list` shows each
    user and role; a short password is refused (exit 2)."""
    assert add_user(console.receiver.config_path, "carl", "operator", "carl-password") == 0
    async with console.client() as client:
        answer = await client.post("/login", data={"name": "carl", "password": "carl-password"})
        assert answer.status_code == 303
    assert add_user(console.receiver.config_path, "bob", "viewer", "short") == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert console.receiver.cli("users", "list", "--format", "csv") == 0
    out = capsys.readouterr().out
    for line in ("ada,admin", "carl,operator", "otto,operator", "vera,viewer"):
        assert line in out
    assert "bob" not in out


@ON_BOTH
async def test_admin_adds_an_account_and_a_collision_names_the_holder(console: Console) -> None:
    """An admin adds account 4321 through the API (audited); adding 1234 again is refused
    with the holder named as the CLI names it; an operator may not add; bad bodies are 422."""
    async with console.login("ada") as admin:
        page = (await admin.get("/accounts")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        headers = {"X-CSRF-Token": csrf}
        added = await admin.post(
            "/api/v1/accounts",
            json={"station": "S1", "number": "4321", "site": "Main Street"},
            headers=headers,
        )
        assert added.status_code == 201, added.text
        assert added.json()["effective"] == "4321"
        taken = await admin.post(
            "/api/v1/accounts", json={"station": "S1", "number": "1234"}, headers=headers
        )
        assert taken.status_code == 409
        assert taken.json()["error"] == (
            'account 1234 is taken at station S1: held by site "Main Street" (line 0, number 1234)'
        )
        unknown = await admin.post(
            "/api/v1/accounts", json={"station": "S9", "number": "1111"}, headers=headers
        )
        assert unknown.status_code == 404, unknown.text
        for body in (
            b"[1]",
            b"{oops",
            b'{"station": "S1"}',
            b'{"station": "S1", "number": "5", "x": 1}',
        ):
            answer = await admin.post("/api/v1/accounts", content=body, headers=headers)
            assert answer.status_code == 422, body
        form = await admin.post("/accounts", data={"csrf": csrf, "station": "S1", "number": "1234"})
        assert form.status_code == 409
        assert "held by site" in form.text
    async with console.login("otto") as operator:
        refused = await operator.post("/api/v1/accounts", json={"station": "S1", "number": "77"})
        assert refused.status_code == 403
    assert console.store.sql("SELECT effective FROM accounts ORDER BY effective") == [
        ("1234",),
        ("4321",),
    ]
    assert console.store.sql(
        "SELECT \"user\", action, subject FROM audit WHERE action = 'account_add'"
    ) == [("ada", "account_add", "S1/4321")]


async def test_automation_still_gets_a_hand_acknowledged_alarm(
    console: Console, tmp_path: Path
) -> None:
    """An alarm acknowledged by hand while the sink was down reaches the sink when it comes
    back; the signal then shows delivered, and still shows who handled it by hand."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("otto") as client:
        [item] = (await client.get("/api/v1/manual")).json()["queue"]
        page = (await client.get(f"/signals/{item['id']}")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        acked = await client.post(
            f"/api/v1/signals/{item['id']}/acknowledge", headers={"X-CSRF-Token": csrf}
        )
        assert acked.status_code == 200
        sink = SentinelSink(tmp_path / "sink")
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.serve, "127.0.0.1", console.sink_port)
            with trio.fail_after(20):
                while not list((tmp_path / "sink").glob("*.xml")):
                    await trio.sleep(0.05)
            with trio.fail_after(10):
                while True:
                    detail = (await client.get(f"/api/v1/signals/{item['id']}")).json()
                    if detail["deliveries"][0]["state"] == "delivered":
                        break
                    await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
        assert detail["manual_ack"]["user"] == "otto"
        assert detail["waiting_for_manual"] == []
        handled = (await client.get("/api/v1/manual")).json()
        assert handled["queue"] == []
        assert [h["handled_by"] for h in handled["handled"]] == ["otto"]


async def test_expired_session_is_401_and_logout_ends_the_session(console: Console) -> None:
    """A session past its end answers 401 "expired"; after logging out the cookie is useless."""
    async with console.login("vera") as client:
        assert (await client.get("/api/v1/signals")).status_code == 200
        conn = sqlite3.connect(console.receiver.db)
        try:
            conn.execute("UPDATE console_sessions SET expires_us = 0")
            conn.commit()
        finally:
            conn.close()
        expired = await client.get("/api/v1/signals")
        assert expired.status_code == 401
        assert expired.json() == {"error": "your session has expired: log in again"}
    async with console.login("vera") as client:
        page = (await client.get("/signals")).text
        assert page.count("default-src") == 0  # the policy is a header, not in the page
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        cookie = client.cookies["receiver_session"]
        out = await client.post("/logout", data={"csrf": csrf})
        assert out.status_code == 303
    async with console.client() as stale:
        stale.cookies.set("receiver_session", cookie)
        assert (await stale.get("/api/v1/signals")).status_code == 401


async def test_pages_carry_a_content_security_policy(console: Console) -> None:
    """No script from elsewhere may run in a console page, nor may another site frame it."""
    async with console.client() as client:
        answer = await client.get("/login")
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")


async def test_an_oversized_body_is_refused_unread(console: Console) -> None:
    """A body over 64 KiB is a 413; nothing is parsed or stored."""
    async with console.client() as client:
        answer = await client.post("/login", content=b"x" * (70 * 1024))
    assert answer.status_code == 413
    assert answer.json() == {"error": "request body over 65536 bytes"}


async def test_a_new_password_ends_the_old_sessions(console: Console) -> None:
    """`receiver users add` on an existing user sets the new password and logs them out."""
    async with console.login("vera") as client:
        assert (await client.get("/api/v1/signals")).status_code == 200
        assert add_user(console.receiver.config_path, "vera", "viewer", "a-new-password") == 0
        assert (await client.get("/api/v1/signals")).status_code == 401


@ON_BOTH
async def test_admin_adds_a_user_through_the_api(console: Console) -> None:
    """An admin adds an operator (audited) who can then log in; an operator may not add
    users; a short password or unknown role is a 422."""
    async with console.login("ada") as admin:
        csrf = (await admin.get("/accounts")).text.split('name="csrf" value="')[1].split('"')[0]
        headers = {"X-CSRF-Token": csrf}
        new = {"name": "nina", "role": "operator", "password": "nina-password"}
        added = await admin.post("/api/v1/users", json=new, headers=headers)
        assert added.status_code == 201, added.text
        short = await admin.post("/api/v1/users", json={**new, "password": "x"}, headers=headers)
        assert short.status_code == 422
        boss = await admin.post("/api/v1/users", json={**new, "role": "boss"}, headers=headers)
        assert boss.status_code == 422
        names = [u["name"] for u in (await admin.get("/api/v1/users")).json()["users"]]
        assert "nina" in names
        audit = (await admin.get("/api/v1/audit")).json()["audit"]
        assert (audit[0]["user"], audit[0]["action"], audit[0]["subject"]) == (
            "ada",
            "user_add",
            "nina",
        )
    async with console.client() as client:
        login = await client.post("/login", data={"name": "nina", "password": "nina-password"})
        assert login.status_code == 303
        assert (await client.get("/api/v1/users")).status_code == 403


async def test_status_shows_the_connected_panels(console: Console) -> None:
    """A panel's open connection shows on the status: count and the address it comes from."""
    stream = await trio.open_tcp_stream("127.0.0.1", console.receiver.ports.dc09)
    async with console.login("vera") as client:
        with trio.fail_after(5):
            while True:
                status = (await client.get("/api/v1/status")).json()
                if status["listeners"]["dc09"]["connections"] == 1:
                    break
                await trio.sleep(0.05)
        assert status["listeners"]["dc09"]["peers"] == {"127.0.0.1": 1}
        assert status["node"]["listening"] is True
        page = (await client.get("/status")).text
        assert "127.0.0.1 (1)" in page
    await stream.aclose()


@ON_BOTH
async def test_admin_changes_an_account_and_a_collision_names_the_holder(console: Console) -> None:
    """An admin renumbers account 1234 to 5678 (audited, and the running receiver resolves the
    new number); renumbering another account onto 5678 is refused with the holder named, as
    `receiver accounts edit` refuses it; an operator may not change accounts."""
    async with console.login("ada") as admin:
        page = (await admin.get("/accounts")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        headers = {"X-CSRF-Token": csrf}
        added = await admin.post(
            "/api/v1/accounts", json={"station": "S1", "number": "4321"}, headers=headers
        )
        assert added.status_code == 201, added.text
        changed = await admin.patch(
            "/api/v1/accounts/S1/1234", json={"number": "5678"}, headers=headers
        )
        assert changed.status_code == 200, changed.text
        assert (changed.json()["was"], changed.json()["effective"]) == ("1234", "5678")
        assert (await admin.get("/api/v1/accounts/S1/5678")).status_code == 200
        assert (await admin.get("/api/v1/accounts/S1/1234")).status_code == 404
        taken = await admin.patch(
            "/api/v1/accounts/S1/4321", json={"number": "5678"}, headers=headers
        )
        assert taken.status_code == 409
        assert "5678 is taken at station S1" in taken.json()["error"]
        assert (await admin.get("/api/v1/accounts/S1/4321")).status_code == 200
        for body in ({}, {"colour": "red"}, {"number": 5}):
            bad = await admin.patch("/api/v1/accounts/S1/4321", json=body, headers=headers)
            assert bad.status_code == 422, (body, bad.text)
        audit = (await admin.get("/api/v1/audit")).json()
        actions = [(row["user"], row["action"]) for row in audit["audit"]]
        assert ("ada", "account_edit") in actions
    async with console.login("otto") as operator:
        page = (await operator.get("/signals")).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0] if 'name="csrf"' in page else ""
        refused = await operator.patch(
            "/api/v1/accounts/S1/4321", json={"number": "9999"}, headers={"X-CSRF-Token": csrf}
        )
        assert refused.status_code == 403
