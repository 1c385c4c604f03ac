"""Issue 12's benchmark: our receiver on its embedded default beside pysiaalarm 3.2.2, the goals.

Run: ``python -m benchmarks.e2e [--runs 3] [--messages 200]
[--cases tcp:10,tcp:100,tcp:1000,udp:100,aes:100] [--time-cap 1800] [--dry-run]``

Each case runs ours and then pysiaalarm under the same C load generator (dc09blast), both
servers and the generator free to use both cores:

- ours: ``receiver serve`` on its embedded default, which is what ``make serve`` runs: the
  signal log on, the spool output, one ingest worker per core, the console. It gets a throwaway
  folder and free ports.
- pysiaalarm 3.2.2: in its own venv under ``benchmarks/build/``, installed on first use.

The cases: TCP at 10, 100 and 1,000 connections (one frame in flight per connection), UDP with
100 frames in flight, and AES-128 over 100 TCP connections. For each case and server there is a
warm-up, then ``--runs`` runs. The benchmark prints the medians of events/s and ACK
p50/p90/p99/max, the CPU seconds over the runs, the peak RSS (ours: every receiver process
added up) and ours / pysiaalarm. It then prints each of the issue's goals: met, or missed and
by how much.

- Honest: a run that times out counts as nothing ACKed (0 events/s). A percentile that falls
  among frames never ACKed lies beyond the ACK timeout; it is shown as None, and a goal on it is
  missed.
- Bounded: ``--messages`` frames per connection, fewer above 100 connections (40,000 frames a
  run at most). Each run is killed after ``baseline.RUN_TIMEOUT`` seconds, and each reply is
  waited for ``baseline.ACK_TIMEOUT`` seconds. The whole benchmark stops at ``--time-cap``
  seconds (default 1,800; a full run takes 4 minutes on the quiet machine, about 17 under
  other load, up to 2 hours if every run timed out): no run starts after it and none outlasts
  it, the case it falls in and every later one are not measured, and their goals say "not
  measured: time cap". Loopback only.
- Reuses ``benchmarks.baseline``: the pysiaalarm venv, its server and the runner. The lean
  sweep of our receiver alone across connection counts is ``python -m benchmarks.sweep``.
- Not like for like, and said so: ours commits every signal (SQLite WAL, synchronous=FULL)
  before its ACK; pysiaalarm keeps nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from attrs import frozen

from benchmarks import baseline
from benchmarks.harness import ROOT, write_results


@frozen
class Case:
    """One load: a transport (tcp, udp, aes) at a number of connections (UDP: frames in flight)."""

    transport: str
    connections: int

    def messages(self, per_connection: int) -> int:
        """Frames per connection: fewer above 100 connections, to bound each run."""
        if self.connections <= 100:
            return per_connection
        return max(20, min(per_connection, 40_000 // self.connections))

    @property
    def name(self) -> str:
        return f"{self.transport}:{self.connections}"


CASES = (Case("tcp", 10), Case("tcp", 100), Case("tcp", 1000), Case("udp", 100), Case("aes", 100))
TIME_CAP = 1800.0  # seconds the whole benchmark may take (then a server's stop, at most 40 s)


@frozen
class Verdict:
    """A goal against one case's row: met, what was measured, and each way it fell short."""

    goal: str
    met: bool
    measured: str
    shortfalls: tuple[str, ...]

    @property
    def result(self) -> str:
        return "met" if self.met else "missed: " + "; ".join(self.shortfalls)


