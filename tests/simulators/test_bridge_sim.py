"""Tests for the bridge simulator, run against a small receiver built on the bridge codec."""

from __future__ import annotations

import json
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial

import attrs
import pytest
import trio
import trio.testing

from protocols.bridge import (
    NEED_DATA,
    ArmState,
    BridgeConnection,
    Envelope,
    Event,
    EventKind,
    Heartbeat,
    Hello,
    NakReason,
)
from protocols.errors import InvalidInputError, RemoteProtocolError
from simulators.bridge import (
    BridgeRunSummary,
    FleetPlan,
    bridge_mac,
    drive_bridge,
    parse_send,
    run_bridge,
    run_fleet_on,
)
from simulators.cli import main as sim_main

TOKEN = "s3cret"
HELLO = Hello("CKB304-0042", "CKB304", 4, "2.4.1", TOKEN)
SCRIPT = ["arm", "alarm:2", "restore:2", "disarm"]


@attrs.define
class BridgeTestServer:
    """A receiver in miniature: ACKs everything after a good HELLO, NAKs a bad token.

    ``lose_first`` sequences get no answer the first time (a lost ACK); ``never`` sequences
    never get one; ``nak`` sequences get that NAK every time.
    """

    token: str = TOKEN
    lose_first: set[int] = attrs.Factory(set)
    never: set[int] = attrs.Factory(set)
    nak: dict[int, NakReason] = attrs.Factory(dict)
    received: list[Envelope] = attrs.Factory(list)
    errors: list[RemoteProtocolError] = attrs.Factory(list)

    async def handle(self, stream: trio.abc.Stream) -> None:
        conn = BridgeConnection("receiver")
        answered: set[tuple[bytes, int]] = set()
        async with stream:
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    try:
                        data = await stream.receive_some(65536)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    conn.receive_data(data)
                    continue
                now = datetime.now(UTC)
                if isinstance(event, RemoteProtocolError):
                    self.errors.append(event)
                    reply = conn.reply_to(event, now=now)
                    if reply is not None:
                        await stream.send_all(reply)
                    continue
                self.received.append(event)
                if isinstance(event.body, Hello):
                    if event.body.token != self.token:
                        await stream.send_all(conn.nak(event, NakReason.BAD_TOKEN, now=now))
                        return
                    await stream.send_all(conn.ack(event, now=now))
                    continue
                key = (event.bridge_id, event.sequence)
                if event.sequence in self.never or (
                    event.sequence in self.lose_first and key not in answered
                ):
                    answered.add(key)
                    continue
                if event.sequence in self.nak:
                    await stream.send_all(conn.nak(event, self.nak[event.sequence], now=now))
                    continue
                await stream.send_all(conn.ack(event, now=now))

    def bodies(self) -> list[object]:
        return [e.body for e in self.received]


async def run_script(
    server: BridgeTestServer, words: list[str], hello: Hello = HELLO, **kwargs: float
) -> BridgeRunSummary:
    """Run one simulated bridge against ``server`` over an in-memory stream."""
    client, far = trio.testing.memory_stream_pair()
    messages = [parse_send(w, hello.channels) for w in words]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.handle, far)
        summary = await drive_bridge(client, hello, messages, **kwargs)  # type: ignore[arg-type]
        await client.aclose()
    return summary


# ---- one bridge over memory streams -------------------------------------------------------


async def test_scripted_messages_arrive_in_order_and_are_all_acked() -> None:
    """arm, alarm:2, restore:2, disarm reach the receiver in order after HELLO; all ACKed."""
    server = BridgeTestServer()
    summary = await run_script(server, SCRIPT)
    assert server.bodies() == [
        HELLO,
        Event(channel=0, kind=EventKind.ARM),
        Event(channel=2, kind=EventKind.INPUT_ALARM),
        Event(channel=2, kind=EventKind.INPUT_RESTORE),
        Event(channel=0, kind=EventKind.DISARM),
    ]
    assert [e.sequence for e in server.received] == [1, 2, 3, 4, 5]
    assert {e.bridge_id for e in server.received} == {bridge_mac(HELLO.serial)}
    assert (summary.sent, summary.acked, summary.naked, summary.timeouts) == (4, 4, 0, 0)
    assert summary.ok
    assert len(summary.latencies_ms) == 4


