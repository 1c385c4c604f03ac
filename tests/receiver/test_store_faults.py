"""A full disk or a failing store: the receiver stays up, ACKs nothing it did not commit,
reports the fault, and recovers by itself once the disk has room again.

The end-to-end test fills the disk for real: ``receiver serve`` runs in a child process with
SIGXFSZ ignored, and the test lowers the child's ``RLIMIT_FSIZE`` (``prlimit``) so every write
past the first byte of any file fails as the kernel fails it (EFBIG, or a short write that
SQLite reports as ``database or disk is full``); raising the limit again is the disk gaining
room. Unit tests use SQLite's own size limit (``PRAGMA max_page_count``) on the store's
connections, which makes SQLite raise a real ``database or disk is full``.
"""

from __future__ import annotations

import contextlib
import json
import resource
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from structlog.testing import capture_logs

from protocols import dc09
from protocols.errors import Reply
from protocols.signal import Signal, Source, new_signal_id
from receiver.journal import Journal, JournalError
from receiver.metrics import Counters
from receiver.store.sqlite_store import SqliteStore
from receiver.supervisor import Supervisor
from tests.conftest import unavailable
from tests.receiver.conftest import registry_setup, write_config
from tests.receiver.test_crash import free_port, wait_for_port

# The child ignores SIGXFSZ, so a write past RLIMIT_FSIZE fails with EFBIG instead of killing it.
_SERVE = (
    "import signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "from receiver.cli import main; sys.exit(main(sys.argv[1:]))"
)
# A bound on each wait for the child (a log line, a reply, a file), not a timing: each ends at
# its event; a loaded 2-core machine has taken 14 s to start a receiver.
_PATIENCE = 120.0


class LogLines:
    """The child's JSON log lines, read by a thread as they come."""

    def __init__(self, stream: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "unparsed", "line": line})

    def named(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in list(self.events)
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, event: str, count: int = 1, **fields: Any) -> None:
        with trio.fail_after(_PATIENCE):
            while len(self.named(event, **fields)) < count:
                await trio.sleep(0.02)


class Panel:
    """One DC-09 TCP connection that sends a frame and reads the reply, if any."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, seq: int) -> None:
        frame = dc09.encode_frame("SIA-DCS", seq, "1234", f"#1234|Nri1/BA{seq:03d}")
        await self.stream.send_all(frame)

    async def reply(self) -> Reply:
        with trio.fail_after(_PATIENCE):
            while b"\r" not in self.buffer:
                data = await self.stream.receive_some(4096)
                assert data, "the receiver closed the connection"
                self.buffer += data
        end = self.buffer.index(b"\r") + 1
        reply, self.buffer = self.buffer[:end], self.buffer[end:]
        return dc09.decode_reply(reply).kind

    async def no_reply_yet(self) -> bool:
        with trio.move_on_after(0.3):
            data = await self.stream.receive_some(4096)
            self.buffer += data
        return b"\r" not in self.buffer


def spooled(spool: Path) -> set[str]:
    return {p.stem for p in spool.glob("*.xml")} if spool.is_dir() else set()


@pytest.fixture
def disk_limit() -> Iterator[list[int]]:
    """Pids whose file-size limit the test lowered; the limit is lifted again at the end."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)


def fill_disk(pid: int) -> None:
    """From now on, no file of ``pid`` can grow past its first byte: a full disk."""
    try:
        hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
    except PermissionError:  # a sandbox that forbids prlimit(2) on another process
        unavailable("prlimit(2) on a child process is not permitted here")


