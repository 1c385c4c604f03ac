"""Video bridges on the wire: real loopback TCP, a real SQLite journal, a real ``Service``.

The bridge side is the project's own simulator (``simulators.bridge``) or the codec in the
bridge role; each test checks the replies on the wire and the signals in ``receiver history``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from protocols.bridge import (
    NEED_DATA,
    Ack,
    BridgeConnection,
    Envelope,
    Event,
    EventKind,
    Heartbeat,
    Hello,
    Nak,
    NakReason,
)
from protocols.signal import Signal
from receiver.history import HistoryQuery, query_history
from receiver.store.sqlite_store import SqliteStore
from simulators.bridge import BridgeRunSummary, bridge_mac, run_bridge
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver

SERIAL = "CKB304-0001"
TOKEN = "s3cret"


def write_bridge_config(tmp_path: Path, bridge_extra: str = "", dc09_port: int = 0) -> Path:
    path = tmp_path / "receiver.toml"
    path.write_text(
        f"""
log_signals = true
outputs = []
[store]
path = "{tmp_path / "receiver.sqlite3"}"
[dc09]
listen = "127.0.0.1:{dc09_port}"
udp = false
[bridge]
listen = "127.0.0.1:0"
{bridge_extra}
""",
        encoding="utf-8",
    )
    return path


def setup_site(config_path: Path) -> None:
    """Station S1, dealer D1, site Main Street (account 1234) with a 4-channel bridge.

    Channel 3 is a 24-hour zone; channel 2 reports as zone 2 (the default).
    """
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
        [
            "bridges",
            "add",
            "--site",
            "Main Street",
            "--serial",
            SERIAL,
            "--token",
            TOKEN,
            "--channels",
            "4",
            "--model",
            "CKB304",
        ],
        ["bridges", "set-channel", SERIAL, "3", "--zone-type", "24_hour", "--camera", "Gate"],
    )


@pytest.fixture
async def bridge_receiver(tmp_path: Path) -> AsyncIterator[RunningReceiver]:
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        yield running
        running.service.request_shutdown()


def history(db: Path) -> list[Signal]:
    """All journaled signals, oldest first."""
    store = SqliteStore(db, create=False)
    try:
        return list(reversed(query_history(store, HistoryQuery(limit=0))))
    finally:
        store.close()


def events(signals: list[Signal]) -> list[tuple[str, str, str]]:
    """(qualifier+code, zone, sorted flags) per signal: what an operator would read."""
    return [
        (f"{s.cid.qualifier}{s.cid.code}" if s.cid else "", s.zone or "", ",".join(sorted(s.flags)))
        for s in signals
    ]


async def send(
    receiver: RunningReceiver, *words: str, token: str = TOKEN, serial: str = SERIAL
) -> BridgeRunSummary:
    """Run one simulated bridge through ``words`` (``--send`` words) and return its summary."""
    assert receiver.ports.bridge is not None
    return await run_bridge(
        ("127.0.0.1", receiver.ports.bridge), serial, token, 4, list(words), timeout=5.0
    )


class BridgeClient:
    """A bridge on a raw socket, for byte-exact retransmissions."""

    def __init__(self, stream: trio.SocketStream, serial: str = SERIAL) -> None:
        self.stream = stream
        self.conn = BridgeConnection("bridge", bridge_id=bridge_mac(serial))
        self.serial = serial

    @classmethod
    async def open(cls, receiver: RunningReceiver, serial: str = SERIAL) -> BridgeClient:
        assert receiver.ports.bridge is not None
        return cls(await trio.open_tcp_stream("127.0.0.1", receiver.ports.bridge), serial)

    def frame(self, body: Hello | Event | Heartbeat) -> bytes:
        return self.conn.send(self.conn.envelope(body, now=datetime.now(UTC)))

    async def exchange(self, frame: bytes) -> Ack | Nak | None:
        await self.stream.send_all(frame)
        with trio.fail_after(5):
            while True:
                event = self.conn.next_event()
                if event is NEED_DATA:
                    data = await self.stream.receive_some(65536)
                    self.conn.receive_data(data)
                    if not data:
                        return None
                    continue
                assert isinstance(event, Envelope)
                assert isinstance(event.body, Ack | Nak)
                return event.body

    async def hello(self, token: str = TOKEN) -> Ack | Nak | None:
        return await self.exchange(self.frame(Hello(self.serial, "CKB304", 4, "2.4.1", token)))


async def test_arm_alarm_restore_disarm_land_in_history(bridge_receiver: RunningReceiver) -> None:
    """The contract script is ACKed and journaled as closing, alarm, restore, opening."""
    summary = await send(bridge_receiver, "arm:7", "alarm:2", "restore:2", "disarm:7")
    assert summary.ok, summary.as_dict()
    signals = history(bridge_receiver.db)
    assert events(signals) == [
        ("R401", "007", ""),
        ("E130", "002", ""),
        ("R130", "002", ""),
        ("E401", "007", ""),
    ]
    alarm = signals[1]
    assert (alarm.source.value, alarm.token, alarm.device, alarm.channel) == (
        "bridge",
        "BRIDGE",
        SERIAL,
        2,
    )
    assert (alarm.account, alarm.effective_account, alarm.site_name) == (
        "1234",
        "1234",
        "Main Street",
    )
    assert alarm.zone_type == "instant"
    assert alarm.cid is not None
    assert alarm.cid.group == "01"
    assert alarm.name == "Burglary"
    assert alarm.sequence == "3"  # HELLO is 1, arm 2
    assert alarm.raw[:2] == b"VB"
    assert signals[0].name == "Open/close by user (closing)"
    assert ("user", "7") in signals[0].extended


async def test_disarmed_bridge_suppresses_all_but_24_hour_zones(
    bridge_receiver: RunningReceiver,
) -> None:
    """Disarmed: an instant zone's alarm and restore are kept but suppressed; 24-hour goes out."""
    summary = await send(
        bridge_receiver, "disarm", "alarm:2", "restore:2", "alarm:3", "restore:3", "camera-lost:1"
    )
    assert summary.ok
    assert events(history(bridge_receiver.db)) == [
        ("E401", "000", ""),
        ("E130", "002", "disarmed,suppressed"),
        ("R130", "002", "disarmed,suppressed"),
        ("E133", "003", ""),
        ("R133", "003", ""),
        ("E380", "001", ""),
    ]
    gate = history(bridge_receiver.db)[3]
    assert ("camera", "Gate") in gate.extended
    assert gate.is_alarm_for_automation


