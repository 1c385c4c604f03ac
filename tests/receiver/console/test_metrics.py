"""/metrics parsed with prometheus-client's own parser, against traffic the panel simulator
sent; /healthz when the listeners are not up."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from protocols import dc09
from receiver.config import parse_config
from receiver.console.app import build_app
from receiver.console.openapi import OPENAPI
from receiver.console.state import ConsoleState
from receiver.service import Service
from tests.receiver.console.conftest import ON_BOTH, Console, console_config, send_sia


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@ON_BOTH
async def test_metrics_count_the_traffic_sent(console: Console) -> None:
    """Three alarms from the panel simulator and one retry of the last frame: frames, ACKs,
    the duplicate, the commits, the backlog at the down sink and the registry size show it."""
    await send_sia(console.receiver, "BA", "001", count=3)
    frame = dc09.encode_frame("SIA-DCS", 77, "1234", "#1234|NBA009")
    stream = await trio.open_tcp_stream("127.0.0.1", console.receiver.ports.dc09)
    for _ in range(2):  # the same frame twice: the second is a retry, absorbed
        await stream.send_all(frame)
        reply = b""
        while b"\r" not in reply:
            reply += await stream.receive_some(4096)
    async with console.client() as client:
        answer = await client.get("/metrics")  # no login needed (metrics_login = false)
        assert answer.status_code == 200
        found = samples(answer.text)
    await stream.aclose()
    dc09_ok = (("listener", "dc09"), ("outcome", "ok"))
    assert found[("receiver_frames_total", dc09_ok)] == 5
    assert found[("receiver_replies_total", (("kind", "ack"), ("listener", "dc09")))] == 5
    assert found[("receiver_duplicates_total", (("listener", "dc09"),))] == 1
    assert found[("receiver_signals_committed_total", ())] == 4
    assert found[("receiver_commits_total", ())] >= 4
    assert found[("receiver_connections", (("listener", "dc09"),))] == 1
    automation = (("output", "automation"),)
    assert found[("receiver_output_connected", automation)] == 0
    assert found[("receiver_output_backlog", automation)] == 4
    assert found[("receiver_output_oldest_age_seconds", automation)] >= 0
    assert found[("receiver_output_manual_mode", automation)] == 1
    assert found[("receiver_manual_queue", ())] == 4
    assert found[("receiver_registry_size", (("kind", "accounts"),))] == 1
    assert found[("receiver_open_troubles", ())] == 0
    assert found[("receiver_ack_latency_seconds_count", ())] == 5
    assert found[("receiver_ack_latency_seconds_bucket", (("le", "+Inf"),))] == 5
    assert found[("receiver_ack_latency_seconds_sum", ())] > 0
    assert (
        found[("receiver_commit_latency_seconds_count", ())]
        == found[("receiver_commits_total", ())]
    )


async def test_metrics_can_require_a_login(tmp_path: Path) -> None:
    """With metrics_login = true, /metrics answers 401 to a caller without a login."""
    config_path = console_config(tmp_path, 1)
    text = config_path.read_text().replace("[console]\n", "[console]\nmetrics_login = true\n")
    config = parse_config(text)
    service = Service(config)
    state = ConsoleState(config, service)
    transport = httpx.ASGITransport(app=build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        answer = await client.get("/metrics")
    state.reader.close()
    assert answer.status_code == 401


async def test_healthz_is_503_while_the_listeners_are_down(tmp_path: Path) -> None:
    """A service whose listeners have not started (or stopped) is not healthy."""
    config = parse_config(console_config(tmp_path, 1).read_text())
    service = Service(config)  # never started: no listener is up
    state = ConsoleState(config, service)
    transport = httpx.ASGITransport(app=build_app(state))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        answer = await client.get("/healthz")
    state.reader.close()
    assert answer.status_code == 503
    assert answer.json() == {"status": "down", "listeners": "down", "store": "up"}


def test_openapi_document_names_every_api_route(tmp_path: Path) -> None:
    """Every /api/v1 route is in /api/v1/openapi.json, and nothing else is."""
    config = parse_config(console_config(tmp_path, 1).read_text())
    app = build_app(ConsoleState(config, Service(config)))
    routes = {
        getattr(r, "path", "") for r in app.routes if getattr(r, "path", "").startswith("/api/v1/")
    } - {"/api/v1/openapi.json"}
    assert routes == set(OPENAPI["paths"])
