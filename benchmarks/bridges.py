"""Bridge events: durable events/s and ACK latency with many bridges connected at once.

Run: ``python -m benchmarks.bridges [--connections 10,100,1000] [--messages 100] [--runs 3]``

N registered bridges (one site, one dealer; ``receiver bridges import``) connect, HELLO, then
send ``--messages`` EVENT frames each (input alarm and restore on channel 1, in turn), closed
loop: one frame in flight per bridge, as the protocol's stop-and-wait has it. The generator is
this process (epoll, frames encoded before the clock starts, replies split by their header
only), pinned to core 1; the receiver (lean: no signal log, no outputs, one ingest process)
to core 0. Every signal is committed (SQLite WAL, synchronous=FULL) before its ACK.
Bounded: every run stops after ``--timeout`` seconds, counting what was ACKed by then.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.harness import ReceiverProcess, write_results
from protocols.bridge import (
    CRC_SIZE,
    HEADER_SIZE,
    Envelope,
    Event,
    EventKind,
    Hello,
    MessageType,
    encode_frame,
)

TOKEN = "bench-token-0123456789"
CHANNELS = 4


def serial(index: int) -> str:
    return f"BENCH{index:05d}"


def bridge_id(index: int) -> bytes:
    return b"\x02" + index.to_bytes(5, "big")


@contextlib.contextmanager
def setup(connections: int) -> Iterator[list[list[str]]]:
    """CLI commands registering the bridges: a dealer, a site, one CSV import. Run them inside
    the ``with``: the CSV is removed at its end."""
    with tempfile.TemporaryDirectory(prefix="bench-bridges-") as folder:
        csv = Path(folder) / "bridges.csv"
        rows = ["site,serial,token,channels"]
        rows += [f"bench-site,{serial(i)},{TOKEN},{CHANNELS}" for i in range(connections)]
        csv.write_text("\n".join(rows) + "\n", encoding="utf-8")
        yield [
            ["dealers", "add", "bench-dealer"],
            ["sites", "add", "bench-site", "--dealer", "bench-dealer"],
            ["bridges", "import", str(csv)],
        ]


def _frames(index: int, first_sequence: int, messages: int) -> list[bytes]:
    now = datetime.now(UTC)
    kinds = (EventKind.INPUT_ALARM, EventKind.INPUT_RESTORE)
    return [
        encode_frame(
            Envelope(
                bridge_id=bridge_id(index),
                sequence=first_sequence + n,
                device_time=now,
                body=Event(channel=1, kind=kinds[n % 2]),
            )
        )
        for n in range(messages)
    ]


class _Bridge:
    __slots__ = ("buffer", "frames", "latencies", "next", "sent_at", "sock", "types")

    def __init__(self, sock: socket.socket, frames: list[bytes]) -> None:
        self.sock = sock
        self.frames = frames  # the HELLO first (unless already accepted), then the events
        self.next = 0
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.latencies: list[float] = []
        self.types: list[int] = []


def _replies(bridge: _Bridge) -> list[int]:
    """Complete reply frames in the buffer: their message types."""
    found = []
    buffer = bridge.buffer
    while len(buffer) >= HEADER_SIZE:
        size = HEADER_SIZE + int.from_bytes(buffer[4:6], "big") + CRC_SIZE
        if len(buffer) < size:
            break
        found.append(buffer[3])
        del buffer[:size]
    return found


def drive(
    port: int, bridges: list[_Bridge], timeout: float, *, measure_from: int
) -> dict[str, Any]:
    """Send every bridge's frames stop-and-wait over epoll; latencies of frames from index
    ``measure_from`` on (the HELLO is not measured)."""
    epoll = select.epoll()
    by_fd = {b.sock.fileno(): b for b in bridges}
    started = time.perf_counter()
    for bridge in bridges:
        epoll.register(bridge.sock.fileno(), select.EPOLLIN)
        bridge.sent_at = time.perf_counter()
        try:
            bridge.sock.send(bridge.frames[0])
        except OSError:
            bridge.next = len(bridge.frames)  # closed by the receiver: nothing more to send
    active = sum(b.next < len(b.frames) for b in bridges)
    deadline = started + timeout
    naks = 0
    while active and time.perf_counter() < deadline:
        for fd, _ in epoll.poll(0.5):
            bridge = by_fd[fd]
            try:
                data = bridge.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                epoll.unregister(fd)
                active -= 1
                continue
            bridge.buffer += data
            for kind in _replies(bridge):
                now = time.perf_counter()
                if bridge.next >= measure_from:
                    bridge.latencies.append(now - bridge.sent_at)
                naks += kind == MessageType.NAK
                bridge.types.append(kind)
                bridge.next += 1
                if bridge.next == len(bridge.frames):
                    epoll.unregister(fd)
                    active -= 1
                    break
                bridge.sent_at = now
                try:
                    bridge.sock.send(bridge.frames[bridge.next])
                except OSError:
                    epoll.unregister(fd)
                    active -= 1
                    break
    elapsed = time.perf_counter() - started
    epoll.close()
    latencies = sorted(x for b in bridges for x in b.latencies)
    acked = sum(t == MessageType.ACK for b in bridges for t in b.types[measure_from:])

    def pct(q: float) -> float | None:
        if not latencies:
            return None
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

    return {
        "elapsed_s": round(elapsed, 3),
        "frames": sum(len(b.frames) - measure_from for b in bridges),
        "acked": acked,
        "naks": naks,
        "events_per_s": round(acked / elapsed, 1) if elapsed else 0.0,
        "p50_ms": pct(0.5),
        "p90_ms": pct(0.9),
        "p99_ms": pct(0.99),
        "max_ms": round(latencies[-1] * 1000, 3) if latencies else None,
    }


def _hello(index: int) -> bytes:
    return encode_frame(
        Envelope(
            bridge_id=bridge_id(index),
            sequence=1,
            device_time=datetime.now(UTC),
            body=Hello(serial(index), "VB-BENCH", CHANNELS, "1.0", TOKEN),
        )
    )


def _connect(port: int) -> socket.socket:
    """Connect, retrying for a few seconds: the bridge port opens just after the DC-09 one."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def measure(
    connections: int,
    messages: int,
    runs: int,
    timeout: float,
    *,
    embedded_default: bool,
    batched: bool = True,
) -> dict[str, Any]:
    with setup(connections) as commands:  # run while the receiver is made
        server = ReceiverProcess(
            setup=commands,
            core=0,
            embedded_default=embedded_default,
            dc09_connections=100,
            bridge_config=(
                f"batched = {'true' if batched else 'false'}\n"
                f"max_connections = {connections + 100}\n"
                f"max_connections_per_peer = {connections + 100}\n"
            ),
        )
    if not embedded_default and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})
    socks: list[socket.socket] = []
    try:
        for _ in range(connections):
            sock = _connect(server.bridge_port)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            socks.append(sock)
        hellos = [_Bridge(sock, [_hello(i)]) for i, sock in enumerate(socks)]
        hello = drive(server.bridge_port, hellos, timeout, measure_from=1)
        accepted = sum(b.types[:1] == [MessageType.ACK] for b in hellos)
        cpu_before = server.cpu()
        results = []
        for run in range(runs):
            first = 2 + run * messages
            bridges = [_Bridge(sock, _frames(i, first, messages)) for i, sock in enumerate(socks)]
            results.append(drive(server.bridge_port, bridges, timeout, measure_from=0))
        cpu = server.cpu() - cpu_before
        memory = server.memory()
    finally:
        for sock in socks:
            sock.close()
        server.stop()
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    del hello
    eps = [r["events_per_s"] for r in results]

    def med(key: str) -> float | None:
        values = [r[key] for r in results if r[key] is not None]
        return round(statistics.median(values), 3) if values else None

    return {
        "connections": connections,
        "messages": messages,
        "runs": runs,
        "hello_accepted": accepted,
        "events_per_s": round(statistics.median(eps), 1),
        "events_per_s_min": min(eps),
        "events_per_s_max": max(eps),
        "p50_ms": med("p50_ms"),
        "p90_ms": med("p90_ms"),
        "p99_ms": med("p99_ms"),
        "max_ms": med("max_ms"),
        "acked": sum(r["acked"] for r in results),
        "frames": sum(r["frames"] for r in results),
        "cpu_s": round(cpu, 2),
        "peak_rss_kib": memory["peak_rss_kib"],
        "config": "embedded default" if embedded_default else "lean, pinned",
        "loop": "batched" if batched else "task per connection",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", default="10,100,1000")
    parser.add_argument("--messages", type=int, default=100, help="events per bridge per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run at most")
    parser.add_argument(
        "--embedded-default",
        action="store_true",
        help="the receiver on its embedded default (signal log, spool, a worker per core)",
    )
    parser.add_argument(
        "--loops",
        default="batched,task",
        help="bridge listeners to measure, in one run: batched (one task for every "
        "connection, the default) and task (a task per connection, [bridge] batched = false)",
    )
    parser.add_argument("--name", default="bridges", help="results file name")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    connections = [int(c) for c in args.connections.split(",")]
    if args.dry_run:
        print(f"bridges: {connections} bridges x {args.messages} events, {args.runs} runs")
        return 0
    loops = [loop.strip() for loop in args.loops.split(",")]
    if set(loops) - {"batched", "task"}:
        parser.error("--loops: batched, task")
    rows = []
    for conns, loop in [(c, loop) for c in connections for loop in loops]:
        # Fewer events per bridge above 100 bridges keeps each run bounded (as e2e does).
        messages = max(10, min(args.messages, 20_000 // conns)) if conns > 100 else args.messages
        row = measure(
            conns,
            messages,
            args.runs,
            args.timeout,
            embedded_default=args.embedded_default,
            batched=loop == "batched",
        )
        rows.append(row)
        print(
            f"{loop:8s} bridges={conns:5d} hello {row['hello_accepted']}/{conns} "
            f"events/s={row['events_per_s']:8.1f} (min {row['events_per_s_min']:.0f}, max "
            f"{row['events_per_s_max']:.0f}) p50={row['p50_ms']}ms p90={row['p90_ms']}ms "
            f"p99={row['p99_ms']}ms max={row['max_ms']}ms acked={row['acked']}/{row['frames']} "
            f"cpu={row['cpu_s']}s rss={row['peak_rss_kib'] // 1024}MiB",
            flush=True,
        )
    lines = [
        "| bridges | loop | events/s (median) | p50 ms | p90 ms | p99 ms | max ms | acked/frames "
        "| CPU s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['connections']} | {r['loop']} | {r['events_per_s']:.0f} | {r['p50_ms']} "
        f"| {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['acked']}/{r['frames']} "
        f"| {r['cpu_s']} "
        f"| {r['peak_rss_kib'] // 1024} |"
        for r in rows
    ]
    write_results(args.name, {"results": rows}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
