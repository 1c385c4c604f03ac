"""Ingest workers: processes sharing the ports, one coordinator, the store deciding duplicates."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from multiprocessing.process import BaseProcess
from pathlib import Path

import httpx
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from protocols import dc09
from protocols.errors import Reply
from protocols.signal import Signal
from receiver import tcp_accept
from receiver.config import parse_config
from receiver.journal import AppendResult
from receiver.service import worker_main
from receiver.store.interface import JournalWrite, LinkSeen, LinkTrouble
from receiver.store.memory import MemoryStore
from receiver.supervisor import LinkActivity, Supervisor
from receiver.workers import WORKER_BOUND, WORKER_GO, receive_sockets
from tests.receiver.conftest import write_config
from tests.receiver.test_crash import free_port, wait_for_port
from tests.receiver.test_dc09_service import read_replies, sia
from tests.receiver.test_supervisor import SUBJECT, Recorder

# How long a real-process step may take before the test fails. The waits below end at the
# event they wait for (a log line, a count of ACKs); the bound only has to be far above what a
# loaded 2-core machine needs (start-up alone took 14 s at load average 11).
_PATIENCE = 180.0


@asynccontextmanager
async def _serving(config: Path, log: Path) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`receiver serve` on ``config``, its output in ``log``, once it has logged
    ``receiver_started`` (every worker listens). When the block ends, SIGTERM stops it and it
    must exit 0; if the block fails, it is killed."""
    command = [sys.executable, "-m", "receiver.cli", "--config", str(config), "serve"]
    with log.open("wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=out)
    try:
        await _until_logged(server, log, "receiver_started")
        yield server
        server.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(server.wait, _PATIENCE) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def test_ingest_workers_setting(tmp_path: Path) -> None:
    """`[ingest] workers` takes a count; 0 (the default) means one per core."""
    assert parse_config("").ingest.worker_count >= 1
    assert parse_config("[ingest]\nworkers = 0\n").ingest.worker_count >= 1
    assert parse_config("[ingest]\nworkers = 3\n").ingest.worker_count == 3
    with pytest.raises(ValueError, match="workers"):
        parse_config("[ingest]\nworkers = -1\n")


def test_ingest_switch_interval_setting() -> None:
    """`[ingest] switch_interval`: the interpreter's thread switch interval in every serving
    process, 0.5 ms unless set; a value outside 0.1 ms to 0.1 s is one line naming the key."""
    assert parse_config("").ingest.switch_interval == 0.0005
    assert parse_config("[ingest]\nswitch_interval = 0.005\n").ingest.switch_interval == 0.005
    with pytest.raises(ValueError, match="switch_interval"):
        parse_config("[ingest]\nswitch_interval = 0.0\n")


@pytest.mark.slow
async def test_every_worker_applies_the_switch_interval(tmp_path: Path) -> None:
    """`[ingest] switch_interval` is applied in each worker process, not only in the
    coordinator: every `worker_started` line shows the interval that worker runs with (the
    test fails without worker_main's sys.setswitchinterval: Python's 0.005 shows)."""
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'log_signals = false\noutputs = []\n[store]\npath = "{tmp_path / "receiver.sqlite3"}"\n'
        '[ingest]\nworkers = 2\nswitch_interval = 0.002\n[console]\nlisten = ""\n'
        '[dc09]\nlisten = "127.0.0.1:0"\nudp = false\n[bridge]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    log = tmp_path / "receiver.log"
    async with _serving(config, log):
        pass  # receiver_started: every worker has logged worker_started
    started = _log_events(log, "worker_started")
    assert sorted((e["worker"], e["switch_interval"]) for e in started) == [
        (0, 0.002),
        (1, 0.002),
    ]
    [coordinator] = _log_events(log, "receiver_started")
    assert coordinator["switch_interval"] == 0.002


class StoreRecorder(Recorder):
    """The coordinator's journal stand-in: keeps what the supervisor writes and writes the
    trouble rows into the store's links, as the journal does."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__()
        self.store = store

    async def append(
        self, signals: list[Signal], *, troubles: list[tuple[str, int, bool]]
    ) -> AppendResult:
        self.store.append([JournalWrite(troubles=[LinkTrouble(*t) for t in troubles])])
        return await super().append(signals, troubles=troubles)


async def test_coordinator_supervisor_learns_of_traffic_from_the_store(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Link times a worker commits keep the coordinator's link quiet and restore its trouble;
    the trouble row written for a link that never reported is not taken for traffic."""
    store = MemoryStore()
    recorder = StoreRecorder(store)
    supervisor = Supervisor(recorder, grace=1.5)
    activity = LinkActivity(supervisor, recorder, {})
    supervisor.sink = activity
    clock_us = 1_000_000_000

    def worker_commits(link: str) -> None:
        nonlocal clock_us
        clock_us += 1
        store.append([JournalWrite(links=[LinkSeen(link, clock_us)])])

    def poll() -> None:
        activity.notice(store.links_seen_since(0))

    def events() -> list[tuple[str, str]]:
        return [(str(s.account_id), s.cid.qualifier) for s in recorder.signals if s.cid]

    async with trio.open_nursery() as nursery:
        supervisor.watch("account:7", 90.0, SUBJECT)
        supervisor.watch("account:8", 90.0, {**SUBJECT, "account_id": 8})
        await nursery.start(supervisor.run)
        for _ in range(4):  # traffic on 7 every 100 s: inside its 135 s deadline
            await trio.sleep(100)
            worker_commits("account:7")
            poll()
        assert events() == [("8", "E")]
        poll()  # account:8's trouble row is in the table now
        await trio.sleep(1)
        assert events() == [("8", "E")], "a trouble row is not traffic"
        await trio.sleep(200)
        assert events() == [("8", "E"), ("7", "E")]
        worker_commits("account:7")
        poll()
        await trio.sleep(0.1)
        assert events() == [("8", "E"), ("7", "E"), ("7", "R")]
        nursery.cancel_scope.cancel()


def _start_worker(config_path: Path, number: int) -> tuple[BaseProcess, int]:
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=True)
    config = parse_config(config_path.read_text(encoding="utf-8"))
    process = context.Process(target=worker_main, args=(config, number, send, True, os.getpid()))
    process.start()
    send.close()
    try:
        assert receive.poll(_PATIENCE), "worker did not bind its ports"
        said, count = receive.recv()
        assert said == WORKER_BOUND
        assert receive.poll(_PATIENCE), "worker did not hand its sockets over"
        tcp_accept.listen(handed := receive_sockets(receive, count))  # as its coordinator
        for sock in handed:
            sock.close()
        receive.send(WORKER_GO)  # accept now
        assert receive.poll(_PATIENCE), "worker did not start"
        dc09_port, _, _ = receive.recv()
    finally:
        receive.close()
    return process, int(dc09_port)


