"""What fuzzing and fault runs found at the DC-09 and bridge ports, on the wire (issue 11,
defects 3, 4, 5 and 9): garbage that held connections open, a panel that never reads its ACKs,
a pipelining panel cut off, and rejections that flooded the log.

Real loopback sockets against a running ``Service``. Tests about timeouts run on trio's mock
clock: virtual time jumps ahead when the receiver and the panel are both waiting, so a 60-second
timeout costs no real time. The autojump waits 20 ms of real idleness first, so loopback I/O and
the journal's threads are not overtaken by virtual time. Nothing on the mock clock waits on
the journal while virtual time matters (NULL frames are ACKed without a commit); the bridge
tests that need a HELLO (a commit) run on the real clock with short timeouts.
"""

from __future__ import annotations

import itertools
import random
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trio
import trio.testing

from protocols import dc09
from protocols.bridge import Ack, Event, EventKind, Hello, Nak
from protocols.errors import Reply
from receiver.config import Config, Dc09Config, parse_config
from receiver.connection_limits import FILES_RESERVED, fit_to_open_files
from receiver.service import Ports, Service
from tests.receiver.conftest import RunningReceiver, start_receiver, write_config
from tests.receiver.test_bridge_listener import (
    SERIAL,
    BridgeClient,
    setup_site,
    write_bridge_config,
)


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0.02)


def null(seq: int, account: str = "1234") -> bytes:
    return dc09.encode_frame("NULL", seq, account)


def bad_crc(frame: bytes) -> bytes:
    damaged = bytearray(frame)
    damaged[1:5] = b"0000" if damaged[1:5] != b"0000" else b"1111"
    return bytes(damaged)


def sia(seq: int, account: str = "1234") -> bytes:
    return dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/BA012")


async def connect(running: RunningReceiver) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", running.ports.dc09)


async def closed_by_receiver(stream: trio.SocketStream, timeout: float) -> bool:
    """Whether the receiver closes the connection within ``timeout`` (reading what comes)."""
    with trio.move_on_after(timeout):
        try:
            while await stream.receive_some(4096):
                pass
        except trio.BrokenResourceError:
            pass
        return True
    return False


async def trickle(
    stream: trio.SocketStream, chunk: bytes, every: float, limit: int
) -> float | None:
    """Send ``chunk`` every ``every`` seconds, at most ``limit`` times: the seconds after which
    the receiver closed the connection, or None if it was still open."""
    start = trio.current_time()
    for _ in range(limit):
        try:
            await stream.send_all(chunk)
        except trio.BrokenResourceError:
            return trio.current_time() - start
        if await closed_by_receiver(stream, every):
            return trio.current_time() - start
    return None


def counters(running: RunningReceiver) -> dict[str, int]:
    return running.service.counters.snapshot()


