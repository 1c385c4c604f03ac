"""Journal retention: `receiver journal prune` and the running receiver's hourly task remove
the oldest signals, never one an output still waits for, and the hash chain still verifies."""

from __future__ import annotations

import json
import socket
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from receiver.cli import main as receiver_cli
from receiver.config import ConfigError, parse_config
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver, write_config
from tests.receiver.test_journal_chain import send_sia


def cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()  # what came before (registry setup, the service's logs) is not ours
    code = receiver_cli(["--config", str(config), *args])
    return code, capsys.readouterr().out


def seqs(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        return [row[0] for row in conn.execute("SELECT seq FROM signals ORDER BY seq")]
    finally:
        conn.close()


def received_at(db: Path, seq: int) -> str:
    conn = sqlite3.connect(db)
    try:
        micros = conn.execute("SELECT received_us FROM signals WHERE seq = ?", (seq,)).fetchone()
    finally:
        conn.close()
    return datetime.fromtimestamp(micros[0] / 1e6, UTC).isoformat()


def setup(config_path: Path) -> None:
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
    )


async def journaled(config_path: Path, *sequences: int) -> RunningReceiver:
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        await send_sia(running, *sequences)
        running.service.request_shutdown()
    return running


async def test_dry_run_shows_what_prune_then_removes_and_the_chain_still_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run lists the oldest three and removes nothing; prune removes exactly them;
    history shows the rest and verify checks the remaining chain from its anchor."""
    config = write_config(tmp_path)
    setup(config)
    running = await journaled(config, 1, 2, 3, 4, 5)
    before = received_at(running.db, 4)

    code, out = cli(config, capsys, "journal", "prune", "--before", before, "--dry-run")
    assert code == 0
    assert out.startswith("would remove 3 signals received before ")
    assert "seq 1..3" in out
    assert seqs(running.db) == [1, 2, 3, 4, 5]

    code, out = cli(config, capsys, "journal", "prune", "--before", before)
    assert code == 0
    assert out.startswith("removed 3 signals")
    assert seqs(running.db) == [4, 5]
    code, out = cli(config, capsys, "history", "--limit", "0", "--format", "json")
    assert [row["zone"] for row in json.loads(out)] == ["005", "004"]
    code, out = cli(config, capsys, "journal", "verify")
    assert code == 0, out
    assert "verified 2 journal rows (seq 4..5)" in out


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_prune_never_removes_what_an_output_has_not_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With automation down, every signal waits for it: prune removes none and names it."""
    extra = (
        f'\n[[outputs]]\nname = "automation"\nkind = "sentinel"\n'
        f'address = "127.0.0.1:{dead_port()}"\npasskey = "k"\n'
    )
    config = write_config(tmp_path, extra)
    config.write_text(config.read_text().replace("outputs = []\n", ""))
    setup(config)
    running = await journaled(config, 1, 2, 3)

    code, out = cli(config, capsys, "journal", "prune", "--before", "2100-01-01")
    assert code == 0
    assert out.splitlines() == [
        "removed 0 signals received before 2100-01-01T00:00:00+00:00",
        "held back: output automation has not delivered the signals after its cursor yet",
    ]
    assert seqs(running.db) == [1, 2, 3]


async def test_the_running_receiver_removes_signals_older_than_keep_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two signals aged past keep_days = 1 are gone soon after start; the rest stay and
    the chain verifies from the anchor the removal left."""
    config = write_config(tmp_path, "[journal]\nkeep_days = 1\n")
    setup(config)
    running = await journaled(config, 1, 2, 3, 4)
    conn = sqlite3.connect(running.db)
    with conn:
        conn.execute("UPDATE signals SET received_us = received_us - 172800000000 WHERE seq <= 2")
    conn.close()

    async with trio.open_nursery() as nursery:
        again = await start_receiver(nursery, config)
        with trio.fail_after(10):
            while seqs(running.db) != [3, 4]:
                await trio.sleep(0.05)
        again.service.request_shutdown()
    code, out = cli(config, capsys, "journal", "verify")
    assert code == 0, out
    assert "verified 2 journal rows (seq 3..4)" in out


def test_keep_days_is_checked_like_every_setting() -> None:
    """keep_days = 0 would empty the journal: refused with one line naming the key."""
    with pytest.raises(ConfigError) as refused:
        parse_config("[journal]\nkeep_days = 0\n")
    assert refused.value.errors == ("[journal] keep_days: must be 1 to 36500, got 0",)
    assert parse_config("").journal.keep_days == 400
