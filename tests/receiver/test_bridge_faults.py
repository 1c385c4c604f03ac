"""A bug while handling one bridge frame costs that frame, on the wire (real loopback TCP).

The bridge side is the codec in the bridge role; a bug is injected into the intake for frames
on channel 4 (and for HELLO) and every other frame must still be ACKed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trio

from protocols.bridge import Ack, Event, EventKind, Nak, NakReason
from receiver.bridge_listener import BridgeIntake
from tests.receiver.conftest import RunningReceiver, start_receiver
from tests.receiver.test_bridge_listener import (
    BridgeClient,
    events,
    history,
    setup_site,
    write_bridge_config,
)


@pytest.fixture
async def bridge_receiver(tmp_path: Path) -> AsyncIterator[RunningReceiver]:
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        yield running
        running.service.request_shutdown()


@pytest.fixture
def buggy_channel_4(monkeypatch: pytest.MonkeyPatch) -> None:
    real = BridgeIntake._signal

    def signal(self: BridgeIntake, envelope: Any, event: Event, *args: Any) -> Any:
        if event.channel == 4:
            raise KeyError("a bug in the intake")
        return real(self, envelope, event, *args)

    monkeypatch.setattr(BridgeIntake, "_signal", signal)


@pytest.mark.usefixtures("buggy_channel_4")
async def test_a_bug_on_one_event_costs_that_event_only(
    bridge_receiver: RunningReceiver,
) -> None:
    """The crashing event gets NAK ``malformed`` and a ``frame_crashed`` log line with its raw
    bytes; the events around it, in the same write and after it, are ACKed and stored."""
    client = await BridgeClient.open(bridge_receiver)
    assert isinstance(await client.hello(), Ack)
    alarm = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
    broken = client.frame(Event(channel=4, kind=EventKind.INPUT_ALARM))
    restore = client.frame(Event(channel=2, kind=EventKind.INPUT_RESTORE))
    with structlog.testing.capture_logs() as logs:
        await client.stream.send_all(alarm + broken)
        first = await client.exchange(restore)
        second = await client.exchange(b"")
        third = await client.exchange(b"")
    assert isinstance(first, Ack)
    assert isinstance(second, Nak)
    assert second.reason is NakReason.MALFORMED
    assert isinstance(third, Ack)
    [crash] = [e for e in logs if e["event"] == "frame_crashed"]
    assert crash["error_type"] == "KeyError"
    assert crash["raw"].startswith("VB")
    assert bridge_receiver.service.counters.values["bridge_frames_internal_error"] == 1
    assert events(history(bridge_receiver.db)) == [("E130", "002", ""), ("R130", "002", "")]
    await client.stream.aclose()


async def test_a_bug_on_hello_refuses_that_connection_only(
    bridge_receiver: RunningReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A HELLO that trips a bug is refused (NAK ``malformed``, connection closed); the bridge's
    next connection, once the bug is gone, is accepted."""

    def crash(*args: Any) -> Any:
        raise RuntimeError("a bug in HELLO")

    with monkeypatch.context() as patch:
        patch.setattr(BridgeIntake, "_hello", crash)
        client = await BridgeClient.open(bridge_receiver)
        refused = await client.hello()
    assert isinstance(refused, Nak)
    assert refused.reason is NakReason.MALFORMED
    await client.stream.aclose()
    again = await BridgeClient.open(bridge_receiver)
    assert isinstance(await again.hello(), Ack)
    await again.stream.aclose()
