"""A receiver killed with SIGKILL mid-load has lost no signal it ACKed (on SQLite and on
PostgreSQL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from protocols import dc09
from protocols.errors import Reply
from tests.conftest import Backend


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_for_port(
    port: int,
    timeout: float = 180.0,
    *,
    server: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Until something accepts on ``port``; with ``server``, one that exited fails at once,
    with its ``log``. The bound is generous: a loaded 2-core machine has taken 14 s to start
    a receiver with two workers; the wait ends as soon as the port answers."""
    with trio.fail_after(timeout):
        while True:
            if server is not None and server.poll() is not None:
                output = log.read_text(encoding="utf-8", errors="replace") if log else ""
                pytest.fail(f"receiver exited {server.returncode}:\n{output}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            return


async def wait_for_port_closed(port: int, timeout: float = 120.0) -> None:
    """Until nothing accepts on ``port``. A killed coordinator's workers die with it
    (PR_SET_PDEATHSIG), but a moment after it has been reaped: until then they still accept
    on the port, and a restart would find it taken or mistake them for itself."""
    with trio.fail_after(timeout):
        while True:
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                return
            await stream.aclose()
            await trio.sleep(0.05)


async def panel(port: int, account: str, acked: list[tuple[str, str]], count: int) -> None:
    """Send frames one at a time, recording each one the receiver ACKed."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        for seq in range(1, count + 1):
            frame = dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/BA{seq % 999:03d}")
            await stream.send_all(frame)
            buffer = b""
            while b"\r" not in buffer:
                data = await stream.receive_some(4096)
                if not data:
                    return
                buffer += data
            reply = dc09.decode_reply(buffer[: buffer.index(b"\r") + 1])
            if reply.kind is Reply.ACK:
                acked.append((account, reply.sequence))
    except (OSError, trio.BrokenResourceError):
        return


@pytest.mark.slow
async def test_sigkill_mid_load_loses_no_acked_signal(tmp_path: Path, backend: Backend) -> None:
    """Every frame the panels saw ACKed is in the journal after a SIGKILL and a restart."""
    port = free_port()
    config = tmp_path / "receiver.toml"
    config.write_text(
        f"log_signals = false\noutputs = []\n{backend.store_toml()}"
        f'[dc09]\nlisten = "127.0.0.1:{port}"\nudp = false\n[bridge]\nlisten = "127.0.0.1:0"\n',
        encoding="utf-8",
    )
    command = [sys.executable, "-m", "receiver.cli", "--config", str(config), "serve"]
    first_log, restart_log = tmp_path / "first.log", tmp_path / "restarted.log"
    with first_log.open("wb") as output:
        server = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    acked: list[tuple[str, str]] = []
    try:
        await wait_for_port(port, server=server, log=first_log)
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(panel, port, f"{7000 + i}", acked, 5000)
            with trio.fail_after(180):
                while len(acked) < 400:
                    await trio.sleep(0.01)
            os.kill(server.pid, signal.SIGKILL)
            server.wait(10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)
    assert server.returncode == -signal.SIGKILL
    assert len(acked) >= 400
    await wait_for_port_closed(port)

    # Restart on the same store: it must open (SQLite: WAL recovery) and still hold every
    # ACKed frame.
    with restart_log.open("wb") as output:
        restarted = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        await wait_for_port(port, server=restarted, log=restart_log)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(restarted.wait, 120) == 0
    stored = set(backend.sql("SELECT account, sequence FROM signals"))
    missing = [pair for pair in acked if pair not in stored]
    assert missing == [], f"{len(missing)} ACKed signals lost, e.g. {missing[:5]}"
