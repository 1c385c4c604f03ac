"""The same load against pysiaalarm and against our receiver, side by side in one run.

Run: ``python -m benchmarks.baseline [--connections 10,100] [--messages 200] [--runs 3] [--udp]
[--transports tcp,udp,aes] [--embedded-default]``

Transports: ``tcp``; ``udp`` (one datagram per frame, ``--connections`` frames in flight);
``aes`` (TCP, every frame AES-128 encrypted: ours gets the dc09blast accounts registered with
the key on every line the runs use, pysiaalarm gets the same key on its accounts).

pysiaalarm 3.2.2 is installed on demand into its own virtual environment under
``benchmarks/build/`` (never a project dependency). A tiny asyncio server registers the
accounts dc09blast uses (``--account-base`` hex 100000 + i) and counts events in memory. Each
server is pinned to core 0 and dc09blast to core 1 where the machine has two cores.

Not like for like, and said so in the output: our receiver commits every signal to SQLite
(WAL, synchronous=FULL) before its ACK; pysiaalarm keeps nothing.

pysiaalarm 3.2.2 never answers a UDP datagram on Python 3.11: its
``SIAServerUDP.connection_made`` asserts ``isinstance(transport, asyncio.DatagramTransport)``,
which the 3.11 selector transport is not (3.12 made it one); asyncio logs the AssertionError,
``self.transport`` stays None, and ``datagram_received`` parses and counts every event but sends
no reply (``if self.transport is not None``). dc09blast then waited its 5 s ACK timeout per
frame, 200 frames x 5 s per connection, past the run's timeout: the UDP run never finished.
The server script below hands pysiaalarm its transport when that assertion left it unset (said
in the output), every run is bounded (``ack_timeout``, ``run_timeout``), and a server that ACKs
nothing in the warm-up is reported as such and not measured.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
    rss_kib,
    run_blast,
    timed_out_run,
    write_results,
)

PYSIAALARM = "pysiaalarm==3.2.2"
VENV = BUILD / "pysiaalarm-venv"
ACCOUNT_BASE = "100000"
# AES-128 as dc09blast and pysiaalarm both take it: 16 ASCII characters (pysiaalarm also wants
# them to read as hex).
AES_KEY = "0123456789ABCDEF"
STATION = "BENCH"
TRANSPORTS = ("tcp", "udp", "aes")
ACK_TIMEOUT = 2.0  # seconds dc09blast waits for one reply
RUN_TIMEOUT = 180.0  # seconds one generator run may take


class TimeCapReachedError(Exception):
    """The benchmark's overall time cap fell before this comparison was complete: what it
    measured so far is dropped (a run cut short by the cap is no figure)."""


SERVER = '''"""pysiaalarm baseline server: registers the dc09blast accounts, counts events."""
import asyncio
import signal
import sys

from pysiaalarm.aio import CommunicationsProtocol, SIAAccount, SIAClient

port, base, count, transport = int(sys.argv[1]), int(sys.argv[2], 16), int(sys.argv[3]), sys.argv[4]
key = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] else None
accounts = [SIAAccount(f"{base + i:X}", key=key, allowed_timeband=None) for i in range(count)]
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
    server = client.sia_server
    if transport == "udp" and getattr(server, "transport", 1) is None:
        # pysiaalarm 3.2.2 on Python < 3.12: connection_made's isinstance assertion failed and
        # left the transport unset, so no datagram would ever be answered. Hand it over.
        server.transport = client.transport
        print("note udp transport handed to pysiaalarm", file=sys.stderr, flush=True)
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
    """The pysiaalarm server in a subprocess, on a free port. Its script is written to a
    temporary folder of its own (outside the repository: it runs in the baseline venv, and our
    mypy must not see it), removed by ``stop``: two benchmarks at once never share it."""

    def __init__(
        self,
        python: Path,
        accounts: int,
        *,
        udp: bool = False,
        core: int | None = 0,
        key: str | None = None,
    ) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="pysiaalarm-baseline-"))
        script = self.folder / "pysiaalarm_baseline_server.py"
        script.write_text(SERVER, encoding="utf-8")
        self.port = free_port()
        command = [
            str(python),
            str(script),
            str(self.port),
            ACCOUNT_BASE,
            str(accounts),
            "udp" if udp else "tcp",
            key or "",
        ]
        try:
            self.process = subprocess.Popen(
                pinned(command, core), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
            )
        except OSError:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise
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
        if self.process.stdout is not None:
            self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def process_cpu(server: ReceiverProcess | BaselineServer) -> float:
    return cpu_seconds(server.process.pid)


@contextlib.contextmanager
def aes_setup(accounts: int, runs: int) -> Iterator[list[list[str]]]:
    """CLI commands registering dc09blast's accounts with the AES key on lines 0..runs (the
    warm-up uses line 0, run N line N), as one all-or-nothing CSV import. Run them inside the
    ``with``: the CSV is removed at its end."""
    with tempfile.TemporaryDirectory(prefix="bench-accounts-") as folder:
        csv = Path(folder) / "accounts.csv"
        rows = ["line,number,key,key_format"]
        rows += [
            f"{line:X},{int(ACCOUNT_BASE, 16) + i:X},{AES_KEY},ascii"
            for line in range(runs + 1)
            for i in range(accounts)
        ]
        csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        commands = [["stations", "add", STATION]]
        # Unique within the station on the effective number: each run's line adds its own prefix.
        commands += [
            ["stations", "add-line", STATION, f"{line:X}", "--prefix", f"P{line:X}"]
            for line in range(1, runs + 1)
        ]
        yield [*commands, ["accounts", "import", "--station", STATION, str(csv)]]


def _measure(
    server: ReceiverProcess | BaselineServer,
    blast: Path,
    *,
    conns: int,
    messages: int,
    runs: int,
    udp: bool,
    extra: list[str],
    core: int | None,
    deadline: float | None = None,
) -> dict[str, Any]:
    """Warm-up, then ``runs`` bounded runs; their medians, CPU seconds and (ours) memory.

    ``deadline`` (``time.monotonic()``): no run starts after it and none outlasts it;
    TimeCapReachedError when it falls before the last run is done."""

    def bounded() -> float:
        """The time the next run may take; TimeCapReachedError once the deadline passed (a run
        that ended at it may have been cut short)."""
        if deadline is None:
            return RUN_TIMEOUT
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeCapReachedError
        return min(RUN_TIMEOUT, left)

    warm = run_blast(
        blast,
        server.port,
        connections=conns,
        messages=5,
        udp=udp,
        core=core,
        extra=extra,
        ack_timeout=ACK_TIMEOUT,
        timeout=bounded(),
    )
    bounded()
    if not warm["acked"]:
        # Nothing answered: measuring would only wait out ACK timeouts. Each run counts as
        # one that timed out: nothing of its frames ACKed.
        figures = median_run([timed_out_run(conns * messages)] * runs)
        return figures | {"cpu_s": 0.0, "note": "no ACK in the warm-up: not measured"}
    cpu_before = process_cpu(server)
    measured = []
    for run in range(runs):
        measured.append(
            run_blast(
                blast,
                server.port,
                connections=conns,
                messages=messages,
                udp=udp,
                core=core,
                extra=extra,
                line=f"L{run + 1:X}",  # fresh signals for us, not retries
                ack_timeout=ACK_TIMEOUT,
                timeout=bounded(),
            )
        )
        bounded()
    figures = median_run(measured)
    figures["cpu_s"] = round(process_cpu(server) - cpu_before, 2)
    if isinstance(server, ReceiverProcess):
        figures |= server.memory() | {"workers": server.workers()}
    else:
        figures |= rss_kib(server.process.pid)
    return figures


def compare(
    connections: list[int],
    messages: int,
    runs: int,
    *,
    udp: bool = False,
    embedded_default: bool = False,
    transport: str | None = None,
    deadline: float | None = None,
) -> list[dict[str, Any]]:
    """Median figures for ours and pysiaalarm's at each connection count, and ours / theirs.

    ``transport``: tcp, udp or aes (``udp=True`` is the older spelling of udp). ``deadline``
    (``time.monotonic()``): TimeCapReachedError when it falls before the comparison is done."""
    transport = transport or ("udp" if udp else "tcp")
    udp, aes = transport == "udp", transport == "aes"
    blast = build_blast(aes=aes)
    python = pysiaalarm_python()
    if blast is None or python is None:
        print(f"baseline {transport} skipped: dc09blast or pysiaalarm unavailable", flush=True)
        return []
    extra = ["--key", AES_KEY, "--key-format", "ascii"] if aes else []
    rows = []
    for conns in connections:
        accounts = min(conns, 10_000)
        figures: dict[str, dict[str, Any]] = {}
        for name in ("ours", "pysiaalarm"):
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeCapReachedError
            server: ReceiverProcess | BaselineServer
            if name == "ours":
                # The setup runs while the receiver is made, so its CSV can go right after.
                keyed: contextlib.AbstractContextManager[list[list[str]]] = (
                    aes_setup(accounts, runs) if aes else contextlib.nullcontext([])
                )
                with keyed as setup:
                    server = ReceiverProcess(embedded_default=embedded_default, setup=setup)
            else:
                server = BaselineServer(
                    python,
                    accounts,
                    udp=udp,
                    core=None if embedded_default else 0,
                    key=AES_KEY if aes else None,
                )
            # With the embedded default both servers may use both cores (the generator too).
            blast_core = None if embedded_default else 1
            try:
                figures[name] = _measure(
                    server,
                    blast,
                    conns=conns,
                    messages=messages,
                    runs=runs,
                    udp=udp,
                    extra=extra,
                    core=blast_core,
                    deadline=deadline,
                )
            finally:
                server.stop()
        ours, theirs = figures["ours"], figures["pysiaalarm"]
        ratio = ours["events_per_s"] / theirs["events_per_s"] if theirs["events_per_s"] else None
        row = {
            "transport": transport,
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
            f"{theirs['cpu_s']}  rss ours {ours.get('peak_rss_kib', 0) // 1024} MiB"
            + (f"  pysiaalarm: {theirs['note']}" if "note" in theirs else ""),
            flush=True,
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| transport | connections | server | events/s | p50 ms | p90 ms | p99 ms | max ms "
        "| acked/frames | CPU s | peak RSS MiB | ours / pysiaalarm |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        for name in ("ours", "pysiaalarm"):
            f = r[name]
            rss = f"{f['peak_rss_kib'] // 1024}" if "peak_rss_kib" in f else "-"
            lines.append(
                f"| {r['transport']} | {r['connections']} | {name} | {f['events_per_s']:.0f} "
                f"| {f['p50_ms']} | {f['p90_ms']} | {f['p99_ms']} | {f['max_ms']} "
                f"| {f['acked']}/{f['frames']} | {f['cpu_s']} | {rss} "
                f"| {r['throughput_ratio'] if name == 'ours' else f.get('note', '')} |"
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
        "--transports",
        default="tcp",
        help=f"comma-separated, of {', '.join(TRANSPORTS)} (aes: AES-128 over TCP)",
    )
    parser.add_argument(
        "--embedded-default",
        action="store_true",
        help="ours on what `make serve` runs (signal log, spool output, a worker per core), "
        "both servers and the generator free to use both cores",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if args.udp and "udp" not in transports:
        transports.append("udp")
    unknown = set(transports) - set(TRANSPORTS)
    if unknown or not transports:
        parser.error(f"--transports: unknown {', '.join(sorted(unknown)) or '(none given)'}")
    if args.dry_run:
        print(
            f"baseline: {PYSIAALARM} in {VENV}; {','.join(transports)} at connections "
            f"{connections}, {args.runs} runs"
        )
        return 0
    default = args.embedded_default
    rows = []
    for transport in transports:
        rows += compare(
            connections, args.messages, args.runs, embedded_default=default, transport=transport
        )
    if rows:
        name = "baseline_default" if default else "baseline"
        if "tcp" not in transports:  # its own results file beside the TCP comparison's
            name += "_" + "_".join(transports)
        write_results(name, {"results": rows}, table(rows))
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