async def test_heartbeats_report_the_arming_state_the_script_set() -> None:
    """A heartbeat after arm says armed, after partial-arm partial, after disarm disarmed."""
    server = BridgeTestServer()
    words = ["heartbeat", "arm:3", "heartbeat", "partial-arm", "heartbeat", "disarm", "heartbeat"]
    summary = await run_script(server, words)
    beats = [b.armed for b in server.bodies() if isinstance(b, Heartbeat)]
    assert beats == [ArmState.DISARMED, ArmState.ARMED, ArmState.PARTIAL, ArmState.DISARMED]
    assert Event(channel=0, kind=EventKind.ARM, user=3) in server.bodies()
    assert summary.ok


async def test_a_bad_token_is_refused_and_nothing_else_is_sent() -> None:
    """With a wrong token the HELLO is NAKed, no event is sent, and the run is not ok."""
    server = BridgeTestServer(token="other")
    summary = await run_script(server, SCRIPT)
    assert server.bodies() == [HELLO]
    assert summary.hello_failures == 1
    assert summary.nak_reasons == {"hello:bad_token": 1}
    assert (summary.sent, summary.acked) == (0, 0)
    assert not summary.ok


async def test_a_lost_ack_is_retransmitted_with_the_same_sequence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No ACK for the alarm: the simulator sends the very same frame again and it is ACKed."""
    server = BridgeTestServer(lose_first={3})
    summary = await run_script(server, SCRIPT, timeout=5.0)
    alarm_frames = [e.raw for e in server.received if e.sequence == 3]
    assert len(alarm_frames) == 2
    assert alarm_frames[0] == alarm_frames[1]
    assert (summary.sent, summary.acked, summary.retransmits, summary.timeouts) == (4, 4, 1, 0)
    assert summary.ok


async def test_a_message_never_answered_times_out_and_the_next_still_goes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An alarm never ACKed is sent 1 + retries times, counted as a timeout; the rest go on."""
    server = BridgeTestServer(never={3})
    summary = await run_script(server, SCRIPT, timeout=5.0, retries=2)
    assert [e.sequence for e in server.received] == [1, 2, 3, 3, 3, 4, 5]
    assert (summary.acked, summary.timeouts, summary.retransmits) == (3, 1, 2)
    assert not summary.ok


async def test_a_final_nak_is_counted_and_not_retransmitted() -> None:
    """NAK(malformed) is final: the message is counted as NAKed and sent once."""
    server = BridgeTestServer(nak={2: NakReason.MALFORMED})
    summary = await run_script(server, SCRIPT)
    assert [e.sequence for e in server.received] == [1, 2, 3, 4, 5]
    assert summary.naked == 1
    assert summary.nak_reasons == {"malformed": 1}
    assert summary.retransmits == 0
    assert not summary.ok


async def test_a_busy_nak_is_retransmitted(autojump_clock: trio.testing.MockClock) -> None:
    """NAK(busy) asks for the same frame again, up to the retry limit."""
    server = BridgeTestServer(nak={2: NakReason.BUSY})
    summary = await run_script(server, ["arm"], retries=2)
    assert [e.sequence for e in server.received] == [1, 2, 2, 2]
    assert (summary.naked, summary.retransmits) == (1, 2)


# ---- words --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("alarm:4", Event(channel=4, kind=EventKind.INPUT_ALARM)),
        ("camera-lost:1", Event(channel=1, kind=EventKind.CAMERA_LOST)),
        ("tamper", Event(channel=0, kind=EventKind.TAMPER)),
        ("partial-arm:12", Event(channel=0, kind=EventKind.PARTIAL_ARM, user=12)),
        ("power-lost", Event(channel=0, kind=EventKind.POWER_LOST)),
        ("test", Event(channel=0, kind=EventKind.PERIODIC_TEST)),
        ("programming", Event(channel=0, kind=EventKind.PROGRAMMING_CHANGE)),
        ("heartbeat", None),
    ],
)
def test_send_words_become_messages(word: str, expected: Event | None) -> None:
    """Each --send word maps to the event kind, channel and user it names."""
    assert parse_send(word, 4) == expected


