"""Spool output throughput: durable package files per second, one per call vs a window.

Run: ``python -m benchmarks.spool [--packages 1280] [--runs 3] [--window 64]``

The spool is the embedded default output (``make serve`` with no outputs configured). Each
package is XML built and validated, written to a temporary file, fsynced, renamed into place,
and the directory fsynced. ``--window`` packages per call is what the dispatcher hands over
during a backlog; one package per call is the baseline in the same run. The directory is a
fresh one under ``var/`` (the project's disk, not a tmpfs).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime

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


async def _rate(packages: int, window: int) -> float:
    directory = tempfile.mkdtemp(prefix="spool-bench-", dir=ROOT / "var")
    try:
        output = SpoolOutput("spool", directory)
        items = [(_signal(i), f"p-{i:06d}") for i in range(packages)]
        started = time.perf_counter()
        for start in range(0, packages, window):
            await output.deliver_batch(items[start : start + window])
        return packages / (time.perf_counter() - started)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packages", type=int, default=1280)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)
    (ROOT / "var").mkdir(exist_ok=True)
    results = []
    for window in (1, args.window):
        rates = [trio.run(_rate, args.packages, window) for _ in range(args.runs)]
        row = {
            "window": window,
            "packages": args.packages,
            "runs": args.runs,
            "packages_per_s": round(statistics.median(rates), 1),
            "packages_per_s_min": round(min(rates), 1),
            "packages_per_s_max": round(max(rates), 1),
        }
        results.append(row)
        print(
            f"spool window={window:3d} packages/s={row['packages_per_s']:8.1f} "
            f"(min {row['packages_per_s_min']:.0f}, max {row['packages_per_s_max']:.0f})",
            flush=True,
        )
    ratio = results[1]["packages_per_s"] / results[0]["packages_per_s"]
    print(f"window {args.window} / one per call: {ratio:.2f}")
    lines = ["| packages per call | packages/s (median) | min | max |", "|---|---|---|---|"]
    lines += [
        f"| {r['window']} | {r['packages_per_s']:.0f} | {r['packages_per_s_min']:.0f} "
        f"| {r['packages_per_s_max']:.0f} |"
        for r in results
    ]
    write_results("spool", {"results": results, "ratio": round(ratio, 2)}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