async def test_alarm_library_overrides_change_the_code_and_switch(tmp_path: Path) -> None:
    """A site override, a channel override and a switched-off zone type reach the journal."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    registry_setup(
        config_path,
        ["library", "set", "--site", "Main Street", "instant", "--code", "131"],
        ["bridges", "set-channel", SERIAL, "4", "--code", "150"],
        ["library", "set", "--dealer", "D1", "follower", "--disable"],
        ["bridges", "set-channel", SERIAL, "1", "--zone-type", "follower"],
    )
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        summary = await send(receiver, "arm", "alarm:2", "alarm:4", "alarm:1", "analytics:3")
        assert summary.ok
        receiver.service.request_shutdown()
    assert events(history(receiver.db))[1:] == [
        ("E131", "002", ""),
        ("E150", "004", ""),
        ("E132", "001", "suppressed,zone_type_off"),
        ("E133", "003", ""),
    ]


async def test_bad_token_and_unknown_bridge_are_refused_with_one_trouble_each(
    bridge_receiver: RunningReceiver,
) -> None:
    """NAK bad_token / unknown_bridge and close; one receiver trouble per bridge, not per retry."""
    for _ in range(3):
        client = await BridgeClient.open(bridge_receiver)
        reply = await client.hello(token="wrong")
        assert reply == Nak(1, NakReason.BAD_TOKEN)
        assert await client.stream.receive_some(100) == b""  # closed by the receiver
        await client.stream.aclose()
    for _ in range(2):
        summary = await send(bridge_receiver, "arm", serial="NOPE-1")
        assert summary.hello_failures == 1
        assert dict(summary.nak_reasons) == {"hello:unknown_bridge": 1}
    signals = history(bridge_receiver.db)
    assert events(signals) == [("E354", "000", ""), ("E354", "000", "")]
    bad_token, unknown = signals
    assert (bad_token.source.value, bad_token.account, bad_token.site_name) == (
        "receiver",
        "1234",
        "Main Street",
    )
    assert ("reason", "bad_token") in bad_token.extended
    assert (unknown.account, unknown.device) == ("NOPE-1", "NOPE-1")
    assert ("reason", "unknown_bridge") in unknown.extended


async def test_refused_hellos_never_log_or_journal_the_token(
    bridge_receiver: RunningReceiver,
) -> None:
    """A wrong token, and the bridge's valid token sent with a wrong serial: both are refused,
    and neither token appears in the log lines or in the journal's raw bytes of the trouble."""
    wrong = "wrong-secret-42"
    with capture_logs() as logs:
        client = await BridgeClient.open(bridge_receiver)
        assert await client.hello(token=wrong) == Nak(1, NakReason.BAD_TOKEN)
        await client.stream.aclose()
        client = await BridgeClient.open(bridge_receiver, serial="NOPE-1")
        assert await client.hello(token=TOKEN) == Nak(1, NakReason.UNKNOWN_BRIDGE)
        await client.stream.aclose()
    refused = [e for e in logs if e["event"] == "bridge_refused"]
    assert [e["reason"] for e in refused] == ["bad_token", "unknown_bridge"]
    assert all("raw" in e for e in refused)
    for secret in (wrong, TOKEN):
        assert not [e for e in logs if secret in repr(e)], f"{secret!r} logged"
    conn = sqlite3.connect(bridge_receiver.db)
    try:
        raws = [bytes(r[0]) for r in conn.execute("SELECT raw FROM signals WHERE code = '354'")]
    finally:
        conn.close()
    assert len(raws) == 2
    for raw in raws:
        assert raw.startswith(b"VB")
        assert wrong.encode() not in raw
        assert TOKEN.encode() not in raw


