"""Delivery to automation: every signal reaches the sink, in order, through outages."""

from __future__ import annotations

import itertools
import os
import signal as os_signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from lxml import etree
from structlog.testing import capture_logs

from adapters.sentinel.client import SentinelOutput
from adapters.spool import SpoolOutput
from protocols import dc09
from protocols.signal import Signal
from receiver.dispatcher import OutputCursor, _cursor, output_status
from receiver.journal import Journal
from receiver.metrics import Counters
from receiver.nodes import Node
from receiver.store.interface import JournalWrite, Lease
from receiver.store.memory import MemoryStore
from simulators.sink import SentinelSink, SurGardSink
from tests.adapters.test_sentinel_client import closed_port
from tests.adapters.test_sentinel_package import make_signal
from tests.conftest import Backend
from tests.receiver.conftest import start_receiver, write_config
from tests.receiver.test_crash import free_port, wait_for_port
from tests.receiver.test_nodes import _leases_on


class RecordingSink(SentinelSink):
    """The Sentinel sink, remembering the order in which packages arrived."""

    def __init__(self, out: Path, **kwargs: object) -> None:
        super().__init__(out, **kwargs)  # type: ignore[arg-type]
        self.order: list[str] = []

    def _file(self, xml: bytes):  # type: ignore[no-untyped-def]
        answer = super()._file(xml)
        if self.mode == "ack":
            self.order.append(str(etree.fromstring(xml).get("id")))
        return answer


def sentinel_config(
    tmp_path: Path, port: int, extra: str = "", backend: Backend | None = None
) -> Path:
    path = write_config(tmp_path, store=backend.store_toml() if backend else None)
    text = path.read_text().replace("outputs = []\n", "")
    text += (
        f'\n[[outputs]]\nname = "automation"\nkind = "sentinel"\n'
        f'address = "127.0.0.1:{port}"\ntimeout = 1.0\n{extra}'
    )
    path.write_text(text)
    return path


async def send_alarms(port: int, accounts: list[str], per_account: int) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    for seq in range(1, per_account + 1):
        for account in accounts:
            await stream.send_all(
                dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/BA{seq:03d}")
            )
            buffer = b""
            while b"\r" not in buffer:
                buffer += await stream.receive_some(4096)
    await stream.aclose()


def journal_order(backend: Backend) -> list[str]:
    return [row[0] for row in backend.sql("SELECT id FROM signals ORDER BY seq")]


async def wait_for_files(out: Path, count: int, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while len(list(out.glob("*.xml"))) < count:
            await trio.sleep(0.05)


async def test_sink_down_then_up_gets_every_signal_in_order(
    tmp_path: Path, backend: Backend
) -> None:
    """Signals wait on disk while automation is down, then arrive once each, in journal order."""
    sink_port = free_port()
    config = sentinel_config(tmp_path, sink_port, backend=backend)
    out = tmp_path / "sink"
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1001", "1002", "1003"], 10)
        await trio.sleep(0.5)
        store = running.service.open_store()
        [status] = output_status(store, ["automation"])
        assert status["backlog"] == 30
        assert status["connected"] is False
        assert status["last_error"]
        sink = RecordingSink(out)
        await nursery.start(sink.serve, "127.0.0.1", sink_port)
        await wait_for_files(out, 30)
        await trio.sleep(0.5)  # let the cursor be saved
        [status] = output_status(store, ["automation"])
        assert status["backlog"] == 0
        assert sink.order == journal_order(backend)
        assert sink.duplicates == 0
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()


async def test_naks_are_retried_until_accepted(tmp_path: Path, backend: Backend) -> None:
    """A sink refusing packages (NAK) gets them again later; none is lost or reordered."""
    sink_port = free_port()
    config = sentinel_config(tmp_path, sink_port, backend=backend)
    out = tmp_path / "sink"
    sink = RecordingSink(out, mode="nak")
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.serve, "127.0.0.1", sink_port)
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["2001", "2002"], 5)
        await trio.sleep(1.0)
        assert sink.order == []
        sink.mode = "ack"
        with trio.fail_after(20):
            while len(sink.order) < 10:
                await trio.sleep(0.05)
        assert sink.order == journal_order(backend)
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()