@frozen
class Goal:
    """One of issue 12's figures, for one case."""

    case: Case
    min_events_per_s: float | None = None
    min_ratio: float | None = None  # ours / pysiaalarm's events/s in the same run
    max_p99_ms: float | None = None
    every_frame_acked: bool = False

    @property
    def text(self) -> str:
        parts = []
        if self.min_events_per_s is not None:
            parts.append(f">= {self.min_events_per_s:,.0f} events/s")
        if self.min_ratio is not None:
            parts.append(
                "at least pysiaalarm's rate"
                if self.min_ratio == 1
                else f">= {self.min_ratio:g}x pysiaalarm"
            )
        if self.max_p99_ms is not None:
            parts.append(f"p99 <= {self.max_p99_ms:g} ms")
        if self.every_frame_acked:
            parts.append("every frame ACKed")
        return f"{self.case.transport} at {self.case.connections}: " + ", ".join(parts)

    def judge(self, row: dict[str, Any] | None, why: str = "case not run or skipped") -> Verdict:
        """This goal against ``row`` (one row of ``baseline.compare``; None: not measured, for
        the reason ``why``)."""
        if row is None:
            return Verdict(self.text, False, "not measured", (why,))
        ours, theirs = row["ours"], row["pysiaalarm"]
        eps, theirs_eps = ours["events_per_s"], theirs["events_per_s"]
        p99, acked, frames = ours["p99_ms"], ours["acked"], ours["frames"]
        ratio = row["throughput_ratio"]
        measured = (
            f"{eps:,.0f} events/s, p99 {_ms(p99)}, {acked:,}/{frames:,} ACKed; pysiaalarm "
            f"{theirs_eps:,.0f} events/s, ours / pysiaalarm {ratio if ratio is not None else '-'}"
        )
        short: list[str] = []
        if "note" in ours:
            short.append(f"ours: {ours['note']}")
        if self.min_events_per_s is not None and eps < self.min_events_per_s:
            short.append(
                f"{eps:,.0f} events/s is {eps / self.min_events_per_s:.0%} of "
                f"{self.min_events_per_s:,.0f}"
            )
        if self.min_ratio is not None:
            if theirs_eps <= 0:
                short.append("pysiaalarm ACKed nothing: no comparison")
            elif eps < self.min_ratio * theirs_eps:
                short.append(f"{eps / theirs_eps:.2f}x pysiaalarm, goal {self.min_ratio:g}x")
        if self.max_p99_ms is not None:
            if p99 is None:
                short.append("p99 lies among frames never ACKed (beyond the ACK timeout)")
            elif p99 > self.max_p99_ms:
                short.append(
                    f"p99 {p99:g} ms, goal {self.max_p99_ms:g} ms "
                    f"({p99 / self.max_p99_ms:.1f}x over)"
                )
        if self.every_frame_acked and acked < frames:
            short.append(f"{frames - acked:,} of {frames:,} frames not ACKed")
        return Verdict(self.text, not short, measured, tuple(short))


GOALS = (
    Goal(Case("tcp", 10), min_ratio=1),
    Goal(Case("tcp", 100), min_events_per_s=20_000, min_ratio=4, max_p99_ms=10),
    Goal(Case("tcp", 1000), min_events_per_s=15_000, max_p99_ms=100, every_frame_acked=True),
    Goal(Case("udp", 100), min_events_per_s=15_000),
    Goal(Case("aes", 100), min_events_per_s=10_000),
)


def _ms(value: float | None) -> str:
    return "beyond the ACK timeout" if value is None else f"{value:g} ms"


def parse_cases(text: str) -> list[Case]:
    """``tcp:10,udp:100`` as cases; ValueError names what is wrong."""
    cases = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        transport, _, count = item.partition(":")
        if transport not in baseline.TRANSPORTS:
            raise ValueError(f"{item}: transport not one of {', '.join(baseline.TRANSPORTS)}")
        if not count.isdigit() or int(count) < 1:
            raise ValueError(f"{item}: connections must be a positive number")
        cases.append(Case(transport, int(count)))
    if not cases:
        raise ValueError("no case given")
    return cases


def verdicts(
    rows: Sequence[dict[str, Any]],
    goals: Sequence[Goal] = GOALS,
    failed: Mapping[Case, str] | None = None,
) -> list[Verdict]:
    """Every goal against the row measured for its case. A case not run, skipped, or in
    ``failed`` (case -> what went wrong) is not measured, and its goal missed."""
    by_case = {Case(r["transport"], r["connections"]): r for r in rows}
    found = []
    for goal in goals:
        why = (failed or {}).get(goal.case, "case not run or skipped")
        found.append(goal.judge(by_case.get(goal.case), why))
    return found


def goals_table(found: Sequence[Verdict]) -> str:
    lines = ["| goal | measured (ours, medians) | result |", "|---|---|---|"]
    lines += [f"| {v.goal} | {v.measured} | {v.result} |" for v in found]
    met = sum(v.met for v in found)
    lines.append(f"\n{met} of {len(found)} goals met.")
    return "\n".join(lines)


