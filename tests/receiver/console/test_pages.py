"""The operator's pages over real HTTP: each renders for a logged-in user, the live stream
carries a new signal, and the page forms need their CSRF token."""

from __future__ import annotations

import json

import trio

from tests.receiver.console.conftest import ON_BOTH, Console, send_sia


@ON_BOTH
async def test_every_page_renders_for_a_viewer(console: Console) -> None:
    """Live list, signal, accounts, account, status and manual queue pages answer 200 and show
    what they are about; a viewer gets no acknowledge button."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("vera") as client:
        [item] = (await client.get("/api/v1/signals")).json()["signals"]
        pages = {
            "/signals": "Burglary Alarm",
            f"/signals/{item['id']}": "NBA012",
            "/accounts?q=1234": "Main Street",
            "/accounts/S1/1234": "Recent signals",
            "/status": "automation",
            "/manual": "waiting for an operator",
        }
        for path, text in pages.items():
            answer = await client.get(path)
            assert answer.status_code == 200, path
            assert text in answer.text, path
            assert 'id="acknowledge"' not in answer.text
        missing = await client.get("/signals/nope")
        assert missing.status_code == 404
        assert "no signal" in missing.text


@ON_BOTH
async def test_live_stream_carries_a_new_signal(console: Console) -> None:
    """/events/signals sends a signal committed after the stream opened, as an SSE event."""
    async with (
        console.login("vera") as client,
        client.stream("GET", "/events/signals") as stream,
    ):
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.aiter_lines()
        assert (await lines.__anext__()).startswith("retry:")
        await send_sia(console.receiver, "FA", "003")
        with trio.fail_after(5):
            async for line in lines:
                if line.startswith("data: "):
                    event = json.loads(line.removeprefix("data: "))
                    break
    assert (event["account"], event["sia"], event["category"]) == ("1234", "FA", "alarm")


async def test_page_form_without_csrf_changes_nothing(console: Console) -> None:
    """An operator's acknowledge form posted without its CSRF token is refused (403)."""
    await send_sia(console.receiver, "BA", "012")
    async with console.login("otto") as client:
        [item] = (await client.get("/api/v1/manual")).json()["queue"]
        answer = await client.post(f"/signals/{item['id']}/acknowledge", data={})
        assert answer.status_code == 403
        assert "CSRF" in answer.text
        [still] = (await client.get("/api/v1/manual")).json()["queue"]
        assert still["handled_by"] is None


async def test_admin_changes_an_account_on_its_page(console: Console) -> None:
    """The account page has a change form for admins only: renumbering 1234 to 2345 moves the
    page; a number another account holds is shown refused (409) with the holder named, and
    nothing changes."""
    async with console.login("vera") as viewer:
        assert 'id="edit-account"' not in (await viewer.get("/accounts/S1/1234")).text
    async with console.login("ada") as admin:
        page = (await admin.get("/accounts/S1/1234")).text
        assert 'id="edit-account"' in page
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        added = await admin.post(
            "/api/v1/accounts",
            json={"station": "S1", "number": "7777"},
            headers={"X-CSRF-Token": csrf},
        )
        assert added.status_code == 201, added.text
        moved = await admin.post(
            "/accounts/S1/1234", data={"csrf": csrf, "number": "2345", "site": "Main Street"}
        )
        assert moved.status_code == 303
        assert moved.headers["location"] == "/accounts/S1/2345"
        refused = await admin.post(
            "/accounts/S1/2345", data={"csrf": csrf, "number": "7777", "site": "Main Street"}
        )
        assert refused.status_code == 409
        assert "7777 is taken at station S1" in refused.text
        assert (await admin.get("/accounts/S1/2345")).status_code == 200
