"""Issue 12's benchmark (``python -m benchmarks.e2e``): its plan, medians, table and goals.

No timings: the rows below are written by hand, shaped like ``baseline.compare``'s.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import baseline, e2e, harness, run
from tests.conftest import unavailable, under_ci


def blast_run(
    eps: float, p99: float | None, *, acked: int = 100, frames: int = 100
) -> dict[str, Any]:
    """A dc09blast JSON result: its percentiles are over the ACKed frames only."""
    latency = {"p50": 1.0, "p90": 2.0, "p99": p99, "max": 5.0}
    return {"events_per_s": eps, "latency_ms": latency, "acked": acked, "frames": frames}


def side(
    eps: float, p99: float | None, *, acked: int = 60_000, frames: int = 60_000
) -> dict[str, Any]:
    return {
        "events_per_s": eps,
        "p50_ms": 1.0,
        "p90_ms": 2.0,
        "p99_ms": p99,
        "max_ms": 9.0,
        "acked": acked,
        "frames": frames,
        "cpu_s": 1.5,
        "peak_rss_kib": 250 * 1024,
    }


def row(
    transport: str,
    conns: int,
    ours: dict[str, Any],
    theirs: dict[str, Any],
) -> dict[str, Any]:
    ratio = ours["events_per_s"] / theirs["events_per_s"] if theirs["events_per_s"] else None
    return {
        "transport": transport,
        "connections": conns,
        "ours": ours,
        "pysiaalarm": theirs,
        "throughput_ratio": round(ratio, 2) if ratio is not None else None,
    }


def goal(transport: str, conns: int) -> e2e.Goal:
    return next(g for g in e2e.GOALS if g.case == e2e.Case(transport, conns))


def test_the_default_plan_is_the_issues(capsys: pytest.CaptureFixture[str]) -> None:
    """By default: 10, 100 and 1,000 TCP connections (40 frames each at 1,000), UDP at 100 in
    flight, AES-128 at 100 connections, 3 runs, against pysiaalarm 3.2.2."""
    assert e2e.main(["--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "e2e: ours (embedded default) and pysiaalarm==3.2.2, 3 runs each; cases "
        "(transport:connections x frames per connection): tcp:10 x 200, tcp:100 x 200, "
        "tcp:1000 x 40, udp:100 x 200, aes:100 x 200; time cap 1800 s"
    ]


@pytest.mark.parametrize(
    ("cases", "message"),
    [
        ("sctp:10", "transport not one of tcp, udp, aes"),
        ("tcp:ten", "connections must be a positive number"),
        ("tcp:0", "connections must be a positive number"),
        (",", "no case given"),
    ],
)
def test_a_bad_case_is_a_usage_error(
    cases: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        e2e.main(["--dry-run", "--cases", cases])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_every_goal_met() -> None:
    """Rows that reach every figure: every goal met, nothing short."""
    rows = [
        row("tcp", 10, side(5_000, 3.0), side(4_800, 2.0)),
        row("tcp", 100, side(21_000, 9.5), side(5_000, 20.0)),
        row("tcp", 1000, side(15_500, 99.0, frames=120_000, acked=120_000), side(4_000, 300.0)),
        row("udp", 100, side(15_000, 30.0), side(3_000, 40.0)),
        row("aes", 100, side(10_000, 30.0), side(1_500, 70.0)),
    ]
    found = e2e.verdicts(rows)
    assert [v.result for v in found] == ["met"] * 5
    assert "5 of 5 goals met." in e2e.goals_table(found)


def test_the_issues_figures_of_session_3_are_missed_and_by_how_much() -> None:
    """Each shortfall is named with its size: share of the rate goal, the ratio, p99 over."""
    at100 = row("tcp", 100, side(2_435, 85.0), side(3_255, 28.0))
    verdict = goal("tcp", 100).judge(at100)
    assert not verdict.met
    assert verdict.shortfalls == (
        "2,435 events/s is 12% of 20,000",
        "0.75x pysiaalarm, goal 4x",
        "p99 85 ms, goal 10 ms (8.5x over)",
    )
    assert verdict.result.startswith("missed: 2,435 events/s is 12% of 20,000; 0.75x")
    at10 = goal("tcp", 10).judge(row("tcp", 10, side(1_396, 15.0), side(3_060, 3.0)))
    assert at10.shortfalls == ("0.46x pysiaalarm, goal 1x",)
    assert goal("tcp", 10).text == "tcp at 10: at least pysiaalarm's rate"


def test_at_1000_every_frame_must_be_acked() -> None:
    """Fast enough and p99 in bounds still misses when a frame went unanswered."""
    ours = side(16_000, 90.0, acked=119_999, frames=120_000)
    verdict = goal("tcp", 1000).judge(row("tcp", 1000, ours, side(3_500, 400.0)))
    assert verdict.shortfalls == ("1 of 120,000 frames not ACKed",)


def test_a_p99_beyond_the_ack_timeout_misses_the_goal() -> None:
    """A p99 that lies among frames never ACKed (None) is no figure that meets a bound."""
    verdict = goal("tcp", 100).judge(row("tcp", 100, side(25_000, None), side(5_000, 20.0)))
    assert verdict.shortfalls == ("p99 lies among frames never ACKed (beyond the ACK timeout)",)
    assert "p99 beyond the ACK timeout" in verdict.measured


def test_no_comparison_when_pysiaalarm_acked_nothing() -> None:
    theirs = side(0.0, None, acked=0) | {"note": "no ACK in the warm-up: not measured"}
    verdict = goal("tcp", 10).judge(row("tcp", 10, side(3_000, 5.0), theirs))
    assert verdict.shortfalls == ("pysiaalarm ACKed nothing: no comparison",)


def test_a_case_not_measured_misses_its_goal() -> None:
    """A skipped case (no AES generator, no pysiaalarm) is not measured, never met."""
    found = e2e.verdicts([row("tcp", 10, side(5_000, 3.0), side(4_800, 2.0))])
    assert [v.met for v in found] == [True, False, False, False, False]
    assert found[-1].result == "missed: case not run or skipped"
    assert found[-1].measured == "not measured"
    why = {e2e.Case("aes", 100): "skipped: no AES generator"}
    rows = [row("tcp", 10, side(5_000, 3.0), side(4_800, 2.0))]
    assert e2e.verdicts(rows, failed=why)[-1].result == "missed: skipped: no AES generator"


def test_a_timed_out_run_counts_as_nothing_acked() -> None:
    """The median over three runs, one killed at the run timeout: it adds its frames, none
    ACKed, 0 events/s to the median, and its latency counts as the worst."""
    runs = [blast_run(1_000, 8.0), harness.timed_out_run(100), blast_run(3_000, 4.0)]
    figures = harness.median_run(runs)
    assert figures["events_per_s"] == 1_000
    assert figures["events_per_s_min"] == 0
    assert (figures["acked"], figures["frames"], figures["timed_out_runs"]) == (200, 300, 1)
    assert figures["p99_ms"] == 8.0  # the middle of 4.0, 8.0 and the timed-out run
    two_down = [harness.timed_out_run(100), harness.timed_out_run(100), blast_run(3_000, 4.0)]
    assert harness.median_run(two_down)["p99_ms"] is None


def test_a_percentile_among_unanswered_frames_is_not_a_figure() -> None:
    """dc09blast's p99 is over the ACKed frames only: with 2 of 100 frames never ACKed, the
    p99 of all frames lies beyond the ACK timeout; p90 and p50 still stand. Max needs all."""
    latency = harness.honest_latency(blast_run(1_000, 4.0, acked=98))
    assert latency == {"p50": 1.0, "p90": 2.0, "p99": None, "max": None}
    assert harness.honest_latency(blast_run(1_000, 4.0, acked=99))["p99"] == 4.0
    nothing = harness.honest_latency(blast_run(0.0, float("nan"), acked=0))
    assert nothing == dict.fromkeys(("p50", "p90", "p99", "max"))


def test_even_runs_take_the_mean_of_the_middle_two() -> None:
    assert harness.median_latency([1.0, 3.0, 5.0, 7.0]) == 4.0
    assert harness.median_latency([1.0, 3.0, None, None]) is None
    assert harness.median_latency([]) is None


def test_the_report_has_both_servers_the_ratio_and_the_goals() -> None:
    rows = [row("tcp", 100, side(2_435, 85.0), side(3_255, 28.0))]
    found = e2e.verdicts(rows, [goal("tcp", 100)])
    text = e2e.report(rows, found, "Measured on a shared machine.")
    lines = text.splitlines()
    assert lines[0] == "# Issue 12 benchmark: `python -m benchmarks.e2e`"
    assert "Measured on a shared machine." in lines
    assert (
        "| tcp | 100 | ours | 2435 | 1.0 | 2.0 | 85.0 | 9.0 | 60000/60000 | 1.5 | 250 | 0.75 |"
        in lines
    )
    assert any(line.startswith("| tcp | 100 | pysiaalarm | 3255 |") for line in lines)
    assert any(
        line.startswith("| tcp at 100: >= 20,000 events/s, >= 4x pysiaalarm, p99 <= 10 ms | ")
        and line.endswith(
            "| missed: 2,435 events/s is 12% of 20,000; 0.75x pysiaalarm, goal 4x; "
            "p99 85 ms, goal 10 ms (8.5x over) |"
        )
        for line in lines
    )
    assert "0 of 1 goals met." in lines


def test_make_bench_summary_carries_the_goals(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make bench``'s summary shows each e2e goal as the e2e step judged it."""
    monkeypatch.setattr(run, "RESULTS", tmp_path)
    verdict = goal("aes", 100).judge(row("aes", 100, side(2_148, 86.0), side(1_507, 78.0)))
    goals = [
        {
            "goal": verdict.goal,
            "met": verdict.met,
            "measured": verdict.measured,
            "shortfalls": list(verdict.shortfalls),
        }
    ]
    (tmp_path / "e2e.json").write_text(json.dumps({"results": [], "goals": goals}))
    text = run.summary(None, {"e2e": "exit 0 in 1 s"})
    assert (
        "| e2e, aes at 100: >= 10,000 events/s | 2,148 events/s, p99 86 ms, 60,000/60,000 ACKed; "
        "pysiaalarm 1,507 events/s, ours / pysiaalarm 1.43. missed: 2,148 events/s is 21% of "
        "10,000 |"
    ) in text.splitlines()