def free_disk(pid: int) -> None:
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="prlimit(2) is Linux")
async def test_full_disk_keeps_the_receiver_up_and_it_recovers(
    tmp_path: Path, disk_limit: list[int]
) -> None:
    """While the disk is full: no ACK for what was not committed, the spool cannot write,
    the cursor cannot be saved, and the receiver stays up reporting ``store_errors``. Once
    the disk has room: the panel's retry and new frames are ACKed, and the backlog is spooled."""
    port = free_port()
    spool = tmp_path / "spool"
    config = write_config(tmp_path, "udp = false")
    text = config.read_text().replace("outputs = []\n", "")
    text = text.replace('listen = "127.0.0.1:0"\nudp', f'listen = "127.0.0.1:{port}"\nudp')
    text += f'\n[[outputs]]\nname = "spool"\nkind = "spool"\ndirectory = "{spool}"\n'
    config.write_text(text)
    registry_setup(config, ["stations", "add", "S1"])
    command = [sys.executable, "-c", _SERVE, "--config", str(config), "serve", "--json-logs"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    logs = LogLines(server.stderr)
    disk_limit.append(server.pid)
    try:
        await wait_for_port(port)
        panel = Panel(await trio.open_tcp_stream("127.0.0.1", port))
        await panel.send(1)
        assert await panel.reply() is Reply.ACK
        with trio.fail_after(_PATIENCE):
            while len(spooled(spool)) < 1:
                await trio.sleep(0.02)

        # The automation's folder goes away: signal 2 is committed and ACKed, but waits.
        spool.rename(tmp_path / "spool.away")
        spool.write_text("not a folder")
        await panel.send(2)
        assert await panel.reply() is Reply.ACK
        await logs.wait_for("delivery_failed")

        # The disk fills: nothing can be committed, the cursor cannot be saved.
        fill_disk(server.pid)
        await panel.send(3)
        await logs.wait_for("journal_failed")
        assert await panel.no_reply_yet(), "a frame that was not committed must not be ACKed"
        await logs.wait_for("store_error", component="dispatcher")
        assert server.poll() is None, "the receiver must stay up while the disk is full"

        # Room again, and the folder is back: the retry and new frames are ACKed, all spooled.
        free_disk(server.pid)
        spool.unlink()
        (tmp_path / "spool.away").rename(spool)
        await panel.send(3)
        assert await panel.reply() is Reply.ACK
        await panel.send(4)
        assert await panel.reply() is Reply.ACK
        with trio.fail_after(_PATIENCE):
            while len(spooled(spool)) < 4:
                await trio.sleep(0.02)
        await logs.wait_for("store_recovered", component="dispatcher")
        assert server.poll() is None
        await panel.stream.aclose()
    finally:
        server.terminate()
        await trio.to_thread.run_sync(server.wait, _PATIENCE)
    [stopped] = logs.named("stopped")
    assert stopped["store_errors"] >= 2


async def until(condition: Callable[[], bool]) -> None:
    """Let the autojump clock run until ``condition`` holds, bounded in real time: while the
    journal commits in a worker thread trio looks idle, so virtual time is no bound here."""
    give_up = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < give_up, "condition not reached"
        await trio.sleep(0.5)


def tiny_signal() -> Signal:
    now = datetime.now(UTC)
    return Signal(id=new_signal_id(now), received_at=now, source=Source.RECEIVER, account="1")


async def fill_store(journal: Journal) -> None:
    """Cap the store at its current size (SQLite's ``max_page_count`` on the journal's
    connection), then append small signals until SQLite says ``database or disk is full``."""
    conn = journal.store._conn  # type: ignore[attr-defined]  # the SQLite store's own
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    for _ in range(5000):
        try:
            await journal.append([tiny_signal()])
        except JournalError as exc:
            error = str(exc)
            break
    else:
        raise AssertionError("the store never filled")
    assert "database or disk is full" in error


def free_store(journal: Journal) -> None:
    conn = journal.store._conn  # type: ignore[attr-defined]
    assert conn is not None
    conn.execute("PRAGMA max_page_count = 1073741823")


async def test_supervisor_keeps_a_trouble_due_while_the_store_is_full(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A missed deadline on a full disk: the trouble cannot be stored, the supervisor says so
    (``store_error``, counted) and keeps trying; once there is room it is stored, once."""
    counters = Counters()
    journal = Journal(SqliteStore(tmp_path / "j.sqlite3"), counters=counters)
    supervisor = Supervisor(journal, counters=counters)
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        await fill_store(journal)
        with capture_logs() as logs:
            supervisor.watch("account:7", 90.0, {"account": "1234", "account_id": 7})
            await nursery.start(supervisor.run)
            await until(lambda: sum(e["event"] == "store_error" for e in logs) >= 4)
            failed = [e for e in logs if e["event"] == "store_error"]
            assert {e["component"] for e in failed} == {"supervisor"}
            assert all(e["retry_in"] <= 5.0 for e in failed), "retried with a bounded backoff"
            free_store(journal)
            await until(lambda: any(e["event"] == "store_recovered" for e in logs))
        assert [e["component"] for e in logs if e["event"] == "store_recovered"] == ["supervisor"]
        nursery.cancel_scope.cancel()
    conn = sqlite3.connect(tmp_path / "j.sqlite3")
    troubles = conn.execute("SELECT qualifier, code FROM signals WHERE account = '1234'")
    assert troubles.fetchall() == [("E", "356")]
    assert counters.values["store_errors"] >= len(failed)
