"""Automation failure is an event: an output down past ``[delivery] trouble_after`` becomes a
receiver trouble in the journal, delivered by the other outputs; its restore follows once the
output delivers again; a failover to the alternate address is journaled too."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from receiver.dispatcher import output_status
from tests.adapters.test_sentinel_client import closed_port
from tests.receiver.conftest import RunningReceiver, start_receiver, write_config
from tests.receiver.test_dispatcher import RecordingSink, send_alarms


def two_outputs(tmp_path: Path, port: int, *, alternate: int | None = None) -> Path:
    """Sentinel ``automation`` (output 1) on ``port``, and a spool (output 2)."""
    path = write_config(tmp_path, "[delivery]\ntrouble_after = 1.0\n")
    extra = f'alternate = "127.0.0.1:{alternate}"\n' if alternate else ""
    path.write_text(
        path.read_text().replace("outputs = []\n", "")
        + f'\n[[outputs]]\nname = "automation"\nkind = "sentinel"\n'
        f'address = "127.0.0.1:{port}"\ntimeout = 1.0\n{extra}'
        f'\n[[outputs]]\nname = "spool"\nkind = "spool"\ndirectory = "{tmp_path / "spool"}"\n'
    )
    return path


async def eventually(check: Callable[[], Any], within: float = 20.0) -> Any:
    """The first true answer of ``check``, polled until ``within`` seconds have passed."""
    with trio.fail_after(within):
        while not (answer := check()):
            await trio.sleep(0.05)
    return answer


def receiver_troubles(db: Path) -> list[tuple[Any, ...]]:
    """(id, qualifier, code, zone, device, received_us) of every receiver signal, in order."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT id, qualifier, code, zone, device, received_us FROM signals "
            "WHERE source = 'receiver' ORDER BY seq"
        ).fetchall()
    finally:
        conn.close()
    return [tuple(row) for row in rows]


def first_received_us(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT min(received_us) FROM signals").fetchone()[0])
    finally:
        conn.close()


def status(running: RunningReceiver) -> dict[str, object]:
    store = running.service.open_store()
    try:
        [row] = output_status(store, ["automation"])
    finally:
        store.close()
    return row


def trouble_is_open(running: RunningReceiver) -> bool:
    return status(running)["trouble"] is True


async def test_output_down_is_a_trouble_delivered_elsewhere_then_restored(tmp_path: Path) -> None:
    port = closed_port()
    config = two_outputs(tmp_path, port)
    sink = RecordingSink(tmp_path / "sink")
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1001"], 1)
        [trouble] = await eventually(lambda: receiver_troubles(running.db))
        assert trouble[1:5] == ("E", "354", "001", "automation")
        # Journaled once the alarm had waited trouble_after (1 s), not before.
        assert trouble[5] - first_received_us(running.db) >= 1_000_000
        assert status(running)["trouble"] is True
        await eventually((tmp_path / "spool" / f"{trouble[0]}.xml").exists)
        await nursery.start(sink.serve, "127.0.0.1", port)
        await eventually(lambda: len(receiver_troubles(running.db)) == 2)
        troubles = receiver_troubles(running.db)
        assert [t[1:5] for t in troubles] == [
            ("E", "354", "001", "automation"),
            ("R", "354", "001", "automation"),
        ]
        # The automation gets its own trouble once back, and the restore after it.
        await eventually(lambda: sink.order[-2:] == [t[0] for t in troubles])
        await eventually(lambda: status(running)["trouble"] is False)
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()


async def test_a_trouble_open_before_a_restart_is_not_opened_again(tmp_path: Path) -> None:
    config = two_outputs(tmp_path, closed_port())
    for _ in range(2):
        async with trio.open_nursery() as nursery:
            running = await start_receiver(nursery, config)
            await send_alarms(running.ports.dc09, ["1001"], 1)
            await eventually(functools.partial(trouble_is_open, running))
            await trio.sleep(1.5)  # past trouble_after again: no second trouble
            running.service.request_shutdown()
    assert [t[1:5] for t in receiver_troubles(running.db)] == [("E", "354", "001", "automation")]


async def test_failover_to_the_alternate_is_journaled(tmp_path: Path) -> None:
    alternate = closed_port()
    config = two_outputs(tmp_path, closed_port(), alternate=alternate)
    sink = RecordingSink(tmp_path / "sink")
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.serve, "127.0.0.1", alternate)
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1001"], 1)
        [failover] = await eventually(lambda: receiver_troubles(running.db))
        assert failover[1:5] == ("E", "350", "001", "automation")
        assert status(running)["failover"] is True
        await eventually(lambda: failover[0] in sink.order)  # delivered through the alternate
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()
