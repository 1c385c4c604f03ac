"""A PNG of throughput and p99 ACK latency against connections, from benchmarks/results/.

Run: ``python -m benchmarks.plot``. Reads ``sweep.json`` (and ``baseline.json`` when present)
and writes ``sweep.png``. matplotlib is a benchmark-only tool: installed into this venv on
demand, never a project dependency; when it cannot be had, the plot is skipped with a message.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import RESULTS


def _matplotlib() -> Any | None:
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        pass
    print("installing matplotlib into this venv (benchmark only)", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"],
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        return None
    importlib.invalidate_caches()
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        return None


def _load(name: str) -> list[dict[str, Any]]:
    path = RESULTS / f"{name}.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text())["results"])


def plot(out: Path | None = None) -> Path | None:
    """Write the plot; None (with a message) when there is nothing to plot or no matplotlib."""
    swept = _load("sweep")
    if not swept:
        print("plot skipped: no benchmarks/results/sweep.json", flush=True)
        return None
    matplotlib = _matplotlib()
    if matplotlib is None:
        print("plot skipped: matplotlib unavailable", flush=True)
        return None
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(11, 4))
    for transport in sorted({r["transport"] for r in swept}):
        rows = sorted(
            (r for r in swept if r["transport"] == transport), key=lambda r: r["connections"]
        )
        xs = [r["connections"] for r in rows]
        left.plot(xs, [r["events_per_s"] for r in rows], marker="o", label=f"ours {transport}")
        right.plot(xs, [r["p99_ms"] for r in rows], marker="o", label=f"ours {transport}")
    baseline = [r for r in _load("baseline") if r["transport"] == "tcp"]
    if baseline:
        rows = sorted(baseline, key=lambda r: r["connections"])
        xs = [r["connections"] for r in rows]
        left.plot(xs, [r["pysiaalarm"]["events_per_s"] for r in rows], "s--", label="pysiaalarm")
        right.plot(xs, [r["pysiaalarm"]["p99_ms"] for r in rows], "s--", label="pysiaalarm")
    left.axhline(20_000, color="grey", linestyle=":", label="goal 20,000/s")
    right.axhline(10.0, color="grey", linestyle=":", label="goal 10 ms")
    for axis, label in ((left, "durable events/s"), (right, "ACK p99 (ms)")):
        axis.set_xscale("log")
        axis.set_xlabel("connections")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    target = out or RESULTS / "sweep.png"
    figure.savefig(target, dpi=100)
    print(f"plot written: {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    return 0 if plot() is not None else 1


if __name__ == "__main__":
    sys.exit(main())