@pytest.mark.parametrize(
    "word", ["alarm", "alarm:5", "alarm:0", "power-lost:3", "explode", "arm:x"]
)
def test_bad_send_words_are_refused(word: str) -> None:
    """A missing or out-of-range channel, a user where none fits, an unknown word: refused."""
    with pytest.raises(InvalidInputError):
        parse_send(word, 4)


# ---- a fleet ------------------------------------------------------------------------------


async def test_fleet_sends_heartbeats_and_alternating_alarms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three bridges for 20 s: each says HELLO, beats every 5 s, alarms and restores alternate."""
    server = BridgeTestServer()
    plan = FleetPlan(
        serial_prefix="FLT", token=TOKEN, channels=4, bridges=3, rate=1.5, duration=20.0,
        heartbeat=5.0, seed=7,
    )  # fmt: skip
    async with trio.open_nursery() as nursery:

        async def connect() -> trio.abc.Stream:
            client, far = trio.testing.memory_stream_pair()
            nursery.start_soon(server.handle, far)
            return client

        summary = await run_fleet_on(connect, plan)
    hellos = [b.serial for b in server.bodies() if isinstance(b, Hello)]
    assert sorted(hellos) == ["FLT-0001", "FLT-0002", "FLT-0003"]
    beats = Counter(e.bridge_id for e in server.received if isinstance(e.body, Heartbeat))
    assert sorted(beats.values()) == [4, 4, 4]
    alarms: dict[tuple[bytes, int], list[EventKind]] = {}
    for e in server.received:
        if isinstance(e.body, Event):
            alarms.setdefault((e.bridge_id, e.body.channel), []).append(e.body.kind)
    for kinds in alarms.values():
        assert kinds[::2] == [EventKind.INPUT_ALARM] * len(kinds[::2])
        assert kinds[1::2] == [EventKind.INPUT_RESTORE] * len(kinds[1::2])
    events = sum(len(k) for k in alarms.values())
    assert 10 <= events <= 60  # about 1.5/s for 20 s
    assert summary.sent == summary.acked == events + 12
    assert summary.ok
    assert summary.bridges == 3


def test_fleet_plan_is_bounded() -> None:
    """A fleet of 0 or a million bridges, or a negative rate, cannot be planned."""
    for bad in ({"bridges": 0}, {"bridges": 1_000_000}, {"rate": -1.0}, {"duration": 0.0}):
        args = {"bridges": 2, "rate": 1.0, "duration": 1.0, **bad}
        with pytest.raises(ValueError):
            FleetPlan(serial_prefix="F", token="t", channels=4, **args)  # type: ignore[arg-type]


# ---- real sockets -------------------------------------------------------------------------


async def test_run_bridge_over_a_real_loopback_socket() -> None:
    """run_bridge connects over TCP to 127.0.0.1 and gets every message ACKed."""
    server = BridgeTestServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        summary = await run_bridge(("127.0.0.1", port), HELLO.serial, TOKEN, 4, SCRIPT)
        nursery.cancel_scope.cancel()
    assert summary.ok
    assert [type(b).__name__ for b in server.bodies()] == ["Hello"] + ["Event"] * 4


@pytest.fixture
def threaded_server() -> Iterator[tuple[int, BridgeTestServer]]:
    """A BridgeTestServer on a real 127.0.0.1 port, in its own thread, for CLI tests."""
    server = BridgeTestServer()
    ready: dict[str, tuple[int, trio.lowlevel.TrioToken, trio.CancelScope]] = {}
    started = threading.Event()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1")
            )
            port = listeners[0].socket.getsockname()[1]
            ready["server"] = (port, trio.lowlevel.current_trio_token(), nursery.cancel_scope)
            started.set()

    thread = threading.Thread(target=trio.run, args=(serve,), daemon=True)
    thread.start()
    assert started.wait(10)
    port, token, scope = ready["server"]
    yield port, server
    trio.from_thread.run_sync(scope.cancel, trio_token=token)
    thread.join(10)


def test_cli_sends_the_script_and_prints_a_json_summary(
    threaded_server: tuple[int, BridgeTestServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """receiver-sim bridge … --json exits 0 and reports 4 sent, 4 acked, latencies."""
    port, server = threaded_server
    sends = [arg for word in SCRIPT for arg in ("--send", word)]
    code = sim_main(
        ["bridge", "--target", f"127.0.0.1:{port}", "--serial", "SIM-1", "--token", TOKEN,
         "--channels", "8", *sends, "--json"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (out["sent"], out["acked"], out["naked"], out["timeouts"]) == (4, 4, 0, 0)
    assert out["ok"] is True
    assert out["latency_p50_ms"] is not None
    assert out["latency_p99_ms"] >= out["latency_p50_ms"]
    assert server.bodies()[0] == Hello("SIM-1", "VB-SIM", 8, "sim-1.0", TOKEN)
    assert [b.kind for b in server.bodies()[1:]] == [  # type: ignore[attr-defined]
        EventKind.ARM, EventKind.INPUT_ALARM, EventKind.INPUT_RESTORE, EventKind.DISARM
    ]  # fmt: skip


def test_cli_exits_1_when_the_token_is_refused(
    threaded_server: tuple[int, BridgeTestServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A refused HELLO makes the command exit 1 with a summary naming bad_token."""
    port, _ = threaded_server
    code = sim_main(
        ["bridge", "--target", f"127.0.0.1:{port}", "--serial", "S", "--token", "wrong",
         "--send", "arm"]
    )  # fmt: skip
    assert code == 1
    assert "hello:bad_token 1" in capsys.readouterr().out


