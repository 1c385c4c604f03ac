"""The coordinator's worker pool: every ingest worker starts at once, and the ports answer
only once every worker listens."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from protocols import dc09
from protocols.errors import Reply
from receiver import workers
from receiver.config import Config, parse_config
from receiver.service import worker_main
from receiver.workers import WORKER_BOUND, WORKER_GO, WorkerPool
from tests.receiver.conftest import write_config
from tests.receiver.test_crash import free_port
from tests.receiver.test_dc09_service import read_replies, sia

_RENDEZVOUS = "RECEIVER_TEST_RENDEZVOUS"
# How long a real-process step may take before the test fails, and how long a stand-in worker
# waits for the test's go. Every wait ends at its event (a file, a port answering, a count the
# workers report); the bound only has to be far above what a loaded 2-core machine needs
# (starting a receiver took 14 s at load average 11).
_PATIENCE = 180.0


def rendezvous_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """A stand-in worker: bound only once every worker of the pool has been started."""
    folder = Path(os.environ[_RENDEZVOUS])
    (folder / f"started-{number}").touch()
    deadline = time.monotonic() + _PATIENCE
    while len(list(folder.glob("started-*"))) < 2:
        if time.monotonic() > deadline:
            return  # never ready: the pool reports that this worker did not start
        time.sleep(0.01)
    ready.send((WORKER_BOUND, 0))  # no TCP socket to hand over
    assert ready.recv() == WORKER_GO
    ready.send((config.dc09.address[1], None, sys.getswitchinterval()))
    time.sleep(60)  # until the pool's SIGTERM


@pytest.mark.slow
async def test_every_worker_is_started_before_the_first_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are started together, not each after the last one listens: panels that
    reconnect at start-up are spread over every worker, not all kept by the first."""
    monkeypatch.setenv(_RENDEZVOUS, str(tmp_path))
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    pool = WorkerPool(config, 2, target=rendezvous_worker)
    async with trio.open_nursery() as nursery:
        dc09_port, _ = await nursery.start(pool.run)
        assert dc09_port > 0
        assert len(pool.pids) == 2
        nursery.cancel_scope.cancel()


def slow_second_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """``worker_main``; worker 1 starts only once the test lets it (a worker slow to start)."""
    if number == 1:
        go = Path(os.environ[_RENDEZVOUS]) / "go"
        deadline = time.monotonic() + _PATIENCE
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    worker_main(config, number, ready, json_logs, coordinator)


def holds_udp_port(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a UDP socket bound to 127.0.0.1:``port`` (Linux /proc):
    the worker has bound the DC-09 port."""
    inodes = set()
    for line in Path("/proc/net/udp").read_text(encoding="ascii").splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rpartition(":")[2], 16) == port:
            inodes.add(f"socket:[{fields[9]}]")
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd) in inodes:
                return True
    return False


def _first_worker_pid(pool: WorkerPool) -> int | None:
    process = pool.slots[0].process
    return process.pid if process is not None else None


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_panels_connecting_as_soon_as_the_port_answers_reach_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Panels that try the DC-09 port from the moment the first worker has bound it, while
    the other still starts (as panels reconnecting at start-up do), are refused until every
    worker listens, and are then spread over every worker. Before, each worker listened as
    soon as it could: the first took every panel (a TCP panel keeps the worker that accepted
    it). A UDP frame sent meanwhile waits in the bound socket and gets its ACK."""
    monkeypatch.setenv(_RENDEZVOUS, str(tmp_path))
    port = free_port()
    config = parse_config(write_config(tmp_path, "udp = true").read_text(encoding="utf-8"))
    config = attrs.evolve(config, dc09=attrs.evolve(config.dc09, listen=f"127.0.0.1:{port}"))
    pool = WorkerPool(config, 2, target=slow_second_worker)
    streams: list[trio.SocketStream] = []
    udp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run)
        with trio.fail_after(_PATIENCE):
            while True:
                pid = _first_worker_pid(pool)
                if pid is not None and holds_udp_port(pid, port):
                    break
                await trio.sleep(0.01)
            await udp.sendto(sia(1, account="4999"), ("127.0.0.1", port))
            for _ in range(40):  # panels trying while worker 1 still starts
                with contextlib.suppress(OSError):
                    streams.append(await trio.open_tcp_stream("127.0.0.1", port))
            (tmp_path / "go").touch()  # worker 1 goes on starting
            while len(streams) < 40:  # each panel retries until the port answers
                try:
                    streams.append(await trio.open_tcp_stream("127.0.0.1", port))
                except OSError:
                    await trio.sleep(0.01)
            for n, stream in enumerate(streams, start=1):
                await stream.send_all(sia(n, account=f"{5000 + n}"))
            replies = [await read_replies(stream, 1, timeout=_PATIENCE) for stream in streams]
            udp_reply = await udp.recv(4096)
            # Each worker reports its counters to the coordinator every second.
            while sum(slot.counters.values["connections"] for slot in pool.slots) < 40:
                await trio.sleep(0.05)
        served = [slot.counters.values["connections"] for slot in pool.slots]
        for stream in streams:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    udp.close()
    assert [dc09.decode_reply(r).kind for [r] in replies] == [Reply.ACK] * 40
    assert dc09.decode_reply(udp_reply).kind is Reply.ACK
    assert 0 not in served, f"connections per worker: {served}"


def failing_second_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """``worker_main``; worker 1 exits before it binds anything (a worker that cannot start)."""
    if number == 0:
        worker_main(config, number, ready, json_logs, coordinator)


