"""The batched bridge loop over real loopback sockets: many bridges at once, frames coalesced
and split, a bridge that never reads, and the task-per-connection listener kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from protocols.bridge import Ack, BridgeConnection, Event, EventKind, Hello, Nak, NakReason
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver
from tests.receiver.test_bridge_listener import (
    SERIAL,
    TOKEN,
    BridgeClient,
    events,
    history,
    setup_site,
    write_bridge_config,
)
from tests.receiver.test_listener_faults import counters

FLEET = 12


def fleet_serial(index: int) -> str:
    return f"CKB304-{index + 100:04d}"


def setup_fleet(config_path: Path) -> None:
    """The site of ``setup_site`` with FLEET more bridges."""
    setup_site(config_path)
    registry_setup(
        config_path,
        *[
            [
                "bridges",
                "add",
                "--site",
                "Main Street",
                "--serial",
                fleet_serial(i),
                "--token",
                TOKEN,
                "--channels",
                "4",
                "--first-zone",  # the site's account numbers every bridge's zones apart
                str(5 + 4 * i),
            ]
            for i in range(FLEET)
        ],
    )


async def test_many_bridges_at_once_are_each_acked_and_stored(tmp_path: Path) -> None:
    """Twelve bridges connected together, each HELLO then an alarm sent at the same moment:
    every one is ACKed on its own connection with its own sequence, and journaled once."""
    config = write_bridge_config(tmp_path)
    setup_fleet(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        clients = [await BridgeClient.open(running, fleet_serial(i)) for i in range(FLEET)]
        for client in clients:
            assert isinstance(await client.hello(), Ack)
        frames = [c.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)) for c in clients]
        for client, frame in zip(clients, frames, strict=True):
            await client.stream.send_all(frame)
        replies = [await client.exchange(b"") for client in clients]
        assert replies == [Ack(2)] * FLEET
        for client in clients:
            await client.stream.aclose()
        running.service.request_shutdown()
    stored = history(tmp_path / "receiver.sqlite3")
    assert sorted(s.device or "" for s in stored) == sorted(fleet_serial(i) for i in range(FLEET))
    assert sorted(events(stored)) == [("E130", f"{5 + 4 * i:03d}", "") for i in range(FLEET)]


async def test_coalesced_and_split_frames_are_answered_in_order(tmp_path: Path) -> None:
    """A HELLO and two alarms in one write get three replies in frame order; an alarm sent a
    byte at a time is ACKed once its last byte arrives."""
    config = write_bridge_config(tmp_path)
    setup_site(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        client = await BridgeClient.open(running)
        hello = client.frame(Hello(SERIAL, "CKB304", 4, "2.4.1", TOKEN))
        first = client.frame(Event(channel=1, kind=EventKind.INPUT_ALARM))
        second = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
        assert isinstance(await client.exchange(hello + first + second), Ack)
        assert await client.exchange(b"") == Ack(2)
        assert await client.exchange(b"") == Ack(3)
        split = client.frame(Event(channel=1, kind=EventKind.INPUT_RESTORE))
        for byte in split[:-1]:
            await client.stream.send_all(bytes([byte]))
            await trio.sleep(0)
        assert await client.exchange(split[-1:]) == Ack(4)
        await client.stream.aclose()
        running.service.request_shutdown()
    assert events(history(tmp_path / "receiver.sqlite3")) == [
        ("E130", "001", ""),
        ("E130", "002", ""),
        ("R130", "001", ""),
    ]


@pytest.mark.slow
async def test_a_bridge_that_never_reads_does_not_stall_another(tmp_path: Path) -> None:
    """One bridge floods damaged frames and never reads its NAKs; another bridge's HELLO and
    alarm are answered meanwhile, and the silent reader is closed on send_timeout."""
    config = write_bridge_config(tmp_path, "send_timeout = 1.0\n")
    setup_fleet(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        flooder = await BridgeClient.open(running)
        assert isinstance(await flooder.hello(), Ack)
        damaged = bytearray()
        for _ in range(4000):
            frame = bytearray(flooder.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)))
            frame[-1] ^= 0xFF
            damaged += frame

        async def flood() -> None:
            with trio.move_on_after(20):  # bounded: the receiver closes it long before
                try:
                    while True:
                        await flooder.stream.send_all(bytes(damaged))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

        nursery.start_soon(flood)
        await trio.sleep(0.5)  # the flooder's replies now wait in the kernel and the loop
        other = await BridgeClient.open(running, fleet_serial(0))
        assert isinstance(await other.hello(), Ack)
        alarm = other.frame(Event(channel=1, kind=EventKind.INPUT_ALARM))
        assert await other.exchange(alarm) == Ack(2)
        with trio.fail_after(15):
            while not counters(running).get("bridge_connections_closed_send_timeout"):
                await trio.sleep(0.05)
        await other.stream.aclose()
        running.service.request_shutdown()
    stored = history(tmp_path / "receiver.sqlite3")
    assert [(s.device, s.cid.code if s.cid else None) for s in stored] == [(fleet_serial(0), "130")]


async def test_the_task_per_connection_listener_serves_the_same(tmp_path: Path) -> None:
    """``[bridge] batched = false``: a task per connection, with the same replies and
    journal: HELLO ACKed, a damaged frame NAKed, the good frame behind it ACKed and stored."""
    config = write_bridge_config(tmp_path, "batched = false\n")
    setup_site(config)
    async with trio.open_nursery() as nursery:
        running: RunningReceiver = await start_receiver(nursery, config)
        client = await BridgeClient.open(running)
        assert isinstance(await client.hello(), Ack)
        damaged = bytearray(client.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)))
        damaged[-1] ^= 0xFF
        good = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
        assert await client.exchange(bytes(damaged) + good) == Nak(2, NakReason.BAD_CRC)
        assert await client.exchange(b"") == Ack(3)
        await client.stream.aclose()
        running.service.request_shutdown()
    assert events(history(tmp_path / "receiver.sqlite3")) == [("E130", "002", "")]


async def test_a_bug_on_one_connections_bytes_costs_that_connection_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug the loop hits while handling one connection's bytes closes that connection
    (``connection_crashed``, counted), stores and ACKs nothing of that read, and the loop
    goes on serving the other bridge."""
    real = BridgeConnection.receive_data

    def receive_data(self: BridgeConnection, data: bytes | bytearray) -> None:
        if bytes(data) == b"boom":
            raise RuntimeError("injected")
        real(self, data)

    monkeypatch.setattr(BridgeConnection, "receive_data", receive_data)
    config = write_bridge_config(tmp_path)
    setup_fleet(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        victim = await BridgeClient.open(running)
        other = await BridgeClient.open(running, fleet_serial(0))
        assert isinstance(await victim.hello(), Ack)
        assert isinstance(await other.hello(), Ack)
        assert await victim.exchange(b"boom") is None  # closed, nothing answered
        alarm = other.frame(Event(channel=1, kind=EventKind.INPUT_ALARM))
        assert await other.exchange(alarm) == Ack(2)
        assert counters(running).get("bridge_connections_crashed") == 1
        await other.stream.aclose()
        running.service.request_shutdown()
    assert [s.device for s in history(tmp_path / "receiver.sqlite3")] == [fleet_serial(0)]