def test_cli_fleet_over_a_real_socket(
    threaded_server: tuple[int, BridgeTestServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """A short fleet run over TCP: every bridge is let in and every message is ACKed."""
    port, server = threaded_server
    code = sim_main(
        ["bridge", "--target", f"127.0.0.1:{port}", "--serial", "LOAD", "--token", TOKEN,
         "--bridges", "3", "--rate", "30", "--duration", "0.3", "--heartbeat", "0.1",
         "--seed", "1", "--json"]
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["bridges"] == 3
    assert out["hello_failures"] == 0
    assert out["sent"] == out["acked"] > 0
    assert sorted(b.serial for b in server.bodies() if isinstance(b, Hello)) == [
        "LOAD-0001", "LOAD-0002", "LOAD-0003"
    ]  # fmt: skip


def test_cli_exits_1_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    """A refused connection is one line on stderr and exit 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = sim_main(["bridge", "--target", f"127.0.0.1:{port}", "--serial", "S", "--token", "t"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"receiver-sim bridge: bridge: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]


def test_cli_fleet_that_cannot_connect_counts_connect_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A fleet with nobody listening reports connect failures, not refused HELLOs, with one
    line on stderr saying where and why; exit 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = ["bridge", "--target", f"127.0.0.1:{port}", "--serial", "S", "--token", "t"]
    code = sim_main([*argv, "--bridges", "2", "--duration", "1"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "hello refused 0, connect failures 2," in out
    assert err.splitlines() == [
        f"receiver-sim bridge: bridge: cannot connect to 127.0.0.1:{port}: Connection refused "
        "(2 bridges not connected)"
    ]


@pytest.mark.parametrize(
    "extra",
    [
        ["--target", "127.0.0.1:9", "--send", "explode:1"],
        ["--target", "127.0.0.1:9", "--send", "alarm:9"],
        ["--target", "10.1.2.3:5000", "--send", "arm"],
        ["--target", "bridges.example.com:5000"],
        ["--target", "nonsense"],
        ["--target", "127.0.0.1:9", "--bridges", "3", "--send", "arm"],
        ["--target", "127.0.0.1:9", "--bridges", "0"],
    ],
)
def test_cli_bad_arguments_exit_2_without_connecting(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad words, channels, non-loopback targets and bad fleet sizes exit 2 with one line."""
    code = sim_main(["bridge", "--serial", "S", "--token", "t", *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("receiver-sim bridge: ")
    assert err.count("\n") == 1
