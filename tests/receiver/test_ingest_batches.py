"""The ingest loop while a commit is in flight: what a panel sees on the wire.

Each test holds the first journal append of the loop at a gate (the real append runs once the
test opens it) and sends more frames meanwhile, which land in the next batch; then it opens
the gate: the replies come back in frame order across the two batches, ACKs only for what its
own commit stored, and shutdown answers the commit in flight. Real loopback sockets, a real
SQLite journal. Also: the accept guard and the bridge reply backlog.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from protocols import dc09
from protocols.bridge import Ack, Event, EventKind
from protocols.errors import Reply
from receiver.journal import Journal, JournalError
from tests.receiver.conftest import registry_setup, start_receiver, write_config
from tests.receiver.test_bridge_listener import BridgeClient, setup_site, write_bridge_config
from tests.receiver.test_dc09_ingest import closed_by_receiver, stored_sequences
from tests.receiver.test_dc09_service import connect, read_replies, sia
from tests.receiver.test_listener_faults import bad_crc, damaged_bridge_frames


class Gate:
    """Holds the first journal append that stores signals until ``open``; then it runs (or
    fails, with ``fail``). Counts the appends that store signals. As a context manager it
    opens on the way out, so a failing test cannot leave the receiver's shutdown waiting."""

    def __init__(self, journal: Journal, *, fail: bool = False) -> None:
        self.entered = trio.Event()
        self._open = trio.Event()
        self.appends = 0
        self._append = journal.append
        self._fail = fail
        journal.append = self.append  # type: ignore[method-assign]

    async def append(self, signals: Any, **kw: Any) -> Any:
        if signals:
            self.appends += 1
            if self.appends == 1:
                self.entered.set()
                await self._open.wait()
                if self._fail:
                    raise JournalError("journal commit failed: disk I/O error")
        return await self._append(signals, **kw)

    async def held(self) -> None:
        """Wait (bounded) until the first append is held."""
        with trio.fail_after(10):
            await self.entered.wait()

    def open(self) -> None:
        self._open.set()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.open()


def setup_accounts(config: Path) -> None:
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
    )