async def test_garbage_does_not_reset_the_idle_timeout(tmp_path: Path, clock: Any) -> None:
    """A byte of garbage a second (a slowloris) is no activity: the connection is closed when
    ``idle_timeout`` has passed since it opened, although every byte came well within it."""
    config = write_config(tmp_path, "udp = false\nidle_timeout = 10.0\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        closed_after = await trickle(stream, b"x", every=1.0, limit=40)
        assert closed_after is not None
        assert 9.0 <= closed_after <= 12.0
        assert counters(running).get("connections_closed_idle") == 1
        running.service.request_shutdown()


async def test_a_sender_of_nothing_but_garbage_is_closed_after_garbage_timeout(
    tmp_path: Path, clock: Any
) -> None:
    """After a good frame, garbage only: the connection is closed ``garbage_timeout`` after the
    first discarded bytes, long before ``idle_timeout``, and counted as closed for garbage."""
    config = write_config(tmp_path, "udp = false\nidle_timeout = 300.0\ngarbage_timeout = 5.0\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        await stream.send_all(null(1))
        reply = await stream.receive_some(4096)
        assert dc09.decode_reply(reply).kind is Reply.ACK
        closed_after = await trickle(stream, b"\x00garbage\xff\n", every=1.0, limit=60)
        assert closed_after is not None
        assert 4.0 <= closed_after <= 7.0
        assert counters(running).get("connections_closed_garbage") == 1
        running.service.request_shutdown()


async def test_a_pipelining_panel_is_never_cut_off_as_a_slow_frame(
    tmp_path: Path, clock: Any
) -> None:
    """A panel whose every write ends inside the next frame (the tail of one frame, the head of
    the next) for four times ``frame_timeout`` has every frame ACKed and stays connected: the
    slow-frame timeout measures the oldest incomplete frame, not the first unfinished read."""
    config = write_config(tmp_path, "udp = false\nframe_timeout = 3.0\nidle_timeout = 60.0\n")
    frames = [null(seq) for seq in range(1, 14)]
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        await stream.send_all(frames[0][:12])
        acked = []
        for previous, frame in itertools.pairwise(frames):
            await trio.sleep(1.0)
            await stream.send_all(previous[12:] + frame[:12])
            with trio.fail_after(5):
                reply = await stream.receive_some(4096)
            assert reply, "the receiver closed the connection"
            acked.append(dc09.decode_reply(reply))
        assert [(r.kind, int(r.sequence)) for r in acked] == [(Reply.ACK, s) for s in range(1, 13)]
        assert "connections_closed_slow_frame" not in counters(running)
        await stream.aclose()
        running.service.request_shutdown()


async def shut_down_with_a_stalled_write(
    config: Path, port: Callable[[Ports], int | None], chunk: bytes, *, reset: str | None = None
) -> dict[str, int]:
    """Start a receiver; connect with a tiny receive window and send ``chunk`` again and again,
    never reading, until the receiver's replies fill the window and its writes stall; then
    (with ``reset``, a counter) reset the connection and wait for the counter, and ask it to
    shut down. Returns its counters once it stopped; fails if it does not stop."""
    stopped = trio.Event()
    service = Service(parse_config(config.read_text(encoding="utf-8")))

    async def run(task_status: trio.TaskStatus[Ports] = trio.TASK_STATUS_IGNORED) -> None:
        await service.run(task_status=task_status)
        stopped.set()

    async with trio.open_nursery() as nursery:
        ports = await nursery.start(run)
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", port(ports)))
        stream = trio.SocketStream(sock)
        try:
            blocked = False
            for _ in range(2000):  # far more than the kernel buffers hold
                with trio.move_on_after(1.0) as write:
                    await stream.send_all(chunk)
                if write.cancelled_caught:
                    blocked = True
                    break
            assert blocked, "the receiver kept reading: the window never filled"
            if reset is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()  # unread replies and no linger: the peer sees a reset
                with trio.fail_after(5):
                    while reset not in service.counters.snapshot():
                        await trio.sleep(0.01)
            service.request_shutdown()
            with trio.move_on_after(60):
                await stopped.wait()
            assert stopped.is_set(), "shutdown did not complete"
            return service.counters.snapshot()
        finally:
            # Before the fix the receiver's write waits forever: closing the socket ends it.
            sock.close()


async def test_a_panel_that_never_reads_is_closed_and_shutdown_completes(
    tmp_path: Path, clock: Any
) -> None:
    """A panel that sends frames but never reads its ACKs: once its receive window is full the
    receiver's reply write stalls; shutdown requested then still completes (within the default
    ``send_timeout``), the connection is closed and counted."""
    config = write_config(tmp_path, "udp = false\n")
    chunk = b"".join(null(seq) for seq in range(1000))
    values = await shut_down_with_a_stalled_write(config, lambda ports: ports.dc09, chunk)
    assert values.get("connections_closed_send_timeout") == 1


async def test_a_bridge_that_never_reads_is_closed_and_shutdown_completes(
    tmp_path: Path, clock: Any
) -> None:
    """The same on the bridge port: damaged frames (each NAKed) sent by a peer that never reads
    its NAKs; shutdown completes and the connection is counted as closed on send_timeout."""
    # A backlog bound above what the test can pile up: the stalled write is what is tested.
    config = write_bridge_config(tmp_path, "reply_backlog_bytes = 10000000\n")
    values = await shut_down_with_a_stalled_write(
        config, lambda ports: ports.bridge, damaged_bridge_frames(1000)
    )
    assert values.get("bridge_connections_closed_send_timeout") == 1


def damaged_bridge_frames(count: int) -> bytes:
    """A HELLO's worth of framing, then ``count`` alarms with a bad CRC (each one NAKed)."""
    client = BridgeClient(None)  # type: ignore[arg-type]  # frames only, no stream
    client.frame(Hello(SERIAL, "CKB304", 4, "2.4.1", "token"))
    damaged = bytearray()
    for _ in range(count):
        frame = bytearray(client.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)))
        frame[-1] ^= 0xFF
        damaged += frame
    return bytes(damaged)


