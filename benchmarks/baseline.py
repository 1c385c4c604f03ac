"""The same load against pysiaalarm and against our receiver, side by side in one run.

Run: ``python -m benchmarks.baseline [--connections 10,100] [--messages 200] [--runs 3] [--udp]``

pysiaalarm 3.2.2 is installed on demand into its own virtual environment under
``benchmarks/build/`` (never a project dependency). A tiny asyncio server registers the
accounts dc09blast uses (``--account-base`` hex 100000 + i) and counts events in memory. Each
server is pinned to core 0 and dc09blast to core 1 where the machine has two cores.

Not like for like, and said so in the output: our receiver commits every signal to SQLite
(WAL, synchronous=FULL) before its ACK; pysiaalarm keeps nothing.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    BUILD,
    ReceiverProcess,
    build_blast,
    cpu_seconds,
    free_port,
    median_run,
    pinned,
    run_blast,
    write_results,
)

PYSIAALARM = "pysiaalarm==3.2.2"
VENV = BUILD / "pysiaalarm-venv"
ACCOUNT_BASE = "100000"

SERVER = '''"""pysiaalarm baseline server: registers the dc09blast accounts, counts events."""
import asyncio
import signal
import sys

from pysiaalarm.aio import CommunicationsProtocol, SIAAccount, SIAClient

port, base, count, transport = int(sys.argv[1]), int(sys.argv[2], 16), int(sys.argv[3]), sys.argv[4]
accounts = [SIAAccount(f"{base + i:X}", allowed_timeband=None) for i in range(count)]
received = 0


async def on_event(event):
    global received
    received += 1


async def main():
    client = SIAClient(
        "127.0.0.1", port, accounts, function=on_event,
        protocol=CommunicationsProtocol[transport.upper()],
    )
    await client.async_start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await client.async_stop()
    print(f"events {received}", flush=True)


asyncio.run(main())
'''


def pysiaalarm_python() -> Path | None:
    """The baseline venv's python, created and filled on first use; None when pip fails."""
    python = VENV / "bin" / "python"
    if python.exists():
        check = subprocess.run(
            [python, "-c", "import pysiaalarm"], capture_output=True, check=False
        )
        if check.returncode == 0:
            return python
    print(f"installing {PYSIAALARM} into {VENV} (benchmark only)", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [python, "-m", "pip", "install", "--quiet", PYSIAALARM],
            check=True,
            timeout=600,
        )
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"pysiaalarm unavailable ({exc}); baseline skipped", flush=True)
        return None
    return python


class BaselineServer:
    """The pysiaalarm server in a subprocess, on a free port."""

    def __init__(
        self, python: Path, accounts: int, *, udp: bool = False, core: int | None = 0
    ) -> None:
        # Outside the repository: it runs in the baseline venv, and our mypy must not see it.
        script = Path(tempfile.gettempdir()) / "pysiaalarm_baseline_server.py"
        script.write_text(SERVER, encoding="utf-8")
        self.port = free_port()
        command = [
            str(python),
            str(script),
            str(self.port),
            ACCOUNT_BASE,
            str(accounts),
            "udp" if udp else "tcp",
        ]
        self.process = subprocess.Popen(
            pinned(command, core), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        line = self.process.stdout.readline()
        if line.strip() != "ready" or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError("pysiaalarm server did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def process_cpu(server: ReceiverProcess | BaselineServer) -> float:
    return cpu_seconds(server.process.pid)


def compare(
    connections: list[int],
    messages: int,
    runs: int,
    *,
    udp: bool = False,
    embedded_default: bool = False,
) -> list[dict[str, Any]]:
    """Median figures for ours and pysiaalarm's at each connection count, and ours / theirs."""
    blast = build_blast()
    python = pysiaalarm_python()
    if blast is None or python is None:
        print("baseline skipped: dc09blast or pysiaalarm unavailable", flush=True)
        return []
    rows = []
    for conns in connections:
        accounts = min(conns, 10_000)
        figures: dict[str, dict[str, Any]] = {}
        for name in ("ours", "pysiaalarm"):
            server: ReceiverProcess | BaselineServer = (
                ReceiverProcess(embedded_default=embedded_default)
                if name == "ours"
                else BaselineServer(python, accounts, udp=udp, core=None if embedded_default else 0)
            )
            # With the embedded default both servers may use both cores (the generator too).
            blast_core = None if embedded_default else 1
            try:
                run_blast(
                    blast, server.port, connections=conns, messages=5, udp=udp, core=blast_core
                )
                cpu_before = process_cpu(server)
                figures[name] = median_run(
                    [
                        run_blast(
                            blast,
                            server.port,
                            connections=conns,
                            messages=messages,
                            udp=udp,
                            core=blast_core,
                            line=f"L{run + 1:X}",  # fresh signals for us, not retries
                        )
                        for run in range(runs)
                    ]
                )
                figures[name]["cpu_s"] = round(process_cpu(server) - cpu_before, 2)
                if isinstance(server, ReceiverProcess):
                    figures[name] |= server.memory()
            finally:
                server.stop()
        ours, theirs = figures["ours"], figures["pysiaalarm"]
        ratio = ours["events_per_s"] / theirs["events_per_s"] if theirs["events_per_s"] else None
        row = {
            "transport": "udp" if udp else "tcp",
            "connections": conns,
            "messages": messages,
            "config": "embedded default, unpinned" if embedded_default else "lean, pinned",
            "ours": ours,
            "pysiaalarm": theirs,
            "throughput_ratio": round(ratio, 2) if ratio is not None else None,
        }
        rows.append(row)
        print(
            f"{row['transport']} conns={conns:5d}  ours {ours['events_per_s']:8.0f} ev/s "
            f"p99 {ours['p99_ms']} ms ({ours['acked']}/{ours['frames']} acked, durable)  "
            f"pysiaalarm {theirs['events_per_s']:8.0f} ev/s p99 {theirs['p99_ms']} ms "
            f"({theirs['acked']}/{theirs['frames']} acked, in memory)  "
            f"ours/theirs {row['throughput_ratio']}  cpu s ours {ours['cpu_s']} theirs "
            f"{theirs['cpu_s']}  rss ours {ours.get('peak_rss_kib', 0) // 1024} MiB",
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| transport | connections | ours events/s | ours p99 ms | pysiaalarm events/s "
        "| pysiaalarm p99 ms | ours / pysiaalarm |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        o, t = r["ours"], r["pysiaalarm"]
        lines.append(
            f"| {r['transport']} | {r['connections']} | {o['events_per_s']:.0f} | {o['p99_ms']} "
            f"| {t['events_per_s']:.0f} | {t['p99_ms']} | {r['throughput_ratio']} |"
        )
    lines.append(
        "\nOurs commits every signal durably (SQLite WAL, synchronous=FULL) before the ACK; "
        "pysiaalarm stores nothing."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", default="10,100")
    parser.add_argument("--messages", type=int, default=200, help="frames per connection")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--udp", action="store_true", help="also compare over UDP")
    parser.add_argument(
        "--embedded-default",
        action="store_true",
        help="ours on what `make serve` runs (signal log, spool output, a worker per core), "
        "both servers and the generator free to use both cores",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    if args.dry_run:
        print(f"baseline: {PYSIAALARM} in {VENV}; connections {connections}, {args.runs} runs")
        return 0
    default = args.embedded_default
    rows = compare(connections, args.messages, args.runs, embedded_default=default)
    if args.udp:
        rows += compare(connections, args.messages, args.runs, udp=True, embedded_default=default)
    if rows:
        name = "baseline_default" if default else "baseline"
        write_results(name, {"results": rows}, table(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
