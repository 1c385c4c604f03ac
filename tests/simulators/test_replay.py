"""Scenario replay and journal replay against a real receiver on loopback."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from protocols.errors import InvalidInputError
from simulators.cli import main as sim_main
from simulators.panel import LoadPlan, PanelOptions, run_load
from simulators.replay import Scenario, recorded_frames, replay_journal, run_scenario
from tests.receiver.conftest import RunningReceiver, start_receiver, write_config

SCENARIOS = Path(__file__).resolve().parents[2] / "simulators" / "scenarios"

TINY = """
name = "tiny"
description = "a storm, some traffic, polls and malformed frames"
max_duration = 100
max_frames = 200

[[phase]]
name = "traffic"
kind = "traffic"
at = 0
duration = 10
panels = 3
first_account = "7000"
rate = 1
protocol = "cid"
connections = 2

[[phase]]
name = "AC loss"
kind = "storm"
at = 20
duration = 10
panels = 5
first_account = "8000"
sia = "AT"
connections = 3

[[phase]]
name = "polls"
kind = "silence"
at = 0
duration = 30
panels = 4
first_account = "9000"
interval = 10
silent_panels = 2
silent_at = 10

[[phase]]
name = "garbage"
kind = "malformed"
at = 40
count = 5
rate = 1
account = "9000"
"""


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[RunningReceiver]:
    """A receiver with an empty registry: unknown accounts are accepted and flagged."""
    config_path = write_config(tmp_path)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        yield running
        running.service.request_shutdown()


def rows(db: Path, where: str = "1") -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        sql = f"SELECT * FROM signals WHERE source = 'dc09' AND {where} ORDER BY seq"
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_tiny_scenario_fills_the_journal(receiver: RunningReceiver) -> None:
    """At speed 200 the tiny scenario runs in a fraction of a second; the journal holds its
    10 CID events and 5 AC-loss signals, and every malformed frame's NULL chaser was ACKed."""
    scenario = Scenario.from_toml(TINY)
    target = ("127.0.0.1", receiver.ports.dc09)
    reports = await run_scenario(scenario, target, PanelOptions(), speed=200.0)
    by_name = {r.name: r.outcome for r in reports}
    assert by_name["traffic"]["acked"] == 10
    assert by_name["AC loss"]["acked"] == 5
    # 4 panels poll at 10 s intervals for 30 s; two stop at +10 s.
    assert by_name["polls"]["sent"] == by_name["polls"]["acked"] == 2 * 3 + 2 * 1
    assert by_name["garbage"] == {"malformed_sent": 5, "polls_acked": 5, "polls": 5}
    # The bad-length frame has a good CRC: accepted, stored and flagged (lenient receiving).
    stored = rows(receiver.db)
    assert len(stored) == 16
    assert [r["sia_code"] for r in rows(receiver.db, "flags LIKE '%length_mismatch%'")] == ["RP"]
    storm = rows(receiver.db, "account LIKE '800%'")
    assert {r["sia_code"] for r in storm} == {"AT"}
    assert {r["account"] for r in storm} == {"8000", "8001", "8002", "8003", "8004"}
    assert {r["token"] for r in rows(receiver.db, "account LIKE '700%'")} == {"ADM-CID"}


def test_dry_run_prints_the_timeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--dry-run`` lists the phases in start order with times divided by --speed."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY, encoding="utf-8")
    assert sim_main(["replay", str(path), "--dry-run", "--speed", "10"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "scenario tiny: 4 phases, 33 frames, at most 10 s at speed 10"
    phases = [line.split()[5] for line in out[2:]]
    assert phases == ["traffic", "silence", "storm", "malformed"]
    assert "2.0 s ..      3.0 s  storm" in out[4]


def test_shipped_scenarios_load_and_are_bounded(capsys: pytest.CaptureFixture[str]) -> None:
    """Every scenario in simulators/scenarios loads, fits its bounds and dry-runs (exit 0)."""
    files = sorted(SCENARIOS.glob("*.toml"))
    assert len(files) >= 3
    for path in files:
        scenario = Scenario.load(path)
        assert scenario.frames <= scenario.max_frames
        assert all(p.end <= scenario.max_duration for p in scenario.phases)
        assert sim_main(["replay", str(path), "--dry-run"]) == 0
    assert "AC loss" in capsys.readouterr().out


def test_unbounded_or_unknown_scenarios_are_refused(tmp_path: Path) -> None:
    """A scenario without max_frames, exceeding it, or with an unknown key is bad input."""
    with pytest.raises(InvalidInputError, match="max_frames is required"):
        Scenario.from_toml(TINY.replace("max_frames = 200", ""))
    with pytest.raises(InvalidInputError, match="more than max_frames 20"):
        Scenario.from_toml(TINY.replace("max_frames = 200", "max_frames = 20"))
    with pytest.raises(InvalidInputError, match="ends after max_duration"):
        Scenario.from_toml(TINY.replace("max_duration = 100", "max_duration = 30"))
    with pytest.raises(InvalidInputError, match="unknown keys colour"):
        Scenario.from_toml(TINY.replace('kind = "storm"', 'kind = "storm"\ncolour = "red"'))
    path = tmp_path / "bad.toml"
    path.write_text("max_frames = [", encoding="utf-8")
    assert sim_main(["replay", str(path), "--dry-run"]) == 2


async def test_from_journal_resends_recorded_signals(
    receiver: RunningReceiver, tmp_path: Path
) -> None:
    """Signals recorded in one receiver's journal are re-sent to another with fresh
    sequences: the second journal holds the same accounts, tokens and events in order."""
    source = ("127.0.0.1", receiver.ports.dc09)
    plan = LoadPlan(accounts=["6000", "6001"], count=12, connections=2)
    assert (await run_load(source, plan, PanelOptions())).ok
    frames, skipped = recorded_frames(receiver.db, accounts=["6001"])
    assert skipped == 0
    assert len(frames) == 6

    other = tmp_path / "other"
    other.mkdir()
    async with trio.open_nursery() as nursery:
        second = await start_receiver(nursery, write_config(other))
        summary = await replay_journal(
            frames, ("127.0.0.1", second.ports.dc09), PanelOptions(sequence_start=1), speed=0
        )
        second.service.request_shutdown()
    assert summary.ok
    assert summary.acked == 6
    original = rows(receiver.db, "account = '6001'")
    replayed = rows(second.db)
    assert [(r["token"], r["code"], r["sia_code"]) for r in replayed] == [
        (r["token"], r["code"], r["sia_code"]) for r in original
    ]
    assert [r["sequence"] for r in replayed] == ["0001", "0002", "0003", "0004", "0005", "0006"]