async def test_default_output_spools_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: Backend
) -> None:
    """With no outputs configured, each signal appears as an XML package under ./var/spool."""
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path, store=backend.store_toml())
    config.write_text(config.read_text().replace("outputs = []\n", ""))
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["3001"], 3)
        await wait_for_files(tmp_path / "var" / "spool", 3)
        running.service.request_shutdown()
    names = sorted(p.stem for p in (tmp_path / "var" / "spool").glob("*.xml"))
    assert names == sorted(journal_order(backend))


@pytest.mark.slow
async def test_receiver_killed_mid_delivery_redelivers_after_restart(
    tmp_path: Path, backend: Backend
) -> None:
    """A backlog that was never delivered before a SIGKILL is delivered after the restart."""
    sink_port, dc09_port = free_port(), free_port()
    config = sentinel_config(tmp_path, sink_port, backend=backend)
    config.write_text(
        config.read_text().replace(
            '[dc09]\nlisten = "127.0.0.1:0"', f'[dc09]\nlisten = "127.0.0.1:{dc09_port}"'
        )
    )
    command = [sys.executable, "-m", "receiver.cli", "--config", str(config), "serve"]
    out = tmp_path / "sink"
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        await wait_for_port(dc09_port)
        await send_alarms(dc09_port, ["4001", "4002"], 10)
        os.kill(server.pid, os_signal.SIGKILL)
        server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
    sink = RecordingSink(out)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.serve, "127.0.0.1", sink_port)
        restarted = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            await wait_for_files(out, 20)
        finally:
            restarted.send_signal(os_signal.SIGTERM)
            await trio.to_thread.run_sync(restarted.wait, 20)
        nursery.cancel_scope.cancel()
    assert sink.order == journal_order(backend)


async def test_signal_an_output_cannot_carry_is_skipped_not_blocking(tmp_path: Path) -> None:
    """A Contact ID event SG cannot express (a non-numeric account and an unknown code, so no
    SIA form either) is counted and passed over; the alarms after it still reach Sur-Gard."""
    sink_port = free_port()
    out = tmp_path / "sg.txt"
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace("outputs = []\n", "")
        + f'\n[[outputs]]\nname = "sg"\nkind = "surgard"\nurl = "socket://127.0.0.1:{sink_port}"\n'
        "ack_timeout = 1.0\n"
    )
    sink = SurGardSink(out)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.serve, "127.0.0.1", sink_port)
        running = await start_receiver(nursery, config)
        stream = await trio.open_tcp_stream("127.0.0.1", running.ports.dc09)
        for seq, account, code in ((1, "ABCDE", "999"), (2, "1234", "130")):
            await stream.send_all(
                dc09.encode_frame("ADM-CID", seq, account, f"#{account}|1{code} 01 00{seq}")
            )
            buffer = b""
            while b"\r" not in buffer:
                buffer += await stream.receive_some(4096)
        with trio.fail_after(10):
            while not out.exists() or "1234" not in out.read_text():
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # let the cursor be saved
        [status] = output_status(running.service.open_store(), ["sg"])
        assert (status["backlog"], status["undeliverable"], status["delivered"]) == (0, 1, 1)
        assert "ABCDE" not in out.read_text()
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()


class TimedSink(SentinelSink):
    """The Sentinel sink, noting on trio's clock when each package was filed."""

    def __init__(self, out: Path) -> None:
        super().__init__(out)
        self.filed_at: list[float] = []
        self.filed = trio.Event()

    def _file(self, xml: bytes):  # type: ignore[no-untyped-def]
        self.filed_at.append(trio.current_time())
        self.filed.set()
        return super()._file(xml)


