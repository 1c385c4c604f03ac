"""The batched DC-09 ingest loop on real loopback sockets: one task serving many panels.

Each test plays panels with the project's codec and checks what a panel sees on the wire,
what the journal holds, and the counters and log lines the station sees.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import structlog.testing
import trio

from protocols import dc09
from protocols.errors import Reply
from receiver.ingest.intake import Dc09Intake
from tests.receiver.conftest import RunningReceiver, start_receiver, write_config
from tests.receiver.test_dc09_service import connect, read_replies, sia


def stored_sequences(db: Path) -> list[tuple[str, str]]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute("SELECT account, sequence FROM signals").fetchall())
    finally:
        conn.close()


async def closed_by_receiver(stream: trio.SocketStream) -> bool:
    """True once the receiver closed the connection (EOF or reset), reading what is left."""
    try:
        while await stream.receive_some(65536):
            pass
    except trio.BrokenResourceError:
        pass
    return True


async def test_many_panels_at_once_each_get_their_own_acks_in_order(
    receiver: RunningReceiver,
) -> None:
    """Forty panels send three frames each, coalesced for some and split for others, all at
    once: every panel gets exactly its three ACKs in order, and all 120 signals are stored."""

    async def panel(index: int) -> None:
        account = f"{2000 + index}"
        frames = [sia(seq, account=account) for seq in (1, 2, 3)]
        stream = await connect(receiver)
        if index % 2:
            await stream.send_all(b"".join(frames))
        else:
            blob = b"".join(frames)
            for at in range(0, len(blob), 7):
                await stream.send_all(blob[at : at + 7])
        replies = [dc09.decode_reply(r) for r in await read_replies(stream, 3)]
        assert [(r.kind, r.sequence, r.account) for r in replies] == [
            (Reply.ACK, f"{seq:04d}", account) for seq in (1, 2, 3)
        ]
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        for index in range(40):
            nursery.start_soon(panel, index)
    assert len(stored_sequences(receiver.db)) == 120


@pytest.mark.slow
async def test_a_pipelining_panel_is_never_cut_off_as_slow(tmp_path: Path) -> None:
    """A panel whose every write ends in the middle of its next frame keeps completing frames:
    the slow-frame timer measures the oldest unfinished frame, not the time since the
    connection last had no partial frame, so the panel is never cut off."""
    config = write_config(tmp_path, "idle_timeout = 30\nframe_timeout = 0.3\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)
        blob = b"".join(sia(seq, account="4444") for seq in range(1, 13))
        step = len(sia(1, account="4444"))
        # Each write: the rest of one frame and the first half of the next, 0.1 s apart,
        # for over three frame timeouts in all.
        offset = step // 2
        await stream.send_all(blob[:offset])
        while offset < len(blob):
            await trio.sleep(0.1)
            await stream.send_all(blob[offset : offset + step])
            offset += step
        replies = [dc09.decode_reply(r) for r in await read_replies(stream, 12)]
        assert [r.sequence for r in replies] == [f"{seq:04d}" for seq in range(1, 13)]
        assert running.service.counters.values["connections_closed_slow_frame"] == 0
        await stream.aclose()
        running.service.request_shutdown()


@pytest.mark.slow
async def test_a_garbage_only_connection_is_closed(tmp_path: Path) -> None:
    """Garbage is not activity: a peer sending nothing but junk, often, is still closed."""
    config = write_config(tmp_path, "idle_timeout = 1.5\nframe_timeout = 30\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await connect(running)

        async def junk() -> None:
            try:
                while True:
                    await stream.send_all(b"junk without a frame ")
                    await trio.sleep(0.1)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return

        with trio.fail_after(5):
            async with trio.open_nursery() as inner:
                inner.start_soon(junk)
                assert await closed_by_receiver(stream)
                inner.cancel_scope.cancel()
        assert running.service.counters.values["connections_closed_idle"] == 1
        running.service.request_shutdown()


def _never_reading_socket(port: int) -> socket.socket:
    """A panel with a tiny receive window that never reads what the receiver sends."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@pytest.mark.slow
async def test_a_panel_that_never_reads_is_closed_and_never_stalls_others(
    tmp_path: Path,
) -> None:
    """One panel pours frames and never reads its ACKs. Once replies wait for it, it is read
    no further (its backlog stays bounded); it is closed when the backlog passes
    ``reply_backlog_bytes`` or no reply byte could be written for ``send_timeout``; meanwhile
    another panel is ACKed as usual, and shutdown completes although the first panel never
    read a byte."""
    config = write_config(tmp_path, "reply_backlog_bytes = 4096\nsend_timeout = 1.0\n")
    with trio.fail_after(45):
        async with trio.open_nursery() as nursery:
            running = await start_receiver(nursery, config)
            greedy = _never_reading_socket(running.ports.dc09)
            polls = b"".join(dc09.encode_frame("NULL", seq % 10000, "7777") for seq in range(500))
            closed = False
            # Bounded by count and time: a loaded machine may need seconds past send_timeout
            # (its deadline is re-armed coarsely) before the close is seen here.
            for attempt in range(3000):
                await trio.sleep(0)
                try:
                    greedy.send(polls)
                except BlockingIOError:
                    await trio.sleep(0.01)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                if attempt % 25:
                    continue
                # A polite panel is answered while the greedy one is backlogged.
                polite = await connect(running)
                await polite.send_all(sia(1, account="1234"))
                [raw] = await read_replies(polite, 1)
                assert dc09.decode_reply(raw).kind is Reply.ACK
                await polite.aclose()
            values = running.service.counters.values
            assert closed
            assert (
                values["connections_closed_replies_unread"]
                + values["connections_closed_send_timeout"]
                == 1
            )
            greedy.close()
            running.service.request_shutdown()