def _git(*args: str) -> str:
    """``git -C <repository> ARGS...``'s output, stripped (bounded in time)."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def _commit() -> str:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+changes" if dirty else "")


def context_lines(context: dict[str, Any]) -> str:
    return (
        f"Measured {context['started']} to {context['ended']} on commit {context['commit']}, "
        f"{context['cores']} cores; load average (1 min) {context['load_before']:.2f} before, "
        f"{context['load_after']:.2f} after (work besides the benchmark shows here). "
        f"{context['runs']} runs per server and case, medians; both servers and the generator "
        "free to use every core; ours on its embedded default (signal log, spool output, a "
        "worker per core, console). CPU s: user + system over the measured runs (ours: the "
        "coordinator and its workers). Peak RSS: ours, every receiver process added up."
        + (f" {context['note']}" if context.get("note") else "")
    )


def report(rows: Sequence[dict[str, Any]], found: Sequence[Verdict], context: str) -> str:
    """The results file: context, the side-by-side table (``baseline.table``), the goals."""
    return "\n\n".join(
        [
            "# Issue 12 benchmark: `python -m benchmarks.e2e`",
            context,
            baseline.table(list(rows)),
            goals_table(found),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs per server and case")
    parser.add_argument(
        "--messages", type=int, default=200, help="frames per connection (fewer above 100)"
    )
    parser.add_argument(
        "--cases",
        default=",".join(c.name for c in CASES),
        help="comma-separated transport:connections, transports tcp, udp, aes",
    )
    parser.add_argument(
        "--time-cap",
        type=float,
        default=TIME_CAP,
        help="seconds the whole benchmark may take; cases not done by then are not measured",
    )
    parser.add_argument("--note", default="", help="a sentence for the results file")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    try:
        cases = parse_cases(args.cases)
    except ValueError as exc:
        parser.error(f"--cases: {exc}")
    if args.runs < 1 or args.messages < 1:
        parser.error("--runs and --messages must be at least 1")
    if not args.time_cap >= 0:
        parser.error("--time-cap must be 0 or more seconds")
    plan = ", ".join(f"{c.name} x {c.messages(args.messages)}" for c in cases)
    if args.dry_run:
        print(
            f"e2e: ours (embedded default) and {baseline.PYSIAALARM}, {args.runs} runs each; "
            f"cases (transport:connections x frames per connection): {plan}; "
            f"time cap {args.time_cap:g} s"
        )
        return 0
    print(f"e2e: {plan}; {args.runs} runs per server; time cap {args.time_cap:g} s", flush=True)
    started, load_before = datetime.now(UTC), os.getloadavg()[0]
    clock = time.monotonic()
    deadline = clock + args.time_cap
    capped = f"not measured: time cap of {args.time_cap:g} s reached"
    rows: list[dict[str, Any]] = []
    failed: dict[Case, str] = {}
    cap_reached = False
    for case in cases:
        if cap_reached or time.monotonic() >= deadline:
            cap_reached, failed[case] = True, capped
            print(f"e2e {case.name} {capped}", flush=True)
            continue
        try:
            measured = baseline.compare(
                [case.connections],
                case.messages(args.messages),
                args.runs,
                embedded_default=True,
                transport=case.transport,
                deadline=deadline,
            )
        except baseline.TimeCapReachedError:
            measured, failed[case], cap_reached = [], capped, True
            print(f"e2e {case.name} {capped} during this case", flush=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            # A server that would not start: this case is not measured; the others still are.
            measured, failed[case] = [], f"failed: {exc}"
            print(f"e2e {case.name} failed: {exc}", flush=True)
        rows += measured
        if not measured and case not in failed:
            failed[case] = "skipped: dc09blast (AES: libssl-dev) or pysiaalarm unavailable"
    context = {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "ended": datetime.now(UTC).strftime("%H:%M UTC"),
        "seconds": round(time.monotonic() - clock),
        "commit": _commit(),
        "cores": os.cpu_count(),
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "runs": args.runs,
        "time_cap_s": args.time_cap,
        "note": args.note,
    }
    found = verdicts(rows, [g for g in GOALS if g.case in cases], failed)
    text = report(rows, found, context_lines(context))
    print(goals_table(found), flush=True)
    if rows:
        payload = {
            "results": rows,
            "goals": [
                {"goal": v.goal, "met": v.met, "measured": v.measured, "shortfalls": v.shortfalls}
                for v in found
            ],
            "context": context,
        }
        write_results("e2e", payload, text)
    # Exit 1 when a case could not be measured at all (no pysiaalarm, no AES generator).
    return 0 if len(rows) == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
