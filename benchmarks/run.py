"""``make bench``: every benchmark with modest defaults, then one summary against the goals.

Run: ``python -m benchmarks.run [--quick] [--only NAME,...] [--dry-run]``

Steps, in order:

- codec: µs per frame.
- e2e: issue 12's benchmark, ``python -m benchmarks.e2e``. Ours on its embedded default beside
  pysiaalarm 3.2.2 at 10, 100 and 1,000 TCP connections, UDP at 100 in flight and AES-128 at
  100 connections, with each goal met or missed.
- sweep: our receiver alone, lean and pinned, over TCP and UDP at 1, 10, 100 and 1000
  connections.
- baseline: the same lean, pinned load against pysiaalarm (ours / theirs).
- drain: how long the default output's backlog takes to drain after 60 s at full rate.
- bridges: bridge events/s at 10, 100 and 1000 bridges, the batched loop beside a task per
  connection.
- floor: the most a Python server on this machine can ACK (trio and epoll servers that only
  check CRC and header), beside the receiver.
- idle: 10,000 supervised idle connections, RSS per connection.
- sink: signal → Sentinel sink latency at 1,000/s.
- spool: the default output's durable packages/s, one per call against the dispatcher's window.
- nodes: durable events/s and p99 at 100 connections on PostgreSQL with one and two receiver
  nodes, beside SQLite.
- plot: throughput and p99 against connections, from the sweep.

The full run takes a good half hour or more: its e2e step alone took 17 minutes on this 2-core
machine under other load. ``--quick`` is a short smoke run with small counts (its figures are
not worth quoting). A step that fails is reported and the others run. Results:
``benchmarks/results/<step>.json`` and ``.md``, ``summary.md``, ``sweep.png``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import (
    baseline,
    bridges,
    codec,
    drain,
    e2e,
    floor,
    idle,
    nodes,
    plot,
    sink_latency,
    spool,
    sweep,
)
from benchmarks.harness import RESULTS

Step = tuple[str, Callable[[list[str]], int], list[str]]


def steps(quick: bool) -> list[Step]:
    """The plan: (name, main, argv) per step."""
    if quick:
        return [
            ("codec", codec.main, ["--count", "2000", "--runs", "3"]),
            (
                "e2e",
                e2e.main,
                ["--runs", "1", "--messages", "20", "--cases", "tcp:10,tcp:100,udp:100,aes:100"],
            ),
            ("sweep", sweep.main, ["--runs", "1", "--messages", "50", "--connections", "1,10,100"]),
            ("baseline", baseline.main, ["--connections", "10", "--messages", "50", "--runs", "1"]),
            ("drain", drain.main, ["--seconds", "5", "--messages", "20"]),
            ("bridges", bridges.main, ["--connections", "10", "--messages", "20", "--runs", "1"]),
            ("floor", floor.main, ["--runs", "1", "--messages", "50"]),
            ("idle", idle.main, ["--connections", "1000", "--hold", "1"]),
            ("sink", sink_latency.main, ["--rate", "1000", "--duration", "2"]),
            ("spool", spool.main, ["--packages", "128", "--runs", "1"]),
            ("nodes", nodes.main, ["--runs", "1", "--messages", "20"]),
            ("plot", plot.main, []),
        ]
    return [
        ("codec", codec.main, []),
        ("e2e", e2e.main, ["--runs", "3"]),
        ("sweep", sweep.main, ["--runs", "3", "--messages", "200", "--udp"]),
        ("baseline", baseline.main, ["--connections", "10,100", "--runs", "3"]),
        ("drain", drain.main, ["--seconds", "60"]),
        ("bridges", bridges.main, ["--connections", "10,100,1000", "--runs", "3"]),
        ("floor", floor.main, ["--runs", "3"]),
        ("idle", idle.main, ["--connections", "10000", "--hold", "5"]),
        ("sink", sink_latency.main, ["--rate", "1000", "--duration", "10"]),
        ("spool", spool.main, []),
        ("nodes", nodes.main, ["--runs", "3", "--messages", "200"]),
        ("plot", plot.main, []),
    ]


def _read(name: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    return list(json.loads(path.read_text())["results"]) if path.exists() else []


def _read_goals(name: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    return list(json.loads(path.read_text()).get("goals", [])) if path.exists() else []


def summary(codec_line: dict[str, Any] | None, outcomes: dict[str, str]) -> str:
    """The goals against what this run measured (from the results files it wrote)."""
    lines = ["# Benchmark summary", "", "| step | outcome |", "|---|---|"]
    lines += [f"| {name} | {outcome} |" for name, outcome in outcomes.items()]
    lines += ["", "| goal | measured |", "|---|---|"]
    if codec_line:
        lines.append(
            f"| codec µs/frame (plain, AES-128) | {codec_line.get('plain_sia_dcs')} µs, "
            f"{codec_line.get('aes128_sia_dcs')} µs |"
        )
    for goal in _read_goals("e2e"):
        result = "met" if goal["met"] else "missed: " + "; ".join(goal["shortfalls"])
        lines.append(f"| e2e, {goal['goal']} | {goal['measured']}. {result} |")
    for row in _read("drain"):
        lines.append(
            f"| default output's backlog drained <= {drain.GOAL_DRAIN_S:g} s after "
            f"{drain.GOAL_SECONDS} s at full rate | {row['drained_s']} s after {row['load_s']} s "
            f"at {row['events_per_s']:.0f} events/s (backlog {row['backlog_at_end']}) |"
        )
    for row in _read("bridges"):
        lines.append(
            f"| (no goal) bridges at {row['connections']}, {row['loop']} "
            f"| {row['events_per_s']:.0f} events/s, p99 {row['p99_ms']} ms, CPU {row['cpu_s']} s |"
        )
    for row in _read("baseline"):
        lines.append(
            f"| ours / pysiaalarm at {row['connections']} {row['transport']} connections "
            f"| {row['throughput_ratio']} ({row['ours']['events_per_s']:.0f} vs "
            f"{row['pysiaalarm']['events_per_s']:.0f} events/s) |"
        )
    for row in _read("floor"):
        lines.append(
            f"| (no goal) transport floor at {row['connections']} connections: "
            f"{row['variant']} | {row['events_per_s']:.0f} events/s, p99 {row['p99_ms']} ms |"
        )
    for row in _read("idle"):
        lines.append(
            f"| {idle.GOAL_CONNECTIONS} idle connections in <= {idle.GOAL_RSS_MIB} MiB "
            f"| {row['held']} held, {row['rss_after_kib'] // 1024} MiB "
            f"({row.get('workers', '?')} workers) "
            f"({row['rss_per_connection_kib']} KiB each) |"
        )
    for row in _read("sink_latency"):
        lines.append(
            f"| sink latency p99 <= {sink_latency.GOAL_P99_MS} ms at {sink_latency.GOAL_RATE}/s "
            f"| p99 {row['sink_p99_ms']} ms at {row['offered_rate']}/s |"
        )
    for row in _read("nodes"):
        lines.append(
            f"| (no goal) {row['store']}, {row['nodes']} node(s), {row['connections']} "
            f"connections | {row['events_per_s']:.0f} durable events/s, p99 {row['p99_ms']} ms |"
        )
    spool_path = RESULTS / "spool.json"
    if spool_path.exists():
        rows = json.loads(spool_path.read_text())["results"]
        lines.append(
            "| (no goal) spool output, durable packages/s, one per call vs window "
            f"{rows[-1]['window']} | {rows[0]['packages_per_s']:.0f} vs "
            f"{rows[-1]['packages_per_s']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--only", help="comma-separated step names")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    plan = steps(args.quick)
    if args.only:
        wanted = set(args.only.split(","))
        unknown = wanted - {name for name, _, _ in plan}
        if unknown:
            parser.error(f"unknown steps: {', '.join(sorted(unknown))}")
        plan = [s for s in plan if s[0] in wanted]
    if args.dry_run:
        for name, _, step_argv in plan:
            print(f"{name}: {' '.join(step_argv) or '(defaults)'}")
        return 0
    outcomes: dict[str, str] = {}
    codec_line: dict[str, Any] | None = None
    for name, step_main, step_argv in plan:
        print(f"== {name} {' '.join(step_argv)}", flush=True)
        started = time.monotonic()
        captured = io.StringIO()
        try:
            if name == "codec":
                with contextlib.redirect_stdout(captured):
                    code = step_main(step_argv)
                print(captured.getvalue(), end="")
                codec_line = json.loads(captured.getvalue().strip().splitlines()[-1])
            else:
                code = step_main(step_argv)
        except Exception as exc:
            print(f"{name} failed: {exc!r}", flush=True)
            outcomes[name] = f"failed: {exc!r}"
            continue
        outcomes[name] = f"exit {code} in {time.monotonic() - started:.0f} s"
    text = summary(codec_line, outcomes)
    if args.quick:
        text += "\n\n(--quick smoke run: small counts, figures not worth quoting)"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(text + "\n")
    print(text)
    return 0 if all(o.startswith("exit 0") for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