@pytest.mark.slow
async def test_a_retry_landing_on_another_worker_is_acked_and_stored_once(
    tmp_path: Path,
) -> None:
    """The same frame sent to two worker processes gets two ACKs and makes one journal row."""
    config_path = write_config(tmp_path)
    workers = [await trio.to_thread.run_sync(_start_worker, config_path, n) for n in (0, 1)]
    try:
        replies = []
        for _, port in workers:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(sia(17))
            replies += await read_replies(stream, 1, timeout=_PATIENCE)
            await stream.aclose()
    finally:
        for process, _ in workers:
            process.terminate()
        for process, _ in workers:
            await trio.to_thread.run_sync(process.join, _PATIENCE)
    assert [dc09.decode_reply(r).kind for r in replies] == [Reply.ACK, Reply.ACK]
    assert [p.exitcode for p, _ in workers] == [0, 0]
    conn = sqlite3.connect(tmp_path / "receiver.sqlite3")
    assert conn.execute("SELECT account, sequence, repeats FROM signals").fetchall() == [
        ("1234", "0017", 1)
    ]


async def _panel(port: int, account: str, acked: list[tuple[str, str]], count: int) -> None:
    """A panel that reconnects and resends a frame whose ACK it did not get (as panels do)."""
    seq = 1
    stream: trio.SocketStream | None = None
    while seq <= count:
        try:
            if stream is None:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(sia(seq, account=account))
            [raw] = await read_replies(stream, 1)
        except (OSError, trio.BrokenResourceError, ValueError):
            stream = None
            await trio.sleep(0.05)
            continue
        if dc09.decode_reply(raw).kind is Reply.ACK:
            acked.append((account, f"{seq:04d}"))
            seq += 1


