"""Smoke tests for the benchmark suite: modules import and their plans parse. No timings."""

from __future__ import annotations

import socket
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from benchmarks import baseline, bridges, drain, floor, harness, idle, plot, run, sink_latency
from protocols import dc09


def test_run_dry_run_lists_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    """``python -m benchmarks.run --dry-run`` prints every step without running any."""
    assert run.main(["--dry-run"]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == [
        "codec",
        "e2e",
        "sweep",
        "baseline",
        "drain",
        "bridges",
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


def test_drain_and_udp_aes_dry_runs(capsys: pytest.CaptureFixture[str]) -> None:
    """The drain step and the UDP/AES comparison describe their plans and exit 0."""
    assert drain.main(["--dry-run", "--seconds", "5"]) == 0
    assert baseline.main(["--dry-run", "--connections", "100", "--transports", "udp,aes"]) == 0
    out = capsys.readouterr().out
    assert "drain: 1 run(s) of 5 s at 100 connections, each then the spool backlog" in out
    assert "udp,aes at connections [100]" in out
    assert bridges.main(["--dry-run", "--connections", "10"]) == 0
    assert "bridges: [10] bridges x 100 events" in capsys.readouterr().out


def test_drain_is_judged_on_the_median_run_and_a_run_never_drained_is_the_slowest() -> None:
    def run(drained: float | None) -> dict[str, object]:
        return {"drained_s": drained}

    assert drain.median_drain([run(29.4), run(1.1), run(36.8)])["drained_s"] == 29.4
    assert drain.median_drain([run(None), run(1.1), run(2.0)])["drained_s"] == 2.0
    assert drain.median_drain([run(None), run(None), run(2.0)])["drained_s"] is None
    assert drain.median_drain([run(3.0)])["drained_s"] == 3.0


def test_drain_refuses_zero_runs() -> None:
    with pytest.raises(SystemExit):
        drain.main(["--dry-run", "--runs", "0"])


def test_unknown_transport_is_a_usage_error() -> None:
    """``--transports sctp`` exits with argparse's usage error (2)."""
    with pytest.raises(SystemExit) as exc:
        baseline.main(["--dry-run", "--transports", "sctp"])
    assert exc.value.code == 2


def test_aes_setup_keys_every_line_the_runs_use() -> None:
    """The AES run registers each dc09blast account, keyed, on line 0 (the warm-up) and on
    each run's line, each run's line with its own prefix so the numbers do not collide; its
    CSV is gone once the setup is done."""
    with baseline.aes_setup(2, 2) as commands:
        assert commands[0] == ["stations", "add", baseline.STATION]
        assert commands[1][:4] == ["stations", "add-line", baseline.STATION, "1"]
        assert commands[2][:4] == ["stations", "add-line", baseline.STATION, "2"]
        csv = Path(commands[-1][-1])
        rows = csv.read_text(encoding="utf-8").splitlines()
    assert not csv.exists()
    assert not csv.parent.exists()
    assert rows[0] == "line,number,key,key_format"
    assert f"2,100001,{baseline.AES_KEY},ascii" in rows
    assert len(rows) == 1 + 2 * 3


def test_bridges_setup_imports_every_bridge_and_leaves_no_csv() -> None:
    """The bridges run imports one CSV row per bridge; the CSV is gone once the setup is done."""
    with bridges.setup(3) as commands:
        assert commands[-1][:2] == ["bridges", "import"]
        csv = Path(commands[-1][-1])
        rows = csv.read_text(encoding="utf-8").splitlines()
    assert not csv.exists()
    assert not csv.parent.exists()
    assert rows == [
        "site,serial,token,channels",
        *(f"bench-site,{bridges.serial(i)},{bridges.TOKEN},4" for i in range(3)),
    ]


def test_pysiaalarm_udp_server_gets_its_transport() -> None:
    """pysiaalarm 3.2.2 on Python 3.11 leaves its UDP transport unset (and so answers no
    datagram); the baseline server script hands it over, so its UDP run can finish."""
    assert "server.transport = client.transport" in baseline.SERVER


def test_a_generator_run_nobody_answers_is_bounded() -> None:
    """A run against a UDP port that never replies ends (ACK timeout) with nothing ACKed."""
    blast = harness.build_blast()
    if blast is None:
        pytest.skip("no C compiler")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        result = harness.run_blast(
            blast,
            port,
            connections=1,
            messages=1,
            udp=True,
            core=None,
            ack_timeout=0.2,
            timeout=30,
        )
    assert result["acked"] == 0
    assert result["frames"] == 1


def test_baseline_server_script_has_a_folder_of_its_own_removed_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two baseline servers at once each write their script to their own temporary folder
    (not one fixed /tmp file they would share), and ``stop`` removes it. The "python" here is
    a stand-in that says ready, as the real script does, and waits to be stopped."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho ready\nexec sleep 60\n", encoding="utf-8")
    python.chmod(0o755)
    first = baseline.BaselineServer(python, 1, core=None)
    second = baseline.BaselineServer(python, 1, core=None)
    try:
        scripts = [s.folder / "pysiaalarm_baseline_server.py" for s in (first, second)]
        assert scripts[0] != scripts[1]
        assert all(s.read_text(encoding="utf-8") == baseline.SERVER for s in scripts)
        assert not (tmp_path / "pysiaalarm_baseline_server.py").exists()
    finally:
        first.stop()
        second.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["python"]


def test_baseline_server_that_fails_to_start_leaves_no_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server that exits before it is ready (here: no pysiaalarm to import) is an error,
    and its script's folder is gone."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\nexit 1\n", encoding="utf-8")
    python.chmod(0o755)
    with pytest.raises(RuntimeError, match="pysiaalarm server did not start"):
        baseline.BaselineServer(python, 1, core=None)
    assert list((tmp_path / "tmp").iterdir()) == []
