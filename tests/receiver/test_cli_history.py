"""`receiver history` as a user types it: codes as the table shows them, ages, and --follow.

Signals reach a real receiver over loopback and land in its store (a SQLite file, and a
PostgreSQL database: ``backend``); the CLI reads it (in-process through its entry point, and as
the installed script for ``--follow``). The registry is empty: account 1234 is stored as an
unknown account, which history shows like any other.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from protocols import dc09
from protocols.contact_id import format_adm_cid
from protocols.signal import ContactIdView
from tests.conftest import Backend
from tests.receiver.conftest import RunningReceiver, start_receiver, write_config
from tests.receiver.test_dc09_service import connect, read_replies, sia

SCRIPT = Path(sys.executable).with_name("receiver")


@pytest.fixture
async def receiver(tmp_path: Path, backend: Backend) -> AsyncIterator[RunningReceiver]:
    """A receiver on the test's store (SQLite, then PostgreSQL), with nobody registered."""
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, write_config(tmp_path, store=backend.store_toml()))
        yield running
        running.service.request_shutdown()


def cid(seq: int, qualifier: str, code: str, zone: str = "002") -> bytes:
    data = format_adm_cid("1234", ContactIdView(qualifier, code, "01", zone))
    return dc09.encode_frame("ADM-CID", seq, "1234", data)


async def store(receiver: RunningReceiver, *frames: bytes) -> None:
    """Send frames over loopback and wait for every ACK (each ACK follows its commit)."""
    stream = await connect(receiver)
    await stream.send_all(b"".join(frames))
    replies = await read_replies(stream, len(frames))
    assert all(dc09.decode_reply(r).kind.name == "ACK" for r in replies)
    await stream.aclose()


def history(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, Any, str]:
    capsys.readouterr()
    code = receiver.cli("history", "--format", "json", *args)
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


async def test_code_in_the_form_the_table_shows(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--code E110` finds the fire alarm the table shows as E110, R110 its restore, 110 both,
    a SIA code the SIA signals (whose Contact ID view the table shows too)."""
    await store(receiver, cid(1, "E", "110"), cid(2, "R", "110"), cid(3, "E", "131"), sia(4))
    code, rows, _ = history(receiver, capsys)
    assert code == 0
    # Each signal shows both views: the catalog maps Contact ID and SIA codes.
    assert sorted((r["event"], r["sia"]) for r in rows) == [
        ("E110", "FA"),
        ("E130", "BA"),
        ("E131", "BA"),
        ("R110", "FH"),
    ]

    def events(code: str) -> list[str]:
        done, found, err = history(receiver, capsys, "--code", code)
        assert (done, err) == (0, "")
        return sorted(r["event"] for r in found)

    assert events("E110") == ["E110"]
    assert events("e110") == ["E110"]
    assert events("R110") == ["R110"]
    assert events("110") == ["E110", "R110"]
    assert events("P110") == []
    assert events("BA") == ["E130", "E131"]
    assert events("FH") == ["R110"]


async def test_since_and_until_take_an_age(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--since 1h` (and 30m, 2d, 90s) means that long before now; `--until 1h` excludes what
    just arrived; ISO times still work; a word that is neither is one line, exit 2."""
    await store(receiver, sia(1), sia(2, code="FA"))
    for age in ("1h", "30m", "2d", "90s", "1w", "2000-01-01", "2000-01-01T00:00:00Z"):
        code, rows, err = history(receiver, capsys, "--since", age)
        assert (code, err, len(rows)) == (0, "", 2), age
    code, rows, _ = history(receiver, capsys, "--until", "1h")
    assert (code, rows) == (0, [])
    code, rows, _ = history(receiver, capsys, "--until", "2999-01-01")
    assert (code, len(rows)) == (0, 2)
    code, _, err = history(receiver, capsys, "--since", "yesterday")
    assert code == 2
    assert err.count("\n") == 1
    assert "yesterday" in err
    assert "1h" in err


@pytest.mark.slow
async def test_follow_prints_signals_as_they_are_stored(receiver: RunningReceiver) -> None:
    """`receiver history --follow` (the installed script) prints what is already there, then
    each new signal as it is committed, one JSON object per line; Ctrl-C ends it with 0."""
    await store(receiver, sia(1, code="BA"))
    command = [str(SCRIPT), "--config", str(receiver.config_path), "history", "--follow"]
    process = await trio.lowlevel.open_process(
        [*command, "--format", "json", "--code", "FA"], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    buffer = b""

    async def next_line() -> dict[str, Any]:
        nonlocal buffer
        with trio.fail_after(30):  # a bound, not a timing: the line comes within one poll
            while b"\n" not in buffer:
                data = await process.stdout.receive_some(65536)  # type: ignore[union-attr]
                assert data, "history --follow ended early"
                buffer += data
        line, _, buffer = buffer.partition(b"\n")
        parsed: dict[str, Any] = json.loads(line)
        return parsed

    try:
        await store(receiver, sia(2, code="FA", zone="007"))
        first = await next_line()
        assert (first["sia"], first["zone"]) == ("FA", "007")
        await store(receiver, sia(3, code="BA"), sia(4, code="FA", zone="009"))
        second = await next_line()
        assert (second["sia"], second["zone"]) == ("FA", "009")
        process.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            assert await process.wait() == 0
        assert buffer == b""  # the BA signals were filtered out, nothing else was printed
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
