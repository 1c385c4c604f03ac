"""Spool output throughput: durable package files per second, one per call vs a window.

Run: ``python -m benchmarks.spool [--packages 1280] [--runs 3] [--window 64]``

The spool is the embedded default output (``make serve`` with no outputs configured). Each
package is XML built (the first of each call validated), written to an unnamed file in the
directory (``O_TMPFILE``), flushed, linked to its name, and the directory fsynced. ``--window``
packages per call is what the dispatcher hands over during a backlog; one package per call is
the baseline in the same run, and the middle row the fallback (a named temporary renamed into
place, as where the filesystem has no ``O_TMPFILE``) at ``--window``. The directory is a fresh
one under ``var/`` (the project's disk, not a tmpfs); CPU is the process's user+sys per package.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from adapters.spool import SpoolOutput
from benchmarks.harness import ROOT, write_results
from protocols.signal import ContactIdView, Signal, Source


def _signal(index: int) -> Signal:
    now = datetime.now(UTC)
    return Signal(
        id=f"bench-{index:06d}",
        received_at=now,
        source=Source.DC09,
        peer="127.0.0.1:1",
        account=f"{1000 + index % 500}",
        effective_account=f"{1000 + index % 500}",
        token="ADM-CID",
        sequence=f"{index % 9999 + 1:04d}",
        device_time=now,
        cid=ContactIdView("E", "130", "01", "001"),
        name="Burglary",
        raw=b"",
    )


async def _rate(directory: Path, packages: int, window: int, unnamed: bool) -> tuple[float, float]:
    """Packages per second and CPU microseconds per package."""
    output = SpoolOutput("spool", directory)
    output.unnamed = unnamed
    items = [(_signal(i), f"p-{i:06d}") for i in range(packages)]
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, packages, window):
        await output.deliver_batch(items[start : start + window])
    cpu_us = (time.process_time() - cpu) / packages * 1e6
    return packages / (time.perf_counter() - started), cpu_us


def _measure(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    # The last row is the one benchmarks/run.py reports: --window packages on the usual path.
    # The rows' runs alternate (A B C A B C ...): a machine whose load changes meanwhile
    # weighs on all of them alike.
    rows = ((1, True), (args.window, False), (args.window, True))
    measured: dict[tuple[int, bool], list[tuple[float, float]]] = {row: [] for row in rows}
    for run in range(args.runs):
        for window, unnamed in rows:
            folder = scratch / f"{window}-{unnamed}-{run}"
            rate = trio.run(_rate, folder, args.packages, window, unnamed)
            measured[window, unnamed].append(rate)
    for window, unnamed in rows:
        runs = measured[window, unnamed]
        rates = [rate for rate, _ in runs]
        row = {
            "window": window,
            "path": "unnamed" if unnamed else "named",
            "packages": args.packages,
            "runs": args.runs,
            "packages_per_s": round(statistics.median(rates), 1),
            "packages_per_s_min": round(min(rates), 1),
            "packages_per_s_max": round(max(rates), 1),
            "cpu_us_per_package": round(statistics.median(cpu for _, cpu in runs), 1),
        }
        results.append(row)
        print(
            f"spool window={window:3d} {row['path']:7s} packages/s={row['packages_per_s']:8.1f} "
            f"(min {row['packages_per_s_min']:.0f}, max {row['packages_per_s_max']:.0f}) "
            f"cpu {row['cpu_us_per_package']:.0f} us/package",
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packages", type=int, default=1280)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)
    (ROOT / "var").mkdir(exist_ok=True)
    # Every run's folder is removed at the end, not after each run: on ext4 without a journal
    # the inode allocator steps over inodes freed in the last minute or so, one by one, so
    # removing a run's files would slow the file creations of the runs after it.
    scratch = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=ROOT / "var"))
    try:
        results = _measure(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = results[-1]["packages_per_s"] / results[0]["packages_per_s"]
    print(f"window {args.window} / one per call: {ratio:.2f}")
    lines = [
        "| packages per call | path | packages/s (median) | min | max | CPU us/package |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['window']} | {r['path']} | {r['packages_per_s']:.0f} | "
        f"{r['packages_per_s_min']:.0f} | {r['packages_per_s_max']:.0f} "
        f"| {r['cpu_us_per_package']:.0f} |"
        for r in results
    ]
    write_results("spool", {"results": results, "ratio": round(ratio, 2)}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