class CountedOutput(SentinelOutput):
    """The Sentinel output, noting on trio's clock each time it tries to connect."""

    def __init__(self, port: int) -> None:
        super().__init__("automation", ("127.0.0.1", port), timeout=5.0, heartbeat=0)
        self.connects: list[float] = []
        self.tried = trio.Event()

    async def _connect(self) -> trio.SocketStream:
        if self._stream is None:
            self.connects.append(trio.current_time())
            self.tried.set()
            self.tried = trio.Event()
        return await super()._connect()


@contextmanager
def real_time_limit(seconds: float) -> Iterator[trio.CancelScope]:
    """Cancel the block after ``seconds`` of real time. Under the autojump clock a trio
    timeout is no bound: while a worker thread runs, trio looks idle and jumps to it."""
    token = trio.lowlevel.current_trio_token()
    with trio.CancelScope() as scope:
        timer = threading.Timer(
            seconds, lambda: trio.from_thread.run_sync(scope.cancel, trio_token=token)
        )
        timer.start()
        try:
            yield scope
        finally:
            timer.cancel()
    assert not scope.cancelled_caught, f"not done within {seconds} s of real time"


async def test_automation_back_after_a_long_outage_is_served_within_seconds(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Forty connect attempts with nothing listening: about one a second (no faster, and
    no 30-second backoff; one log line, not forty), so the Sentinel sink started again gets
    the waiting alarm within two seconds."""
    port = closed_port()
    output = CountedOutput(port)
    store = MemoryStore()
    journal = Journal(store)
    cursor = OutputCursor(output, store, journal)
    sink = TimedSink(tmp_path / "sink")
    with real_time_limit(60), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(cursor.run)
            await journal.append([make_signal()])
            while len(output.connects) < 40:
                await output.tried.wait()
            gaps = [b - a for a, b in itertools.pairwise(output.connects)]
            assert all(0.9 <= gap <= 1.5 for gap in gaps[5:]), gaps
            # The same error, probe after probe: logged once, not forty times.
            assert [e["attempts"] for e in logs if e["event"] == "delivery_failed"] == [1]
            back = trio.current_time()
            await nursery.start(sink.serve, "127.0.0.1", port)
            await sink.filed.wait()
            assert sink.filed_at[0] - back <= 2.0
            nursery.cancel_scope.cancel()


class BatchedSpool(SpoolOutput):
    """The spool, remembering which packages each exchange carried (and, in ``log``, each
    exchange's size in the order things happened)."""

    window = 64

    def __init__(self, directory: Path, coalesce: float) -> None:
        super().__init__("spool", directory, coalesce=coalesce)
        self.batches: list[list[str]] = []
        self.handed = trio.Event()
        self.log: list[tuple[str, float]] = []

    async def deliver_batch(self, items: Sequence[tuple[Signal, str]]) -> int:
        written = await super().deliver_batch(items)
        self.batches.append([package_id for _, package_id in items])
        self.log.append(("batch", len(items)))
        self.handed.set()
        self.handed = trio.Event()
        return written


class HeldPause:
    """The cursor's coalescing wait (it runs in the read's worker thread), held until the test
    lets it go, as a clock moved by the test would: each wait's length goes into ``log``."""

    def __init__(self, log: list[tuple[str, float]]) -> None:
        self.log = log
        self._waiting = threading.Semaphore(0)
        self._go = threading.Semaphore(0)
        self._open = False

    def __call__(self, seconds: float) -> None:
        self.log.append(("pause", seconds))
        if not self._open:
            self._waiting.release()
            self._go.acquire(timeout=60)

    async def held(self) -> None:
        """Until the cursor waits in a pause."""
        await trio.to_thread.run_sync(self._waiting.acquire, True, 60)

    def release(self) -> None:
        self._go.release()

    def open(self) -> None:
        """No more holding (the cursor may be in a pause now: let it out too)."""
        self._open = True
        self._go.release()


async def test_small_batches_coalesce_and_a_lone_alarm_is_not_held(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """An alarm after a quiet spell reaches the spool at once (no wait asked); alarms arriving
    just behind a small batch wait for the coalescing delay (asked of the read's thread, and
    no longer than ``coalesce``) and then go out together, in one exchange; a backlog is never
    held (a full batch is followed by the next with no wait). The wait is held here until the
    test lets it go; the clock never moves (so the cursor's own timeouts never fire)."""
    output = BatchedSpool(tmp_path / "spool", coalesce=0.005)
    store = MemoryStore()
    journal = Journal(store)
    cursor = _cursor(output, store, journal, None)
    assert (cursor.window, cursor.coalesce) == (64, 0.005)
    log = output.log
    cursor.pause = pause = HeldPause(log)

    def ids(count: int, start: int) -> list[Signal]:
        return [make_signal(id=f"s-{start + i:04d}") for i in range(count)]

    async def delivered(count: int) -> None:
        while sum(map(len, output.batches)) < count:
            await output.handed.wait()

    with real_time_limit(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            await nursery.start(cursor.run)
            await journal.append(ids(1, 0))
            await delivered(1)  # at once: no wait asked
            assert log == [("batch", 1)]
            await pause.held()  # behind a small batch: the next read waits first
            for n in range(1, 4):  # three more while the cursor waits
                await journal.append(ids(1, n))
            await trio.testing.wait_all_tasks_blocked()
            assert len(output.batches) == 1  # held, for now
            pause.release()
            await delivered(4)
            assert output.batches[1] == ["s-0001", "s-0002", "s-0003"]
            # A quiet spell (the cursor waited, found nothing and waits for commits), then one
            # alarm: it goes out with no wait.
            await pause.held()
            pause.release()
            await trio.testing.wait_all_tasks_blocked()
            await journal.append(ids(1, 4))
            await delivered(5)
            held = [("batch", 1), ("pause", 0.005), ("batch", 3), ("pause", 0.005)]
            assert log == [*held, ("batch", 1)]  # the lone alarm: no wait before it
            # A backlog: 130 at once go out in full windows, one after another, unheld.
            await pause.held()
            pause.release()
            await trio.testing.wait_all_tasks_blocked()
            await journal.append(ids(130, 5))
            await delivered(135)
            assert log[6:9] == [("batch", 64), ("batch", 64), ("batch", 2)]
            assert log[5] == ("pause", 0.005)  # the one after the lone alarm, before the backlog
            pause.open()
            nursery.cancel_scope.cancel()
    assert all(seconds <= cursor.coalesce for what, seconds in log if what == "pause")
    assert trio.current_time() == 0
    assert sorted(os.listdir(tmp_path / "spool")) == [f"s-{i:04d}.xml" for i in range(135)]


class LateCommitStore(MemoryStore):
    """A store whose next read misses a commit that lands while it runs (the read's snapshot
    is taken first, the commit completes before the read returns)."""

    def __init__(self) -> None:
        super().__init__()
        self.late: Callable[[], None] | None = None

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        rows = super().read_after(seq, limit)
        late, self.late = self.late, None
        if late is not None:
            late()
        return rows


async def test_a_commit_during_an_empty_read_is_not_left_waiting(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    """An alarm committed while the cursor's read ran (and found nothing) goes out at once,
    not after the cursor's polling timeout (the clock here never moves)."""
    output = BatchedSpool(tmp_path / "spool", coalesce=0.0)
    store = LateCommitStore()
    journal = Journal(store)
    cursor = OutputCursor(output, store, journal, window=64)
    token = trio.lowlevel.current_trio_token()

    def commit_meanwhile() -> None:
        trio.from_thread.run(journal.append, [make_signal(id="late-1")], trio_token=token)

    with real_time_limit(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            store.late = commit_meanwhile
            await nursery.start(cursor.run)
            while not output.batches:
                await output.handed.wait()
            assert output.batches == [["late-1"]]
            assert trio.current_time() == 0
            nursery.cancel_scope.cancel()


class GatedOutput:
    """An output that ACKs each batch once the test opens its gate."""

    name = "xml"
    connected = True
    last_error: str | None = None

    def __init__(self) -> None:
        self.gate = trio.Event()
        self.waiting = trio.Event()

    async def deliver(self, signal: Signal, package_id: str) -> None:
        self.waiting.set()
        await self.gate.wait()

    async def aclose(self) -> None:
        return None


@pytest.mark.parametrize("lost", [False, True], ids=["held", "lost"])
async def test_a_node_that_lost_the_lease_does_not_move_the_cursor_at_shutdown(
    backend: Backend, lost: bool
) -> None:
    """Node A delivers the output's backlog; before its cursor is saved, B takes the lease over
    behind A's back, then A stops. A's shutdown save is fenced like its other cursor moves: the
    cursor stays where B's hold found it (held to the end, A's shutdown saves it)."""
    leases, other = _leases_on(backend), _leases_on(backend)
    writer = backend.open()
    writer.ensure_output("xml", 0)
    writer.append([JournalWrite(signals=[make_signal(id=f"s-{i}")]) for i in range(3)])
    journal = Journal(backend.open())
    output = GatedOutput()
    cursors: list[OutputCursor] = []

    async def deliver(
        lease: Lease, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        cursor = OutputCursor(output, backend.open(), journal, save_interval=3600.0)
        cursors.append(cursor)
        await cursor.run(task_status=task_status)

    counters = Counters()
    with capture_logs() as logs, trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            a = Node(leases, "a", lease=30.0, counters=counters)
            nursery.start_soon(a.hold, "output:xml", deliver)
            await output.waiting.wait()
            if lost:
                assert other.release_lease("output:xml", "a")
                assert other.acquire_lease("output:xml", "b", 30) is not None
            output.gate.set()
            while cursors[0].cursor < 3:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()  # A stops: its dispatcher's shutdown save
    journal.close()
    try:
        (state,) = writer.output_states(["xml"])
    finally:
        writer.close()
        leases.close()
        other.close()
    if lost:
        assert (state.cursor, state.delivered) == (0, 0)
        assert counters.values["lease_writes_refused"] == 1
        assert [e["event"] for e in logs if e["event"] == "lease_write_refused"] == [
            "lease_write_refused"
        ]
    else:
        assert (state.cursor, state.delivered) == (3, 3)
        assert "lease_writes_refused" not in counters.values


class CountingStore(MemoryStore):
    """A store that counts the cursor's reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        self.reads += 1
        return super().read_after(seq, limit)


async def test_an_idle_cursor_reads_only_as_often_as_the_journal_learns_other_writers(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """In the coordinator the journal learns the workers' commits (their notices, and its
    poll of the store every ``interval``): an idle cursor with nothing to save then reads
    once per that interval, not every ``save_interval``; a delivery still moves the saved
    cursor. (Reads run in threads, which the autojump clock may outrun: that can only make
    fewer reads per second of its time, so the count is a safe bound; a save's latency is
    not, and is left to the save tests.)"""
    store = CountingStore()
    journal = Journal(store)
    output = BatchedSpool(tmp_path / "spool", coalesce=0.0)
    cursor = OutputCursor(output, store, journal, save_interval=0.25)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        nursery.start_soon(journal.watch_other_writers, store, 1.0)
        await nursery.start(cursor.run)
        await trio.sleep(10)
        assert store.reads <= 12  # once per second; every 0.25 s it read 25 times here
        await journal.append([make_signal(id="a-1")])
        while not output.batches:
            await output.handed.wait()
        [state] = store.output_states([output.name])
        while state.cursor != cursor.cursor:
            await trio.sleep(0.01)
            [state] = store.output_states([output.name])
        nursery.cancel_scope.cancel()
    assert state.cursor == cursor.cursor > 0