@pytest.mark.parametrize("port", ["dc09", "bridge"])
async def test_a_peer_that_resets_while_its_replies_wait_is_closed_as_lost(
    tmp_path: Path, clock: Any, port: str
) -> None:
    """A panel or bridge that never reads its replies, then resets the connection: the
    receiver closes it at once as ``connection_lost`` (counted per port), not at send_timeout,
    and shutdown completes."""
    if port == "dc09":
        config = write_config(tmp_path, "udp = false\n")
        chunk, prefix = b"".join(null(seq) for seq in range(1000)), ""
    else:
        config, chunk, prefix = (
            write_bridge_config(tmp_path, "reply_backlog_bytes = 10000000\n"),
            damaged_bridge_frames(1000),
            "bridge_",
        )
    lost = f"{prefix}connections_closed_connection_lost"
    values = await shut_down_with_a_stalled_write(
        config, lambda ports: getattr(ports, port), chunk, reset=lost
    )
    assert values.get(lost) == 1
    assert f"{prefix}connections_closed_send_timeout" not in values


async def test_a_megabyte_of_rejections_logs_a_bounded_number_of_lines(
    receiver: RunningReceiver,
) -> None:
    """1 MB of bad-CRC frames and garbage on one connection: the first few rejections of each
    reason are logged with their raw bytes, the rest in ``rejections_suppressed`` count lines;
    the counters and the logged counts still add up to every rejected frame."""
    rng = random.Random(11)
    unit = bad_crc(sia(7)) + bytes(rng.getrandbits(8) for _ in range(40)) + b"\n"
    copies = (1 << 20) // len(unit) + 1
    with structlog.testing.capture_logs() as logs:
        stream = await connect(receiver)
        for start in range(0, copies, 1000):
            await stream.send_all(unit * min(1000, copies - start))
        await stream.send_all(sia(8))
        with trio.fail_after(30):
            [raw] = [await stream.receive_some(4096)]
        assert dc09.decode_reply(raw).kind is Reply.ACK
        await stream.aclose()
        with trio.fail_after(10):
            # The count lines are written when the connection closes.
            while not any(e["event"] == "rejections_suppressed" for e in logs):
                await trio.sleep(0.01)
    values = counters(receiver)
    assert values["frames_bad_crc"] == copies
    rejections = [e for e in logs if e.get("log_level") == "warning"]
    assert len(rejections) <= 20, f"{len(rejections)} warning lines for {copies} rejections"
    suppressed = [e for e in rejections if e["event"] == "rejections_suppressed"]
    for event, reason, counter in [
        ("frame_rejected", "bad_crc", "frames_bad_crc"),
        ("garbage_discarded", "framing", "frames_framing"),
    ]:
        logged = [e for e in rejections if e["event"] == event and e["reason"] == reason]
        assert 1 <= len(logged) <= 5
        assert all("raw" in e for e in logged)
        hidden = sum(
            e["count"] for e in suppressed if (e["rejected"], e["reason"]) == (event, reason)
        )
        assert len(logged) + hidden == values[counter]


