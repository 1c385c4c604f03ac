"""Scenario replay and journal replay against a real receiver on loopback."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from protocols.errors import InvalidInputError
from simulators.cli import main as sim_main
from simulators.panel import LoadPlan, PanelOptions, run_load
from simulators.replay import Scenario, recorded_frames, replay_journal, run_scenario
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver, write_config

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


KEY_HEX = "000102030405060708090A0B0C0D0E0F"


def with_accounts(config_path: Path) -> Path:
    """Station S1 with plain account 1234 and keyed account 5678."""
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main"],
        ["accounts", "add", "--station", "S1", "5678", "--site", "Main", "--key", KEY_HEX],
    )
    return config_path


async def sim(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await trio.to_thread.run_sync(sim_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_journal_with_encrypted_accounts_needs_the_key_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replaying a journal that holds encrypted frames without --key is one line naming the
    account, exit 2, and no connection is made; --dry-run needs no --target; with --key the
    encrypted frames go encrypted and the plain ones plain, and every one is ACKed."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    async with trio.open_nursery() as nursery:
        first = await start_receiver(nursery, with_accounts(write_config(first_dir)))
        source = ("127.0.0.1", first.ports.dc09)
        plain = LoadPlan(accounts=["1234"], count=3, protocol="cid")
        keyed = LoadPlan(accounts=["5678"], count=2, protocol="sia")
        assert (await run_load(source, plain, PanelOptions())).ok
        assert (await run_load(source, keyed, PanelOptions(key=bytes.fromhex(KEY_HEX)))).ok
        first.service.request_shutdown()
    journal = ["replay", "--from-journal", str(first.db)]

    code, out, err = await sim(capsys, *journal, "--dry-run", "--account", "1234")
    assert (code, out, err) == (0, "3 frames to re-send, 0 could not be rebuilt\n", "")
    code, out, err = await sim(capsys, *journal, "--dry-run")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "5678" in err
    assert "--key" in err

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        code, _, err = await sim(capsys, *journal, "--target", f"127.0.0.1:{port}")
        assert code == 2
        assert err.count("\n") == 1
        assert "5678" in err
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected

    async with trio.open_nursery() as nursery:
        second = await start_receiver(nursery, with_accounts(write_config(second_dir)))
        target = f"127.0.0.1:{second.ports.dc09}"
        code, out, _ = await sim(
            capsys, *journal, "--target", target, "--speed", "0", "--key", KEY_HEX
        )
        second.service.request_shutdown()
    assert code == 0, out
    replayed = rows(second.db)
    assert sorted((r["account"], "encrypted" in r["flags"]) for r in replayed) == [
        ("1234", False),
        ("1234", False),
        ("1234", False),
        ("5678", True),
        ("5678", True),
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('first_account = "7000"\n', ""), "phase 1 (traffic): first_account is required"),
        (("panels = 3\n", 'panels = "many"\n'),
         "phase 1 (traffic): panels must be a whole number, got 'many'"),
        (("rate = 1\n", 'rate = "fast"\n'), "phase 1 (traffic): rate must be a number, got 'fast'"),
        (("max_duration = 100", 'max_duration = "long"'),
         "scenario: max_duration must be a number, got 'long'"),
    ],
)  # fmt: skip
def test_a_scenario_missing_a_key_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[str, str], message: str
) -> None:
    """A missing or mistyped key in a scenario is one line naming the phase and the key, exit
    2; not a Python constructor's complaint."""
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.replace(*change, 1), encoding="utf-8")
    assert sim_main(["replay", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.splitlines() == [f"receiver-sim replay: {message}"]


def test_an_outage_sink_on_a_port_in_use_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The outage phase's sink cannot listen: one line naming the sink and the address, exit
    1, no ExceptionGroup traceback."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        path = tmp_path / "outage.toml"
        path.write_text(
            f"""
max_duration = 10
max_frames = 10
[[phase]]
kind = "outage"
at = 5
duration = 1
listen = "127.0.0.1:{port}"
out = "{tmp_path / "sink"}"
[[phase]]
kind = "storm"
at = 0
duration = 1
panels = 1
first_account = "1234"
""",
            encoding="utf-8",
        )
        code = sim_main(["replay", str(path), "--target", f"127.0.0.1:{port}", "--speed", "10"])
    assert code == 1
    assert capsys.readouterr().err.splitlines() == [
        f"receiver-sim replay: sentinel sink: cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def test_a_malformed_phase_with_nobody_listening_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Malformed frames need a connection: without one, one line naming the address, exit 1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = tmp_path / "malformed.toml"
    path.write_text(
        'max_duration = 10\nmax_frames = 10\n[[phase]]\nkind = "malformed"\nat = 0\ncount = 2\n',
        encoding="utf-8",
    )
    assert sim_main(["replay", str(path), "--target", f"127.0.0.1:{port}", "--speed", "10"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"receiver-sim replay: panel: cannot connect to 127.0.0.1:{port}: Connection refused"
    ]