async def test_retransmission_is_acked_again_and_stored_once(
    bridge_receiver: RunningReceiver,
) -> None:
    """The same frame sent twice, and again on a new connection, gets three ACKs, one signal."""
    client = await BridgeClient.open(bridge_receiver)
    assert isinstance(await client.hello(), Ack)
    client.conn.envelope(Heartbeat(1, "x"), now=None)  # skip sequence 2: the alarm is seq 3
    alarm = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
    assert await client.exchange(alarm) == Ack(3)
    assert await client.exchange(alarm) == Ack(3)
    await client.stream.aclose()
    again = await BridgeClient.open(bridge_receiver)
    assert isinstance(await again.hello(), Ack)
    assert await again.exchange(alarm) == Ack(3)
    await again.stream.aclose()
    signals = history(bridge_receiver.db)
    assert events(signals) == [("E130", "002", "duplicate_received")]


async def test_bad_crc_is_nacked_and_a_good_frame_behind_it_is_acked(
    bridge_receiver: RunningReceiver,
) -> None:
    """A damaged frame gets NAK bad_crc and is not stored; the next frame in the read is."""
    client = await BridgeClient.open(bridge_receiver)
    assert isinstance(await client.hello(), Ack)
    damaged = bytearray(client.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)))
    damaged[-1] ^= 0xFF
    good = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
    assert await client.exchange(bytes(damaged) + good) == Nak(2, NakReason.BAD_CRC)
    assert await client.exchange(b"") == Ack(3)
    await client.stream.aclose()
    assert events(history(bridge_receiver.db)) == [("E130", "002", "")]


async def test_event_before_hello_is_nacked_not_authenticated(
    bridge_receiver: RunningReceiver,
) -> None:
    """An EVENT before HELLO gets NAK not_authenticated and stores nothing."""
    assert bridge_receiver.ports.bridge is not None
    stream = await trio.open_tcp_stream("127.0.0.1", bridge_receiver.ports.bridge)
    rogue = BridgeConnection("bridge", bridge_id=bridge_mac(SERIAL))
    rogue.send(rogue.envelope(Hello(SERIAL, "m", 4, "f", TOKEN), now=None))  # not sent
    frame = rogue.send(rogue.envelope(Event(channel=1, kind=EventKind.INPUT_ALARM), now=None))
    client = BridgeClient(stream)
    assert await client.exchange(frame) == Nak(2, NakReason.NOT_AUTHENTICATED)
    await stream.aclose()
    assert history(bridge_receiver.db) == []


async def test_missed_heartbeats_write_one_offline_trouble_and_reconnect_restores(
    tmp_path: Path,
) -> None:
    """Silence past interval x grace writes one E350; the next HELLO writes R350."""
    config_path = write_bridge_config(tmp_path, "heartbeat_interval = 0.2\nheartbeat_grace = 2.5\n")
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        assert (await send(receiver, "heartbeat")).ok
        with trio.fail_after(10):
            while not history(receiver.db):
                await trio.sleep(0.05)
        await trio.sleep(0.6)  # past another deadline: still one trouble
        [offline] = history(receiver.db)
        assert events([offline]) == [("E350", "000", "")]
        assert (offline.source.value, offline.device, offline.account) == (
            "supervision",
            SERIAL,
            "1234",
        )
        assert (await send(receiver, "heartbeat")).ok
        with trio.fail_after(10):
            while len(history(receiver.db)) < 2:
                await trio.sleep(0.05)
        assert events(history(receiver.db))[1] == ("R350", "000", "")
        receiver.service.request_shutdown()