async def test_udp_rejections_are_rate_limited_per_peer(receiver: RunningReceiver) -> None:
    """2,000 bad-CRC datagrams from one address: a few logged, the rest counted in
    ``rejections_suppressed`` lines, the counter exact; a good datagram after them is ACKed."""
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    await sock.connect(("127.0.0.1", receiver.ports.dc09))
    bad = bad_crc(sia(3))
    with structlog.testing.capture_logs() as logs, sock:
        for batch in range(20):
            for _ in range(100):
                await sock.send(bad)
            # A good datagram behind each hundred: its ACK shows the hundred were read.
            await sock.send(sia(100 + batch))
            with trio.fail_after(10):
                assert dc09.decode_reply(await sock.recv(4096)).kind is Reply.ACK
    values = counters(receiver)
    assert values["frames_bad_crc"] == 2000
    logged = [e for e in logs if e["event"] == "frame_rejected"]
    assert 1 <= len(logged) <= 5
    assert len([e for e in logs if e.get("log_level") == "warning"]) <= 10


async def test_one_host_cannot_take_every_connection_by_default(tmp_path: Path) -> None:
    """With the default limits, one address gets ``max_connections_per_peer`` (256)
    connections: the next ones are closed at once (counted, a few logged) while the earlier
    ones still work."""
    per_peer = Dc09Config().max_connections_per_peer
    assert per_peer == 256
    config = write_config(tmp_path, "udp = false\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        streams = [await connect(running) for _ in range(per_peer)]
        with trio.fail_after(10):
            while counters(running).get("connections", 0) < per_peer:
                await trio.sleep(0.01)
        with structlog.testing.capture_logs() as logs:
            extra = [await connect(running) for _ in range(20)]
            for stream in extra:
                assert await closed_by_receiver(stream, 10)
        assert counters(running).get("connections_refused") == 20
        assert 1 <= len([e for e in logs if e["event"] == "connection_refused"]) <= 5
        await streams[0].send_all(null(1))
        with trio.fail_after(5):
            assert dc09.decode_reply(await streams[0].receive_some(4096)).kind is Reply.ACK
        for stream in [*streams, *extra]:
            await stream.aclose()
        running.service.request_shutdown()


def test_default_limits_leave_open_files_for_the_store() -> None:
    """The defaults fit in the open-file limit with room for the store and outputs; a low
    limit shrinks the connection limits instead of letting accept() run out of descriptors."""
    config = Config()
    assert config.dc09.max_connections + config.bridge.max_connections + FILES_RESERVED <= 20_000
    assert fit_to_open_files(config, 20_000) == config
    small = fit_to_open_files(config, 1024)
    total = small.dc09.max_connections + small.bridge.max_connections
    assert total <= 1024 - FILES_RESERVED
    assert small.dc09.max_connections > 0
    assert small.bridge.max_connections > 0
    assert small.dc09.max_connections_per_peer <= small.dc09.max_connections


# -- the bridge port ------------------------------------------------------------------------


async def open_bridge(tmp_path: Path, nursery: trio.Nursery, extra: str) -> RunningReceiver:
    config = write_bridge_config(tmp_path, extra)
    setup_site(config)
    return await start_receiver(nursery, config)


async def test_a_bridge_port_trickle_without_hello_is_closed_after_hello_timeout(
    tmp_path: Path, clock: Any
) -> None:
    """Garbage a byte a second before any HELLO: closed ``hello_timeout`` after the opening,
    although each byte came well within it, and counted."""
    async with trio.open_nursery() as nursery:
        running = await open_bridge(tmp_path, nursery, "hello_timeout = 10.0\n")
        assert running.ports.bridge is not None
        stream = await trio.open_tcp_stream("127.0.0.1", running.ports.bridge)
        closed_after = await trickle(stream, b"x", every=1.0, limit=40)
        assert closed_after is not None
        assert 9.0 <= closed_after <= 12.0
        assert counters(running).get("bridge_connections_closed_no_hello") == 1
        running.service.request_shutdown()


async def test_an_authenticated_bridge_sending_only_garbage_is_closed(tmp_path: Path) -> None:
    """After its HELLO, a bridge that sends only bytes that make no frame is closed after
    ``garbage_timeout``, long before ``idle_timeout``, and counted."""
    async with trio.open_nursery() as nursery:
        running = await open_bridge(
            tmp_path, nursery, "idle_timeout = 300.0\ngarbage_timeout = 0.5\n"
        )
        client = await BridgeClient.open(running)
        assert isinstance(await client.hello(), Ack)
        closed_after = await trickle(client.stream, b"\x00garbage", every=0.1, limit=100)
        assert closed_after is not None
        assert counters(running).get("bridge_connections_closed_garbage") == 1
        running.service.request_shutdown()


async def test_a_flood_of_damaged_bridge_frames_logs_a_bounded_number_of_lines(
    tmp_path: Path,
) -> None:
    """1,000 frames with a bad CRC from an authenticated bridge: each is NAKed and counted, a
    few are logged with their raw bytes, the rest in one count line; the good frame behind
    them is ACKed."""
    async with trio.open_nursery() as nursery:
        running = await open_bridge(tmp_path, nursery, "")
        client = await BridgeClient.open(running)
        with structlog.testing.capture_logs() as logs:
            assert isinstance(await client.hello(), Ack)
            damaged = b""
            for _ in range(1000):
                frame = bytearray(client.frame(Event(channel=1, kind=EventKind.INPUT_ALARM)))
                frame[-1] ^= 0xFF
                damaged += frame
            good = client.frame(Event(channel=2, kind=EventKind.INPUT_ALARM))
            replies = [await client.exchange(damaged + good)]
            while not isinstance(replies[-1], Ack) and replies[-1] is not None:
                replies.append(await client.exchange(b""))
            await client.stream.aclose()
            with trio.fail_after(10):
                while not any(e["event"] == "rejections_suppressed" for e in logs):
                    await trio.sleep(0.01)
        assert [type(r) for r in replies] == [Nak] * 1000 + [Ack]
        assert counters(running)["bridge_frames_bad_crc"] == 1000
        logged = [e for e in logs if e["event"] == "bridge_frame_rejected"]
        assert 1 <= len(logged) <= 5
        assert all("raw" in e for e in logged)
        [count] = [e for e in logs if e["event"] == "rejections_suppressed"]
        assert (count["rejected"], count["reason"], count["serial"]) == (
            "bridge_frame_rejected",
            "bad_crc",
            SERIAL,
        )
        assert len(logged) + count["count"] == 1000
        running.service.request_shutdown()


async def test_one_host_over_the_bridge_connection_limit_is_refused(tmp_path: Path) -> None:
    """``max_connections_per_peer`` on the bridge port: the connection past it is closed at
    once and counted, a line logged; the bridges already connected still get their HELLO."""
    async with trio.open_nursery() as nursery:
        running = await open_bridge(tmp_path, nursery, "max_connections_per_peer = 2\n")
        clients = [await BridgeClient.open(running) for _ in range(2)]
        with trio.fail_after(10):
            while counters(running).get("bridge_connections", 0) < 2:
                await trio.sleep(0.01)
        with structlog.testing.capture_logs() as logs:
            extra = await BridgeClient.open(running)
            assert await closed_by_receiver(extra.stream, 10)
        assert counters(running).get("bridge_connections_refused") == 1
        assert [e["event"] for e in logs if e["event"] == "connection_refused"] == [
            "connection_refused"
        ]
        assert isinstance(await clients[0].hello(), Ack)
        running.service.request_shutdown()


async def test_an_authenticated_bridge_gone_quiet_is_closed_after_idle_timeout(
    tmp_path: Path,
) -> None:
    """After its HELLO, a bridge that sends nothing is closed after ``idle_timeout`` (not
    ``hello_timeout``: it said HELLO) and counted as idle."""
    async with trio.open_nursery() as nursery:
        running = await open_bridge(tmp_path, nursery, "idle_timeout = 0.5\n")
        client = await BridgeClient.open(running)
        assert isinstance(await client.hello(), Ack)
        assert await closed_by_receiver(client.stream, 10)
        values = counters(running)
        assert values.get("bridge_connections_closed_idle") == 1
        assert "bridge_connections_closed_no_hello" not in values
        running.service.request_shutdown()