async def _until_logged(
    server: subprocess.Popen[bytes], log: Path, event: str, count: int = 1
) -> list[dict[str, object]]:
    """Wait until ``log`` holds ``count`` ``event`` lines (their entries); a server that exits
    meanwhile fails the test at once, with its log."""
    with trio.fail_after(_PATIENCE):
        while len(found := _log_events(log, event)) < count:
            if server.poll() is not None:
                output = log.read_text(encoding="utf-8", errors="replace")
                pytest.fail(f"receiver exited {server.returncode} before {event}:\n{output}")
            await trio.sleep(0.05)
    return found


async def _until_acked(
    server: subprocess.Popen[bytes], acked: list[tuple[str, str]], count: int
) -> None:
    """Wait until the panels have seen ``count`` ACKs; the server must stay up meanwhile."""
    with trio.fail_after(_PATIENCE):
        while len(acked) < count:
            assert server.poll() is None, f"receiver exited {server.returncode}"
            await trio.sleep(0.01)


def _log_events(path: Path, event: str) -> list[dict[str, object]]:
    found = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == event:
            found.append(entry)
    return found


@pytest.mark.slow
async def test_sigkill_of_one_worker_loses_no_acked_frame_and_it_is_restarted(
    tmp_path: Path,
) -> None:
    """Kill one of two workers under load: every frame the panels saw ACKed is in the journal,
    the coordinator starts a new worker, and SIGTERM then stops everything cleanly."""
    port = free_port()
    db = tmp_path / "receiver.sqlite3"
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'log_signals = false\noutputs = []\n[store]\npath = "{db}"\n[ingest]\nworkers = 2\n'
        f'[dc09]\nlisten = "127.0.0.1:{port}"\nudp = false\n[bridge]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    log = tmp_path / "receiver.log"
    acked: list[tuple[str, str]] = []
    async with _serving(config, log) as server:
        await wait_for_port(port, server=server, log=log)
        started = await _until_logged(server, log, "worker_started", 2)
        victim = int(started[0]["pid"])  # type: ignore[call-overload]
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(_panel, port, f"{7000 + i}", acked, 9000)
            await _until_acked(server, acked, 300)
            os.kill(victim, signal.SIGKILL)
            await _until_logged(server, log, "worker_started", 3)  # its replacement
            await _until_acked(server, acked, len(acked) + 300)
            nursery.cancel_scope.cancel()
    [exited] = _log_events(log, "worker_exited")
    assert exited["pid"] == victim
    assert exited["exitcode"] == -signal.SIGKILL
    stored = set(sqlite3.connect(db).execute("SELECT account, sequence FROM signals").fetchall())
    missing = [pair for pair in acked if pair not in stored]
    assert missing == [], f"{len(missing)} ACKed signals lost, e.g. {missing[:5]}"


@pytest.mark.slow
async def test_metrics_add_up_every_workers_frames(tmp_path: Path) -> None:
    """With two ingest workers, the coordinator's /metrics counts the frames both workers
    ACKed (each worker reports its counters about once a second)."""
    port, console = free_port(), free_port()
    db = tmp_path / "receiver.sqlite3"
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'log_signals = false\noutputs = []\n[store]\npath = "{db}"\n[ingest]\nworkers = 2\n'
        f'[dc09]\nlisten = "127.0.0.1:{port}"\nudp = false\n[bridge]\nlisten = "127.0.0.1:0"\n'
        f'[console]\nlisten = "127.0.0.1:{console}"\n',
        encoding="utf-8",
    )
    log = tmp_path / "receiver.log"
    acked: list[tuple[str, str]] = []
    async with _serving(config, log) as server:
        await wait_for_port(port, server=server, log=log)
        await wait_for_port(console, server=server, log=log)
        with trio.fail_after(_PATIENCE):
            async with trio.open_nursery() as nursery:
                for i in range(8):
                    nursery.start_soon(_panel, port, f"{6000 + i}", acked, 10)
        assert len(acked) == 80
        ok = 0.0
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{console}", timeout=_PATIENCE
        ) as client:
            with trio.fail_after(_PATIENCE):
                while ok < 80:
                    await trio.sleep(0.2)
                    text = (await client.get("/metrics")).text
                    ok = sum(
                        sample.value
                        for family in text_string_to_metric_families(text)
                        for sample in family.samples
                        if sample.name == "receiver_frames_total"
                        and sample.labels.get("outcome") == "ok"
                    )
        assert ok == 80
