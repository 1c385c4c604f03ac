"""Pieces the benchmarks share: a receiver subprocess, the C load generator, RSS, medians.

Everything runs on loopback. Every load run is bounded in frames and in time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BLAST_SOURCE = ROOT / "benchmarks" / "dc09blast.c"
BUILD = ROOT / "benchmarks" / "build"
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(command: list[str], core: int | None) -> list[str]:
    """Pin to one core where the machine has two or more and taskset exists."""
    if core is None or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def build_blast() -> Path | None:
    """Build benchmarks/dc09blast.c once; None when it or a C compiler is missing."""
    target = BUILD / "dc09blast"
    if target.exists() and target.stat().st_mtime >= BLAST_SOURCE.stat().st_mtime:
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not BLAST_SOURCE.exists() or compiler is None:
        return None
    BUILD.mkdir(parents=True, exist_ok=True)
    subprocess.run([compiler, "-O2", "-o", str(target), str(BLAST_SOURCE)], check=True)
    return target


def rss_kib(pid: int) -> dict[str, int]:
    """Current and peak resident memory of a process, KiB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return {"rss_kib": out.get("VmRSS", 0), "peak_rss_kib": out.get("VmHWM", 0)}


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc), e.g. the ingest worker processes."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children so far (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for each in [pid, *child_pids(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return round(total, 2)


class ReceiverProcess:
    """``receiver serve`` in a subprocess with a throwaway store and its own config."""

    def __init__(
        self,
        extra_config: str = "",
        *,
        core: int | None = 0,
        outputs: str = "outputs = []\n",
        embedded_default: bool = False,
        store: str | None = None,
    ) -> None:
        """``outputs``: top-level TOML for the outputs (default none; ``[[outputs]]`` tables
        go at the end of the file). The bridge port is a free one, so runs never collide.
        ``store``: the ``[store]`` table (e.g. a PostgreSQL ``url``); default a SQLite file in
        the throwaway folder.

        ``embedded_default``: what ``make serve`` runs (signal log on, the spool output, one
        ingest worker per core, the console), only on free ports and a throwaway folder; the
        receiver is then not pinned (``core`` is ignored)."""
        self.dir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
        self.port = free_port()
        self.config = self.dir / "receiver.toml"
        if embedded_default:
            core = None
            outputs = (
                f'[[outputs]]\nname = "spool"\nkind = "spool"\ndirectory = "{self.dir / "spool"}"\n'
            )
            extra_config += f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
        else:
            extra_config += '\n[console]\nlisten = ""\n'
        tables = outputs if "[[outputs]]" in outputs else ""
        self.config.write_text(
            f"log_signals = {'true' if embedded_default else 'false'}\n"
            + ("" if tables else outputs)
            + (store or f'[store]\npath = "{self.dir / "receiver.sqlite3"}"\n')
            + f'[bridge]\nlisten = "127.0.0.1:{free_port()}"\n'
            f'[dc09]\nlisten = "127.0.0.1:{self.port}"\n'
            "max_connections = 50000\nmax_connections_per_peer = 50000\n"
            + extra_config
            + ("\n" + tables if tables else ""),
            encoding="utf-8",
        )
        command = [sys.executable, "-m", "receiver.cli", "--config", str(self.config), "serve"]
        self.log = (self.dir / "receiver.log").open("wb")
        self.process = subprocess.Popen(pinned(command, core), stdout=self.log, stderr=self.log)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"receiver exited: see {self.dir / 'receiver.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("receiver did not start listening")

    @property
    def db(self) -> Path:
        return self.dir / "receiver.sqlite3"

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def memory(self) -> dict[str, int]:
        """RSS of the receiver and its ingest workers, added up."""
        total = {"rss_kib": 0, "peak_rss_kib": 0}
        for pid in [self.process.pid, *child_pids(self.process.pid)]:
            for key, value in rss_kib(pid).items():
                total[key] += value
        return total

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def run_blast(
    blast: Path,
    port: int,
    *,
    connections: int,
    messages: int,
    udp: bool = False,
    extra: Sequence[str] = (),
    core: int | None = 1,
    timeout: float = 300.0,
    line: str = "L0",
) -> dict[str, Any]:
    """One closed-loop dc09blast run; returns its JSON.

    dc09blast's frames repeat from run to run (same accounts, sequences, payloads), so a second
    run on the same receiver would be absorbed as retries by the dedupe window and measure the
    duplicate path. Give each run its own ``line`` (the DC-09 L field is part of the dedupe key)
    to measure fresh signals.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    command = [
        str(blast),
        "--port",
        str(port),
        "-c",
        str(connections),
        "-m",
        str(messages),
        "--account-count",
        str(min(connections, 10000)),
        "--json",
        str(path),
        "--line",
        line,
        *(["--udp"] if udp else []),
        *extra,
    ]
    subprocess.run(pinned(command, core), check=False, timeout=timeout, capture_output=True)
    try:
        return dict(json.loads(path.read_text()))
    finally:
        path.unlink(missing_ok=True)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median events/s and latency percentiles over several runs, plus the spread."""
    eps = [r["events_per_s"] or 0.0 for r in runs]

    def med(key: str) -> float:
        values = [r["latency_ms"][key] for r in runs if r["latency_ms"][key] is not None]
        return round(statistics.median(values), 3) if values else float("nan")

    return {
        "runs": len(runs),
        "events_per_s": round(statistics.median(eps), 1),
        "events_per_s_min": round(min(eps), 1),
        "events_per_s_max": round(max(eps), 1),
        "p50_ms": med("p50"),
        "p90_ms": med("p90"),
        "p99_ms": med("p99"),
        "max_ms": med("max"),
        "acked": sum(r["acked"] for r in runs),
        "frames": sum(r["frames"] for r in runs),
    }


def write_results(name: str, payload: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
