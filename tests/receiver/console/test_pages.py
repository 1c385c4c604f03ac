"""The operator's pages over real HTTP: each renders for a logged-in user, the live stream
carries a new signal, and the page forms need their CSRF token."""

from __future__ import annotations

import json

import trio

from tests.receiver.console.conftest import Console, send_sia


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