@pytest.mark.slow
async def test_shutdown_completes_while_a_peer_never_reads(tmp_path: Path) -> None:
    """A panel that stopped reading cannot hold the receiver up when it shuts down: its
    frames were ACKed into a backlog the kernel cannot take, and shutdown still ends."""
    config = write_config(tmp_path, "reply_backlog_bytes = 10000000\n")
    polls = b"".join(dc09.encode_frame("NULL", seq, "7777") for seq in range(10000)) * 2
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            running = await start_receiver(nursery, config)
            greedy = _never_reading_socket(running.ports.dc09)
            unsent = memoryview(polls)
            stalled = 0
            while unsent and stalled < 100:  # stalled: the receiver no longer reads
                await trio.sleep(0)
                try:
                    unsent = unsent[greedy.send(unsent) :]
                except BlockingIOError:
                    stalled += 1
                    await trio.sleep(0.01)
            with trio.move_on_after(5):
                while running.service.counters.values["frames_ok"] < 20000:
                    await trio.sleep(0.01)
            running.service.request_shutdown()
        greedy.close()


async def test_repeated_rejections_are_logged_once_and_counted_exactly(
    receiver: RunningReceiver,
) -> None:
    """Thirty frames with a bad CRC on one connection: thirty counted, the first few logged
    (with the raw bytes; the rest go into a ``rejections_suppressed`` count), and the good
    frame after them is ACKed."""
    bad = bytearray(sia(8))
    bad[1:5] = b"0000" if bad[1:5] != b"0000" else b"1111"
    with structlog.testing.capture_logs() as logs:
        stream = await connect(receiver)
        for _ in range(30):
            await stream.send_all(bytes(bad))
        await stream.send_all(sia(9))
        [raw] = await read_replies(stream, 1)
        assert dc09.decode_reply(raw).sequence == "0009"
        await stream.aclose()
    rejected = [e for e in logs if e["event"] == "frame_rejected"]
    assert 1 <= len(rejected) <= 5
    assert {e["reason"] for e in rejected} == {"bad_crc"}
    assert all("raw" in e for e in rejected)
    assert receiver.service.counters.values["frames_bad_crc"] == 30


async def test_total_connection_limit_refuses_the_newcomer(tmp_path: Path) -> None:
    """With max_connections = 2 a third connection is closed at once; the first two work."""
    config = write_config(tmp_path, "max_connections = 2\n")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        first, second = await connect(running), await connect(running)
        await first.send_all(sia(1, account="1111"))
        await read_replies(first, 1)  # both are admitted by now
        third = await connect(running)
        with trio.fail_after(5):
            assert await closed_by_receiver(third)
        await second.send_all(sia(2, account="1111"))
        [raw] = await read_replies(second, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        assert running.service.counters.values["connections_refused"] == 1
        await first.aclose()
        await second.aclose()
        running.service.request_shutdown()


async def test_a_bug_one_panel_triggers_costs_only_its_connection(
    receiver: RunningReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If handling one panel's frame raises (a bug), that connection is closed and logged;
    the loop, the other panels and UDP carry on."""
    stage = Dc09Intake.stage

    def failing_stage(self: Dc09Intake, accepted: Any, peer: str) -> Any:
        if accepted.header.account == "6666":
            raise RuntimeError("a bug")
        return stage(self, accepted, peer)

    monkeypatch.setattr(Dc09Intake, "stage", failing_stage)
    with structlog.testing.capture_logs() as logs:
        doomed = await connect(receiver)
        await doomed.send_all(sia(1, account="6666"))
        with trio.fail_after(5):
            assert await closed_by_receiver(doomed)
        udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await udp.bind(("127.0.0.1", 0))
        await udp.sendto(sia(3, account="6666"), ("127.0.0.1", receiver.ports.dc09))
        healthy = await connect(receiver)
        await healthy.send_all(sia(2))
        [raw] = await read_replies(healthy, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        await healthy.aclose()
        udp.close()
    assert {"connection_crashed", "datagram_crashed"} <= {e["event"] for e in logs}
    assert receiver.service.counters.values["connections_crashed"] == 1
    assert stored_sequences(receiver.db) == [("1234", "0002")]
