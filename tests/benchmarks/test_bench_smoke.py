"""Smoke tests for the benchmark suite: modules import and their plans parse. No timings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from benchmarks import baseline, floor, idle, plot, run, sink_latency
from protocols import dc09


def test_run_dry_run_lists_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.run --dry-run`` prints every step without running any."""
    assert run.main(["--dry-run"]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [
        "codec",
        "e2e",
        "baseline",
        "baseline_default",
        "floor",
        "idle",
        "sink",
        "spool",
        "nodes",
        "plot",
    ]


def test_quick_plan_is_smaller_and_only_filters(capsys: pytest.CaptureFixture[str]) -> None:
    """``--quick --only idle,sink`` keeps those two steps with their small counts."""
    assert run.main(["--quick", "--only", "idle,sink", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "idle: --connections 1000 --hold 1",
        "sink: --rate 1000 --duration 2",
    ]


def test_unknown_step_is_a_usage_error() -> None:
    """An unknown step name exits with argparse's usage error (2)."""
    with pytest.raises(SystemExit) as exc:
        run.main(["--only", "nope", "--dry-run"])
    assert exc.value.code == 2


def test_step_dry_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """Each benchmark's own --dry-run describes its plan and exits 0."""
    assert baseline.main(["--dry-run", "--connections", "10"]) == 0
    assert idle.main(["--dry-run", "--connections", "50"]) == 0
    assert sink_latency.main(["--dry-run", "--rate", "10", "--duration", "1"]) == 0
    out = capsys.readouterr().out
    assert "pysiaalarm==3.2.2" in out
    assert "idle: 50 connections" in out
    assert "sink latency: 10 frames/s for 1 s" in out


def test_baseline_server_script_registers_blast_accounts() -> None:
    """The pysiaalarm server script registers accounts from the dc09blast base, in hex."""
    assert baseline.ACCOUNT_BASE == "100000"
    assert 'SIAAccount(f"{base + i:X}"' in baseline.SERVER
    assert callable(plot.plot)


def test_floor_servers_answer_what_the_receiver_would() -> None:
    """The floor servers' per-frame work gives the receiver's ACK, for frames split anywhere,
    and no ACK for a frame with a bad CRC: they are measured doing a receiver's least work."""
    now = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    good = dc09.encode_frame("SIA-DCS", 42, "1234", "#1234|NBA012", line="1", timestamp=now)
    bad = bytearray(good)
    bad[3] ^= 0x01  # a CRC digit
    splitter = dc09.FrameSplitter()
    stream = good + bytes(bad) + good
    replies = floor._answer(splitter, stream[:17]) + floor._answer(splitter, stream[17:])
    expected = dc09.ack(dc09.read_header(good), key=None, now=now)
    assert replies == expected * 2
