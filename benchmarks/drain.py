"""The default output keeping pace: after a run at full rate, how long its backlog takes to drain.

Run: ``python -m benchmarks.drain [--runs 3] [--seconds 60] [--connections 100]``

The receiver runs on its embedded default (signal log on, the spool output, a worker per core,
both cores free for it and for the generator). dc09blast drives it at full rate (closed loop,
``--connections`` frames in flight) for ``--seconds``, as consecutive bounded runs of fresh
signals. Then the spool output's backlog (its cursor against the journal's last seq, as
``receiver outputs`` shows it) is read every ``--poll`` seconds until it is zero or
``--drain-timeout`` passed. Goal (issue 12): drained within 10 s of a 60 s run, judged on the
median of ``--runs`` (a run that never drained counts as the slowest). The runs share this process,
so their folders are removed together when it ends (``benchmarks.harness``): no run measures the
cleanup of the one before.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
import time
from typing import Any

from benchmarks.harness import (
    ReceiverProcess,
    build_blast,
    median_run,
    run_blast,
    write_results,
)
from receiver import cli

GOAL_SECONDS = 60
GOAL_DRAIN_S = 10.0
OUTPUT = "spool"  # the embedded default's output


def backlog(server: ReceiverProcess) -> int | None:
    """The spool output's backlog as ``receiver outputs --format json`` reports it.

    The CLI's own entry point, called in this process: a subprocess per reading would cost a
    Python start-up (seconds on a loaded machine) on the cores the receiver drains with."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["--config", str(server.config), "outputs", "--format", "json"])
        rows = json.loads(out.getvalue()) if code == 0 else []
    except (ValueError, OSError):
        return None
    for row in rows:
        if row.get("name") == OUTPUT:
            return int(row["backlog"])
    return None


def measure(
    seconds: float, connections: int, messages: int, drain_timeout: float, poll: float
) -> dict[str, Any]:
    blast = build_blast()
    if blast is None:
        raise RuntimeError("dc09blast unavailable (no benchmarks/dc09blast.c or no C compiler)")
    server = ReceiverProcess(embedded_default=True)
    try:
        backlog(server)  # loads the CLI's modules now, not in the first timed reading
        runs: list[dict[str, Any]] = []
        started = time.monotonic()
        cpu_before = server.cpu()
        # Consecutive bounded runs (each one frame in flight per connection) until the time is
        # up; each has its own line, so every frame is a fresh signal and not a retry.
        while time.monotonic() - started < seconds and len(runs) < 4096:
            runs.append(
                run_blast(
                    blast,
                    server.port,
                    connections=connections,
                    messages=messages,
                    core=None,
                    line=f"L{len(runs) + 1:X}",
                    ack_timeout=2.0,
                    timeout=120.0,
                )
            )
        load_s = time.monotonic() - started
        load_end = time.monotonic()
        cpu_load = server.cpu() - cpu_before
        memory = server.memory()
        at_end = backlog(server)
        left = at_end
        drained_s: float | None = 0.0 if at_end == 0 else None
        samples = [(0.0, at_end)]
        while drained_s is None and time.monotonic() - load_end < drain_timeout:
            time.sleep(poll)
            left = backlog(server)
            since = round(time.monotonic() - load_end, 2)
            samples.append((since, left))
            if left == 0:
                drained_s = since
    finally:
        server.stop()
    acked = sum(r["acked"] for r in runs)
    figures = median_run(runs)
    return {
        "load_s": round(load_s, 1),
        "connections": connections,
        "runs": len(runs),
        "frames": sum(r["frames"] for r in runs),
        "acked": acked,
        "events_per_s": round(acked / load_s, 1) if load_s else 0.0,
        "p99_ms_median_run": figures["p99_ms"],
        "cpu_s": round(cpu_load, 2),
        "peak_rss_kib": memory["peak_rss_kib"],
        "backlog_at_end": at_end,
        "backlog_left": left,
        "drained_s": drained_s,
        "drain_timeout_s": drain_timeout,
        "samples": samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=GOAL_SECONDS, help="load time")
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--messages", type=int, default=200, help="frames per connection per run")
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between backlog reads")
    parser.add_argument("--runs", type=int, default=1, help="judged on the median run")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.dry_run:
        print(
            f"drain: {args.runs} run(s) of {args.seconds:g} s at {args.connections} connections, "
            f"each then the {OUTPUT} backlog read every {args.poll:g} s for at most "
            f"{args.drain_timeout:g} s"
        )
        return 0
    rows: list[dict[str, Any]] = []
    for _ in range(args.runs):
        rows.append(
            measure(args.seconds, args.connections, args.messages, args.drain_timeout, args.poll)
        )
        print(f"run {len(rows)}: {_drained(rows[-1])}", flush=True)
    row = median_drain(rows)
    verdict = (
        f"goal: after {GOAL_SECONDS} s at full rate the {OUTPUT} backlog drains within "
        f"{GOAL_DRAIN_S:g} s; median of {len(rows)} run(s), after {row['load_s']} s at "
        f"{row['events_per_s']:.0f} events/s: backlog {row['backlog_at_end']} at the end of the "
        f"load, {_drained(row)}"
    )
    print(verdict, flush=True)
    lines = "".join(
        f"| {r['load_s']} | {r['connections']} | {r['acked']}/{r['frames']} "
        f"| {r['events_per_s']:.0f} | {r['cpu_s']} | {r['peak_rss_kib'] // 1024} "
        f"| {r['backlog_at_end']} | {r['drained_s'] if r['drained_s'] is not None else '-'} |\n"
        for r in rows
    )
    table = (
        "| load s | connections | acked/frames | events/s | CPU s | peak RSS MiB "
        "| backlog at end | drained after s |\n|---|---|---|---|---|---|---|---|\n"
        f"{lines}\n{verdict}"
    )
    write_results("drain", {"results": rows, "median_run": row}, table)
    return 0 if row["drained_s"] is not None else 1


def _drained(row: dict[str, Any]) -> str:
    if row["drained_s"] is not None:
        return f"drained {row['drained_s']} s after the load"
    return f"NOT drained after {row['drain_timeout_s']:g} s ({row['backlog_left']} left)"


def median_drain(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The run whose drain time is the median (upper median of an even count); a run that
    never drained counts as slower than any that did."""
    ranked = sorted(rows, key=lambda r: math.inf if r["drained_s"] is None else r["drained_s"])
    return ranked[len(ranked) // 2]


if __name__ == "__main__":
    sys.exit(main())