async def test_arming_state_survives_a_lost_state_write(tmp_path: Path) -> None:
    """A disarm journaled but missing from bridge_state still suppresses after a restart."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        assert (await send(receiver, "disarm")).ok
        receiver.service.request_shutdown()
    conn = sqlite3.connect(receiver.db)
    with conn:
        conn.execute("DELETE FROM bridge_state")  # as if the process died before the write
    conn.close()
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        assert (await send(receiver, "alarm:2")).ok
        receiver.service.request_shutdown()
    assert events(history(receiver.db)) == [
        ("E401", "000", ""),
        ("E130", "002", "disarmed,suppressed"),
    ]


async def test_heartbeat_arming_state_is_stored_before_its_ack(
    bridge_receiver: RunningReceiver,
) -> None:
    """A heartbeat saying "partially armed" is in bridge_state when its ACK arrives."""
    client = await BridgeClient.open(bridge_receiver)
    assert isinstance(await client.hello(), Ack)
    assert await client.exchange(client.frame(Heartbeat(2, "2.5.0"))) == Ack(2)
    conn = sqlite3.connect(bridge_receiver.db)
    try:
        row = conn.execute(
            "SELECT armed, firmware, model FROM bridge_state WHERE serial = ?", (SERIAL,)
        ).fetchone()
    finally:
        conn.close()
    await client.stream.aclose()
    assert row == ("partial", "2.5.0", "CKB304")
    assert history(bridge_receiver.db) == []  # a heartbeat is not a signal


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_simulator_contract_command_exits_0_against_a_served_receiver(
    tmp_path: Path,
) -> None:
    """`receiver-sim bridge ... --json` exits 0 against `python -m receiver.cli serve`."""
    port = free_port()
    config_path = write_bridge_config(tmp_path, dc09_port=free_port())
    text = config_path.read_text(encoding="utf-8").replace(
        'listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"'
    )
    config_path.write_text(text, encoding="utf-8")
    setup_site(config_path)
    env = {**os.environ, "PYTHONPATH": str(Path.cwd())}
    server = subprocess.Popen(
        [sys.executable, "-m", "receiver.cli", "--config", str(config_path), "serve"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        # A bound on start-up, not a timing: a loaded 2-core machine took over 20 s to start
        # the coordinator and its workers.
        with trio.fail_after(90):
            while True:
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:
                    assert server.poll() is None, "receiver serve exited before it listened"
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
        sim = await trio.run_process(
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "bridge",
                "--target",
                f"127.0.0.1:{port}",
                "--serial",
                SERIAL,
                "--token",
                TOKEN,
                "--channels",
                "4",
                "--send",
                "arm",
                "--send",
                "alarm:2",
                "--send",
                "restore:2",
                "--send",
                "disarm",
                "--json",
            ],
            capture_stdout=True,
            check=False,
            env=env,
        )
        assert sim.returncode == 0, sim.stdout
        summary = json.loads(sim.stdout)
        assert (summary["ok"], summary["acked"], summary["naked"]) == (True, 4, 0)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
    assert [e[0] for e in events(history(tmp_path / "receiver.sqlite3"))] == [
        "R401",
        "E130",
        "R130",
        "E401",
    ]


async def test_bridge_on_a_site_without_account_reports_and_is_attached_later(
    tmp_path: Path,
) -> None:
    """A bridge registered before its site has an account is not turned away: its alarm is
    ACKed, stored and flagged unknown_account under the bridge serial, with the site named.
    Once the site's account is added (CLI, while the receiver runs), the next alarm carries it.
    """
    config_path = write_bridge_config(tmp_path)
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["bridges", "add", "--site", "Main Street", "--serial", SERIAL, "--token", TOKEN,
         "--channels", "4"],
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        first = await send(running, "alarm:2")
        assert first.ok, first.as_dict()
        registry_setup(
            config_path, ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"]
        )
        with trio.fail_after(10):
            while (
                getattr(running.service.registry.current().bridge(SERIAL), "account", None) is None
            ):
                await trio.sleep(0.1)
        second = await send(running, "restore:2")
        assert second.ok, second.as_dict()
        running.service.request_shutdown()
    waiting, attached = history(running.db)
    assert (waiting.account, waiting.effective_account, waiting.station) == (SERIAL, SERIAL, None)
    assert waiting.site_name == "Main Street"
    assert events([waiting, attached]) == [
        ("E130", "002", "unknown_account"),
        ("R130", "002", ""),
    ]
    assert (attached.account, attached.effective_account, attached.station) == (
        "1234",
        "1234",
        "S1",
    )