@pytest.mark.slow
async def test_a_worker_that_cannot_start_stops_the_others_before_they_listen(
    tmp_path: Path,
) -> None:
    """One worker failing at start-up is the pool's error; the worker that had bound its
    ports and waited for the others ends at its SIGTERM (exit 0, not killed at the stop
    deadline)."""
    port = free_port()
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    config = attrs.evolve(config, dc09=attrs.evolve(config.dc09, listen=f"127.0.0.1:{port}"))
    pool = WorkerPool(config, 2, target=failing_second_worker)
    with pytest.raises(OSError, match="ingest worker 1 did not start"):
        await pool.run()
    first = pool.slots[0].process
    assert first is not None
    assert first.exitcode == 0


class _LateGo:
    """A worker's pipe whose first message (the coordinator's go) is read only once the test
    lets it: a worker that, told go, gets no CPU for a while (a loaded machine)."""

    def __init__(self, ready: Connection, release: Path) -> None:
        self.ready = ready
        self.release = release

    def send(self, message: object) -> None:
        self.ready.send(message)

    def fileno(self) -> int:
        return self.ready.fileno()

    def close(self) -> None:
        self.ready.close()

    def recv(self) -> object:
        deadline = time.monotonic() + _PATIENCE
        while not self.release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.ready.recv()


def late_second_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """``worker_main``; worker 1 acts on the coordinator's go only once the test lets it."""
    if number == 1:
        late: Any = _LateGo(ready, Path(os.environ[_RENDEZVOUS]) / "go")
        worker_main(config, number, late, json_logs, coordinator)
    else:
        worker_main(config, number, ready, json_logs, coordinator)


@pytest.mark.slow
async def test_the_ports_answer_for_every_worker_at_once_even_if_one_is_slow_to_act_on_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator makes every worker's DC-09 and bridge sockets listen itself, one call
    after the other, so panels and bridges that connect the moment the port answers are
    spread over every worker even when one worker, told go, gets no CPU for a while. Before,
    each worker listened when it ran after its go: the first took every connection made
    meanwhile (measured: 0.2 to 12 ms between the two workers' listen on a loaded machine)."""
    monkeypatch.setenv(_RENDEZVOUS, str(tmp_path))
    config = parse_config(write_config(tmp_path, "[ingest]\nworkers = 2\n").read_text("utf-8"))
    dc09_port, bridge_port = free_port(), free_port()
    config = attrs.evolve(
        config,
        dc09=attrs.evolve(config.dc09, listen=f"127.0.0.1:{dc09_port}"),
        bridge=attrs.evolve(config.bridge, listen=f"127.0.0.1:{bridge_port}"),
    )
    pool = WorkerPool(config, 2, target=late_second_worker)
    streams: list[trio.SocketStream] = []
    bridges: list[trio.SocketStream] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(pool.run)
        with trio.fail_after(_PATIENCE):
            while not streams:  # a panel retrying until the port answers
                try:
                    streams.append(await trio.open_tcp_stream("127.0.0.1", dc09_port))
                except OSError:
                    await trio.sleep(0.001)
            while len(streams) < 40:
                streams.append(await trio.open_tcp_stream("127.0.0.1", dc09_port))
            for _ in range(40):
                bridges.append(await trio.open_tcp_stream("127.0.0.1", bridge_port))
            (tmp_path / "go").touch()  # worker 1 gets its CPU back
            for n, stream in enumerate(streams, start=1):
                await stream.send_all(sia(n, account=f"{5000 + n}"))
            replies = [await read_replies(stream, 1, timeout=_PATIENCE) for stream in streams]
            counted = ("connections", "bridge_connections")
            while any(sum(s.counters.values[c] for s in pool.slots) < 40 for c in counted):
                await trio.sleep(0.05)
        served = {c: [s.counters.values[c] for s in pool.slots] for c in counted}
        for stream in streams + bridges:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert [dc09.decode_reply(r).kind for [r] in replies] == [Reply.ACK] * 40
    assert 0 not in served["connections"], f"panels per worker: {served}"
    assert 0 not in served["bridge_connections"], f"bridges per worker: {served}"


def hung_worker(up: Connection) -> None:
    """A worker that ignores SIGTERM and never finishes (hung): only a kill ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    up.send("up")
    time.sleep(60)


@pytest.mark.slow
async def test_the_coordinator_loop_runs_while_stop_waits_on_a_worker_past_its_deadline(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A worker that outlives the stop deadline gets a short grace, then is killed; the grace
    is awaited, so the coordinator's other tasks (console, metrics, logs) go on meanwhile.
    Before, the grace was a blocking ``join(0.5)`` that froze the coordinator's loop."""
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    context = multiprocessing.get_context("spawn")
    up, child = context.Pipe(duplex=False)
    process = context.Process(target=hung_worker, args=(child,))
    process.start()
    child.close()
    assert up.poll(_PATIENCE), "the stand-in worker did not start"
    pool = WorkerPool(config, 1, target=worker_main)
    pool.slots[0].process = process
    seen: list[tuple[float, bool]] = []

    async def tick() -> None:
        while True:
            await trio.sleep(0.1)
            seen.append((trio.current_time(), process.is_alive()))

    start = trio.current_time()
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(tick)
            await pool.stop()
            nursery.cancel_scope.cancel()
    overdue = start + workers._STOP_TIMEOUT + 0.2
    assert any(alive for at, alive in seen if at > overdue), "the loop stood still"
    assert process.exitcode == -signal.SIGKILL
    assert [e["event"] for e in logs if e["event"] == "worker_killed"] == ["worker_killed"]