def test_a_time_cap_already_reached_measures_nothing_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--time-cap 0``: no server starts, every goal is judged "not measured: time cap", and
    the command exits 1 (cases not measured)."""
    monkeypatch.setattr(harness, "RESULTS", tmp_path)

    def never(*args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise AssertionError("a case started after the time cap")

    monkeypatch.setattr(baseline, "compare", never)
    assert e2e.main(["--cases", "tcp:10,udp:100", "--time-cap", "0"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "e2e tcp:10 not measured: time cap of 0 s reached" in out
    assert (
        "| tcp at 10: at least pysiaalarm's rate | not measured "
        "| missed: not measured: time cap of 0 s reached |"
    ) in out
    assert (
        "| udp at 100: >= 15,000 events/s | not measured "
        "| missed: not measured: time cap of 0 s reached |"
    ) in out
    assert list(tmp_path.iterdir()) == []


def test_the_time_cap_falling_within_a_case_drops_it_and_every_later_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first case is measured and judged; the cap falls within the second (its partial
    runs are no figure); the third never starts. Each case got the benchmark's deadline."""
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    deadlines: list[float | None] = []

    def compare(connections: list[int], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        deadlines.append(kwargs.get("deadline"))
        if len(deadlines) == 2:
            raise baseline.TimeCapReachedError
        if len(deadlines) > 2:
            raise AssertionError("a case started after the time cap fell")
        return [row("tcp", connections[0], side(5_000, 3.0), side(4_800, 2.0))]

    monkeypatch.setattr(baseline, "compare", compare)
    assert e2e.main(["--cases", "tcp:10,tcp:100,udp:100", "--time-cap", "600"]) == 1
    assert len(deadlines) == 2
    assert all(d is not None for d in deadlines)
    payload = json.loads((tmp_path / "e2e.json").read_text())
    assert [g["shortfalls"] for g in payload["goals"]] == [
        [],
        ["not measured: time cap of 600 s reached"],
        ["not measured: time cap of 600 s reached"],
    ]
    assert payload["context"]["time_cap_s"] == 600
    assert "e2e tcp:100 not measured: time cap of 600 s reached during this case" in (
        capsys.readouterr().out.splitlines()
    )


class SteppedClock:
    """``time`` for ``benchmarks.baseline``: ``monotonic`` reads ``now``, which a test moves."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now


def test_no_run_starts_after_the_deadline_and_none_outlasts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each generator run's timeout is cut to what is left before the deadline; once a run
    ends past it, the comparison stops with TimeCapReachedError and starts no further run."""
    clock = SteppedClock()
    monkeypatch.setattr(baseline, "time", clock)
    timeouts: list[float] = []

    def run_blast(*args: Any, timeout: float, **kwargs: Any) -> dict[str, Any]:
        timeouts.append(timeout)
        clock.now += 30.0
        return blast_run(1_000, 4.0)

    monkeypatch.setattr(baseline, "run_blast", run_blast)
    monkeypatch.setattr(baseline, "process_cpu", lambda server: 0.0)
    server: Any = SimpleNamespace(port=1)  # the runs are faked: only its port is read
    measure = functools.partial(
        baseline._measure,
        server,
        Path("dc09blast"),
        conns=10,
        messages=10,
        runs=3,
        udp=False,
        extra=[],
        core=None,
    )
    with pytest.raises(baseline.TimeCapReachedError):
        measure(deadline=clock.now + 50.0)
    # The warm-up may take 50 s (less than RUN_TIMEOUT), the first run the 20 s left; then
    # the deadline has passed.
    assert timeouts == [50.0, 20.0]
    with pytest.raises(baseline.TimeCapReachedError):
        measure(deadline=clock.now)
    assert len(timeouts) == 2  # nothing started at or after the deadline


@pytest.mark.slow
def test_a_small_real_run_writes_its_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One tiny case for real: ours on the embedded default and pysiaalarm, 10 connections x
    5 frames, one run; the results file has both servers and the goal. Under CI the
    benchmark's own pysiaalarm venv is made as ``python -m benchmarks.e2e`` makes it, and a
    missing compiler or venv fails the test; elsewhere the test skips rather than install."""
    if harness.build_blast() is None:
        unavailable("no C compiler to build the load generator")
    if not (baseline.VENV / "bin" / "python").exists():
        if not under_ci():
            pytest.skip(
                f"no pysiaalarm venv at {baseline.VENV} (python -m benchmarks.e2e makes it)"
            )
        if baseline.pysiaalarm_python() is None:
            pytest.fail(f"could not install {baseline.PYSIAALARM} into {baseline.VENV}")
    monkeypatch.setattr(harness, "RESULTS", tmp_path)
    # Its figures are not quoted: no six-minute wait after another benchmark's cleanup.
    monkeypatch.setattr(harness, "wait_for_recent_cleanup", lambda: 0.0)
    assert e2e.main(["--cases", "tcp:10", "--messages", "5", "--runs", "1"]) == 0
    payload = json.loads((tmp_path / "e2e.json").read_text())
    (measured,) = payload["results"]
    assert measured["ours"]["acked"] == measured["ours"]["frames"] == 50
    assert measured["pysiaalarm"]["frames"] == 50
    assert [g["goal"] for g in payload["goals"]] == ["tcp at 10: at least pysiaalarm's rate"]
    text = (tmp_path / "e2e.md").read_text()
    assert "| tcp | 10 | ours |" in text
    assert "| tcp | 10 | pysiaalarm |" in text
