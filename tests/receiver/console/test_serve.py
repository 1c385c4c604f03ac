"""How the console starts with the service: on its own port, or not at all, never taking the
receiver down with it."""

from __future__ import annotations

import socket
from pathlib import Path

import structlog.testing
import trio

from tests.receiver.conftest import start_receiver, write_config
from tests.receiver.console.conftest import send_sia


async def test_a_console_port_in_use_leaves_the_receiver_running(tmp_path: Path) -> None:
    """The console cannot bind (the port is taken): one error line, no console, and the
    receiver still ACKs and stores alarms."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, f'[console]\nlisten = "127.0.0.1:{port}"\n')
        with structlog.testing.capture_logs() as logs:
            async with trio.open_nursery() as nursery:
                running = await start_receiver(nursery, config)
                assert running.ports.console is None
                await send_sia(running, "BA", "001", account="9999")
                running.service.request_shutdown()
    assert [e["event"] for e in logs if e["event"] == "console_unavailable"] == [
        "console_unavailable"
    ]
    assert any(e["event"] == "signals" for e in logs)


async def test_listen_empty_turns_the_console_off(tmp_path: Path) -> None:
    """`[console] listen = ""`: no console port."""
    config = write_config(tmp_path)  # the test config turns it off
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        assert running.ports.console is None
        running.service.request_shutdown()
