"""Signal → automation latency at a fixed rate: DC-09 in, Sentinel XML package filed at a sink.

Run: ``python -m benchmarks.sink_latency [--rate 1000] [--duration 10]``

A receiver subprocess (pinned to core 0) has one Sentinel output pointing at
``receiver-sim sink sentinel`` (a subprocess, core 1; the panels run on core 1 too, never
beside the receiver), which files each package as
``<package-id>.xml``. The panel simulator sends ``rate`` frames/s for ``duration`` s. For each
package, latency = the file's modification time (when the sink wrote it) minus the package's
ReceiverTime (the journal's received_at, stamped before the commit). So it covers the durable
commit, the dispatcher, the XML build, the TCP exchange and the sink's file write. Goal: p99
<= 50 ms at 1,000/s.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import trio

from benchmarks.harness import ReceiverProcess, pinned, write_results
from simulators.panel import LoadPlan, PanelOptions, account_numbers, run_load

GOAL_RATE = 1000
GOAL_P99_MS = 50.0
RECEIVER_TIME = re.compile(rb"<ReceiverTime>([^<]+)</ReceiverTime>")


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(1, math.ceil(fraction * len(ordered))) - 1], 3)


def start_sink(out: Path, core: int | None) -> tuple[subprocess.Popen[str], int]:
    command = [
        sys.executable,
        "-m",
        "simulators.cli",
        "sink",
        "sentinel",
        "--listen",
        "127.0.0.1:0",
        "--out",
        str(out),
        "--duration",
        "900",  # bounded even if the benchmark dies
    ]
    sink = subprocess.Popen(
        pinned(command, core), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert sink.stdout is not None
    line = sink.stdout.readline().strip()
    if not line.startswith("listening on "):
        sink.kill()
        raise RuntimeError(f"sink did not start: {line!r}")
    return sink, int(line.rsplit(":", 1)[1])


def latencies_ms(out: Path) -> list[float]:
    values = []
    for path in out.glob("*.xml"):
        found = RECEIVER_TIME.search(path.read_bytes())
        if found is None:
            continue
        received = datetime.fromisoformat(found.group(1).decode()).timestamp()
        values.append((path.stat().st_mtime_ns / 1e9 - received) * 1000.0)
    return values


def measure(rate: float, duration: float, connections: int = 20) -> dict[str, Any]:
    # The sink stands in for the automation platform: its files go to memory (tmpfs) where
    # there is one, so its disk's writeback stalls are not what this measures.
    shm = Path("/dev/shm")
    out = Path(tempfile.mkdtemp(prefix="sink-bench-", dir=shm if shm.is_dir() else None))
    sink, port = start_sink(out, core=1)
    outputs = (
        f'[[outputs]]\nname = "automation"\nkind = "sentinel"\naddress = "127.0.0.1:{port}"\n'
        "timeout = 5.0\n"
    )
    server = ReceiverProcess(outputs=outputs)
    try:
        count = max(1, round(rate * duration))
        plan = LoadPlan(
            accounts=account_numbers("100000", 100),
            count=count,
            connections=connections,
            rate=rate,
            protocol="mixed",
        )
        # The panels (this process) run beside the sink on core 1, never on the receiver's.
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        if affinity is not None and {0, 1} <= affinity:
            os.sched_setaffinity(0, {1})
        try:
            summary = trio.run(
                lambda: run_load(("127.0.0.1", server.port), plan, PanelOptions(timeout=5.0))
            )
        finally:
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
        deadline = time.monotonic() + 60  # bounded wait for the backlog to drain
        while time.monotonic() < deadline and len(os.listdir(out)) < summary.acked_events:
            time.sleep(0.2)
        values = latencies_ms(out)
    finally:
        server.stop()
        sink.terminate()
        sink.wait(10)
        shutil.rmtree(out, ignore_errors=True)
    return {
        "rate": rate,
        "duration_s": duration,
        "sent": summary.sent,
        "acked": summary.acked,
        "offered_rate": round(summary.events_per_s, 1),
        "packages": len(values),
        "ack_p99_ms": summary.latency_ms(0.99),
        "sink_p50_ms": percentile(values, 0.5),
        "sink_p90_ms": percentile(values, 0.9),
        "sink_p99_ms": percentile(values, 0.99),
        "sink_max_ms": percentile(values, 1.0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=GOAL_RATE, help="frames per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if args.rate <= 0 or not 0 < args.duration <= 600:
        parser.error("--rate must be > 0 and --duration 0..600 s")
    if args.dry_run:
        print(f"sink latency: {args.rate:g} frames/s for {args.duration:g} s")
        return 0
    row = measure(args.rate, args.duration)
    verdict = (
        f"goal: sink latency p99 <= {GOAL_P99_MS} ms at {GOAL_RATE}/s; measured p99 "
        f"{row['sink_p99_ms']} ms at {row['offered_rate']}/s ({row['packages']}/{row['acked']} "
        "packages filed)"
    )
    print(
        f"sink latency p50 {row['sink_p50_ms']} ms, p90 {row['sink_p90_ms']} ms, "
        f"p99 {row['sink_p99_ms']} ms, max {row['sink_max_ms']} ms",
        flush=True,
    )
    print(verdict, flush=True)
    table = (
        "| rate/s offered | achieved | packages | p50 ms | p90 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|---|\n"
        f"| {row['rate']:g} | {row['offered_rate']} | {row['packages']}/{row['acked']} "
        f"| {row['sink_p50_ms']} | {row['sink_p90_ms']} | {row['sink_p99_ms']} "
        f"| {row['sink_max_ms']} |\n\n{verdict}"
    )
    write_results("sink_latency", {"results": [row]}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
