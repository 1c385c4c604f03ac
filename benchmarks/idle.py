"""Idle supervised connections: how many the receiver holds, and its memory per connection.

Run: ``python -m benchmarks.idle [--connections 10000] [--hold 5]``

Opens N TCP connections to a receiver subprocess; each sends one NULL poll (so it is a live,
supervised link) and waits for its ACK, then stays idle for ``--hold`` seconds. Reports how many
were ACKed, how many the receiver still holds open at the end, and RSS before and after
(per connection = the growth divided by N). Goal: 10,000 idle connections in <= 300 MB RSS,
all workers together: the receiver is not pinned, so it runs its default one ingest worker per
core (the connections spread over them by ``SO_REUSEPORT``), and RSS is the coordinator's plus
every worker's.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
import sys
import time
from typing import Any

from benchmarks.harness import ReceiverProcess, write_results
from protocols import dc09

GOAL_CONNECTIONS = 10_000
GOAL_RSS_MIB = 300


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's open-file limit (inherited by the receiver) toward ``wanted``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _read_reply(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while not data.endswith(b"\r"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def count_open(socks: list[socket.socket]) -> int:
    """Sockets the receiver has not closed (a closed one reads as EOF)."""
    closed = 0
    with selectors.DefaultSelector() as selector:  # epoll: no FD_SETSIZE limit
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        for key, _ in selector.select(timeout=0):
            peer = key.fileobj
            assert isinstance(peer, socket.socket)
            peer.setblocking(False)
            try:
                closed += peer.recv(1, socket.MSG_PEEK) == b""
            except (BlockingIOError, ConnectionError):
                closed += 1
    return len(socks) - closed


def measure(connections: int, hold: float) -> dict[str, Any]:
    limit = raise_fd_limit(2 * connections + 1024)
    if limit < connections + 64:
        connections = max(1, limit - 64)
        print(f"open-file limit {limit}: measuring {connections} connections", flush=True)
    server = ReceiverProcess(core=None)  # every core: the default worker per core
    socks: list[socket.socket] = []
    try:
        time.sleep(1.0)  # let the receiver settle before the baseline reading
        before = server.memory()
        acked = 0
        deadline = time.monotonic() + 120  # bounded: never more than two minutes of connects
        for index in range(connections):
            if time.monotonic() > deadline:
                break
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            account = f"{0x100000 + index:X}"
            sock.sendall(dc09.encode_frame("NULL", 1, account))
            reply = _read_reply(sock, 5.0)
            if b'"ACK"' in reply:
                acked += 1
            socks.append(sock)
        time.sleep(hold)
        after = server.memory()
        workers = server.workers()
        held = count_open(socks)
    finally:
        for sock in socks:
            sock.close()
        server.stop()
    growth_kib = after["rss_kib"] - before["rss_kib"]
    return {
        "connections": len(socks),
        "workers": workers,
        "acked_polls": acked,
        "held_after_s": hold,
        "held": held,
        "rss_before_kib": before["rss_kib"],
        "rss_after_kib": after["rss_kib"],
        "peak_rss_kib": after["peak_rss_kib"],
        "rss_per_connection_kib": round(growth_kib / max(1, len(socks)), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--connections", type=int, default=GOAL_CONNECTIONS)
    parser.add_argument("--hold", type=float, default=5.0, help="seconds idle before measuring")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if args.dry_run:
        print(f"idle: {args.connections} connections held {args.hold} s")
        return 0
    row = measure(args.connections, args.hold)
    verdict = (
        f"goal: {GOAL_CONNECTIONS} idle connections in <= {GOAL_RSS_MIB} MiB RSS; measured "
        f"{row['held']} held of {row['connections']}, RSS {row['rss_after_kib'] // 1024} MiB "
        f"(coordinator and {row['workers']} workers) "
        f"({row['rss_per_connection_kib']} KiB per connection)"
    )
    print(verdict, flush=True)
    table = (
        "| connections | workers | polls ACKed | held | RSS before MiB | RSS after MiB "
        "| KiB/connection |\n|---|---|---|---|---|---|---|\n"
        f"| {row['connections']} | {row['workers']} | {row['acked_polls']} | {row['held']} "
        f"| {row['rss_before_kib'] // 1024} | {row['rss_after_kib'] // 1024} "
        f"| {row['rss_per_connection_kib']} |\n\n{verdict}"
    )
    write_results("idle", {"results": [row]}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