async def test_frames_sent_while_a_batch_commits_get_their_replies_in_order(
    tmp_path: Path,
) -> None:
    """A panel pipelines a frame, then, while that frame's commit runs, a damaged frame and a
    third one; another panel and a UDP datagram send meanwhile. Once the first commit returns,
    the panel gets ACK 1, NAK, ACK 3 in frame order, the other panel and the datagram their
    ACKs, and everything accepted is stored."""
    config = write_config(tmp_path, 'bad_crc_reply = "nak"\n')
    setup_accounts(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        with Gate(running.service.journal) as gate:
            panel = await connect(running)
            await panel.send_all(sia(1))
            await gate.held()
            other = await connect(running)
            await other.send_all(sia(7, account="1235"))
            await panel.send_all(bad_crc(sia(2)) + sia(3))
            udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await udp.bind(("127.0.0.1", 0))
            await udp.sendto(sia(9, account="1236"), ("127.0.0.1", running.ports.dc09))
            await trio.testing.wait_all_tasks_blocked()
            assert gate.appends == 1  # the next batch waits for the commit in flight
            gate.open()
            replies = [dc09.decode_reply(r) for r in await read_replies(panel, 3)]
            assert [(r.kind, r.sequence) for r in replies] == [
                (Reply.ACK, "0001"),
                (Reply.NAK, "0000"),
                (Reply.ACK, "0003"),
            ]
            [raw] = await read_replies(other, 1)
            assert (dc09.decode_reply(raw).kind, dc09.decode_reply(raw).sequence) == (
                Reply.ACK,
                "0007",
            )
            with trio.fail_after(5):
                datagram, _ = await udp.recvfrom(4096)
            assert dc09.decode_reply(datagram).sequence == "0009"
            assert gate.appends >= 2
            udp.close()
            await panel.aclose()
            await other.aclose()
            running.service.request_shutdown()
    assert stored_sequences(running.db) == [
        ("1234", "0001"),
        ("1234", "0003"),
        ("1235", "0007"),
        ("1236", "0009"),
    ]


async def test_a_failed_commit_costs_only_its_own_batch(tmp_path: Path) -> None:
    """The first batch's commit fails (outcome unknown) while the panel's next frame waits:
    the first frame gets no ACK, the next one (the next batch, same connection) is ACKed and
    stored."""
    config = write_config(tmp_path, "udp = false\n")
    setup_accounts(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        with Gate(running.service.journal, fail=True) as gate:
            panel = await connect(running)
            await panel.send_all(sia(1))
            await gate.held()
            await panel.send_all(sia(2))
            gate.open()
            [raw] = await read_replies(panel, 1)
            reply = dc09.decode_reply(raw)
            assert (reply.kind, reply.sequence) == (Reply.ACK, "0002")
            assert running.service.counters.values["frames_not_committed"] == 1
            await panel.aclose()
            running.service.request_shutdown()
    assert stored_sequences(running.db) == [("1234", "0002")]


async def test_shutdown_answers_the_commit_in_flight(tmp_path: Path) -> None:
    """Shutdown arrives while the first batch commits and the panel's next frame waits: the
    commit in flight finishes and its frame is ACKed, the next frame is neither stored nor
    ACKed (the panel retries it), and the connection is closed."""
    config = write_config(tmp_path, "udp = false\n")
    setup_accounts(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        with Gate(running.service.journal) as gate:
            panel = await connect(running)
            await panel.send_all(sia(1))
            await gate.held()
            await panel.send_all(sia(2))
            running.service.request_shutdown()
            await trio.testing.wait_all_tasks_blocked()  # the loop is cancelled by now
            gate.open()
            replies = await read_replies(panel, 2)
            assert [dc09.decode_reply(r).sequence for r in replies] == ["0001"]
            assert await closed_by_receiver(panel)
    assert stored_sequences(running.db) == [("1234", "0001")]
    assert gate.appends == 1


async def test_a_panel_that_ends_its_side_gets_the_replies_of_every_batch(
    tmp_path: Path,
) -> None:
    """A panel sends a frame, then (while it commits) another, then ends its side of the
    connection: it still gets both ACKs, in order, before the receiver closes."""
    config = write_config(tmp_path, "udp = false\n")
    setup_accounts(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        with Gate(running.service.journal) as gate:
            panel = await connect(running)
            await panel.send_all(sia(1))
            await gate.held()
            await panel.send_all(sia(2))
            await panel.send_eof()
            gate.open()
            replies = [dc09.decode_reply(r) for r in await read_replies(panel, 2)]
            assert [(r.kind, r.sequence) for r in replies] == [
                (Reply.ACK, "0001"),
                (Reply.ACK, "0002"),
            ]
            assert await closed_by_receiver(panel)
            running.service.request_shutdown()
    assert stored_sequences(running.db) == [("1234", "0001"), ("1234", "0002")]


async def test_bridge_frames_sent_while_a_batch_commits_are_acked_in_order(
    tmp_path: Path,
) -> None:
    """The same on the bridge port: an alarm committing, the next alarm sent meanwhile; the
    bridge gets ACK 2 then ACK 3, from two appends."""
    config = write_bridge_config(tmp_path)
    setup_site(config)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        client = await BridgeClient.open(running)
        assert isinstance(await client.hello(), Ack)
        with Gate(running.service.journal) as gate:
            alarm = Event(channel=1, kind=EventKind.INPUT_ALARM)
            await client.stream.send_all(client.frame(alarm))
            await gate.held()
            await client.stream.send_all(client.frame(Event(channel=2, kind=alarm.kind)))
            gate.open()
            assert await client.exchange(b"") == Ack(2)
            assert await client.exchange(b"") == Ack(3)
            assert gate.appends == 2
            await client.stream.aclose()
            running.service.request_shutdown()


async def test_a_connection_reset_before_its_options_are_set_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection reset while it waited in the accept backlog fails its first setsockopt:
    it is closed and its admission released, and the loop goes on serving the next panel."""
    config = write_config(tmp_path, "udp = false\nmax_connections = 1\n")
    setup_accounts(config)
    real = socket.socket.setsockopt
    port = 0
    failed: list[int] = []

    def setsockopt(self: socket.socket, *args: Any) -> None:
        nodelay = args[:2] == (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # Only an accepted connection (on the receiver's port), once: not a client's socket.
        if nodelay and not failed and self.getsockname()[1] == port:
            failed.append(self.fileno())
            raise ConnectionResetError(104, "Connection reset by peer")
        real(self, *args)

    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        port = running.ports.dc09
        monkeypatch.setattr(socket.socket, "setsockopt", setsockopt)
        first = await connect(running)
        with trio.fail_after(5):
            assert await closed_by_receiver(first)
        assert failed
        # The only slot (max_connections = 1) was released: the next panel is served.
        second = await connect(running)
        await second.send_all(sia(4))
        [raw] = await read_replies(second, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        assert running.service.servers["dc09"].limits.open == 1
        await second.aclose()
        running.service.request_shutdown()


def _never_reading_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_a_bridge_that_never_reads_is_closed_past_its_reply_backlog(
    tmp_path: Path,
) -> None:
    """A bridge pours damaged frames (each NAKed) and never reads: once its unread replies
    pass ``reply_backlog_bytes`` it is closed and counted, long before ``send_timeout``."""
    config = write_bridge_config(tmp_path, "reply_backlog_bytes = 1024\nsend_timeout = 600\n")
    setup_site(config)
    flood = damaged_bridge_frames(2000)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        assert running.ports.bridge is not None
        greedy = _never_reading_socket(running.ports.bridge)
        closed = False
        with trio.fail_after(30):
            for _ in range(5000):  # bounded: far more than the kernel buffers hold
                try:
                    greedy.send(flood)
                except BlockingIOError:
                    await trio.sleep(0.01)
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                await trio.sleep(0)
        greedy.close()
        assert closed
        values = running.service.counters.values
        assert values["bridge_connections_closed_replies_unread"] == 1
        assert values["bridge_connections_closed_send_timeout"] == 0
        running.service.request_shutdown()
