"""The transport floor: how fast can a Python server on this machine ACK DC-09 frames at all?

Run: ``python -m benchmarks.floor [--runs 3] [--connections 100] [--messages 300]``

The e2e goal (20,000 durable events/s at 100 connections) is compared here with servers that do
the least a DC-09 receiver can do and still answer correctly: split the stream into frames,
check each frame's CRC and header, and send the ACK (``protocols.dc09`` read_header + ack).
Nothing is decoded further, nothing is stored. Each is driven like the receiver (pinned to
core 0, dc09blast on core 1, closed loop) and measured in the same run as the real receiver:

- ``trio-stream``: trio, one task per connection, ``SocketStream.receive_some``/``send_all``
  (what ``receiver/dc09_listener.py`` is built on);
- ``trio-socket``: trio, one task per connection, non-blocking socket calls with
  ``trio.lowlevel.wait_readable`` (trio's scheduler without its stream layer);
- ``epoll``: one thread, ``selectors`` (no async framework at all);
- ``receiver``: ``receiver serve`` itself: full decode, registry, durable journal, then ACK.

The difference between ``receiver`` and ``trio-stream`` is what decoding and storing cost; the
difference between ``trio-stream`` and ``epoll`` is what trio's per-connection task model costs.
"""

from __future__ import annotations

import argparse
import functools
import selectors
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime

import trio

from benchmarks.harness import (
    ReceiverProcess,
    build_blast,
    free_port,
    median_run,
    pinned,
    run_blast,
    write_results,
)
from protocols import dc09
from protocols.errors import RemoteProtocolError

VARIANTS = ("trio-stream", "trio-socket", "epoll", "receiver")


def _answer(splitter: dc09.FrameSplitter, data: bytes) -> bytes:
    """Feed ``data``; return the ACKs for every complete frame (header checked, CRC included)."""
    splitter.receive_data(data)
    replies: list[bytes] = []
    while True:
        event = splitter.next_event()
        if event is dc09.NEED_DATA:
            return b"".join(replies)
        if isinstance(event, bytes):
            try:
                header = dc09.read_header(event)
            except RemoteProtocolError:
                continue
            replies.append(dc09.ack(header, key=None, now=datetime.now(UTC)))


async def _trio_stream(stream: trio.SocketStream) -> None:
    splitter = dc09.FrameSplitter()
    try:
        while data := await stream.receive_some(65536):
            if replies := _answer(splitter, data):
                await stream.send_all(replies)
    except trio.BrokenResourceError:
        pass


async def _trio_socket(stream: trio.SocketStream) -> None:
    sock = stream.socket
    splitter = dc09.FrameSplitter()
    fd = sock.fileno()
    raw = socket.socket(fileno=fd)  # the same descriptor, non-blocking, without trio's wrapper
    raw.setblocking(False)
    try:
        while True:
            try:
                data = raw.recv(65536)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(fd)
                continue
            if not data:
                return
            if replies := _answer(splitter, data):
                raw.sendall(replies)  # ACKs are small; the kernel buffer takes them at once
    except OSError:
        pass
    finally:
        raw.detach()


def _serve_trio(port: int, variant: str) -> None:
    handler = _trio_stream if variant == "trio-stream" else _trio_socket
    trio.run(functools.partial(trio.serve_tcp, handler, port, host="127.0.0.1"))


def _serve_epoll(port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    splitters: dict[socket.socket, dc09.FrameSplitter] = {}
    while True:
        for key, _ in selector.select():
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                while True:
                    try:
                        conn, _ = listener.accept()
                    except BlockingIOError:
                        break
                    conn.setblocking(False)
                    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    selector.register(conn, selectors.EVENT_READ)
                    splitters[conn] = dc09.FrameSplitter()
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()
                del splitters[sock]
                continue
            if replies := _answer(splitters[sock], data):
                sock.sendall(replies)


class _FloorServer:
    """One floor variant in a subprocess pinned to core 0."""

    def __init__(self, variant: str) -> None:
        self.port = free_port()
        command = [sys.executable, "-m", "benchmarks.floor", "--serve", variant]
        command += ["--port", str(self.port)]
        self.process = subprocess.Popen(pinned(command, 0))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"floor server {variant} did not start")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--messages", type=int, default=300, help="frames per connection")
    parser.add_argument("--serve", choices=VARIANTS[:3], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        if args.serve == "epoll":
            _serve_epoll(args.port)
        else:
            _serve_trio(args.port, args.serve)
        return 0
    blast = build_blast()
    if blast is None:
        print("dc09blast unavailable (no benchmarks/dc09blast.c or no C compiler)")
        return 1
    results = []
    for variant in VARIANTS:
        server: _FloorServer | ReceiverProcess = (
            ReceiverProcess() if variant == "receiver" else _FloorServer(variant)
        )
        try:
            run_blast(blast, server.port, connections=args.connections, messages=5)  # warm-up
            runs = [
                run_blast(
                    blast,
                    server.port,
                    connections=args.connections,
                    messages=args.messages,
                    line=f"L{run + 1:X}",
                )
                for run in range(args.runs)
            ]
        finally:
            server.stop()
        row = {"variant": variant, "connections": args.connections} | median_run(runs)
        results.append(row)
        print(
            f"{variant:12s} conns={args.connections} events/s={row['events_per_s']:9.1f} "
            f"(min {row['events_per_s_min']:.0f}, max {row['events_per_s_max']:.0f}) "
            f"p50={row['p50_ms']}ms p99={row['p99_ms']}ms acked={row['acked']}/{row['frames']}",
            flush=True,
        )
    lines = [
        "| server | what it does per frame | events/s (median) | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    does = {
        "trio-stream": "CRC + header + ACK; trio SocketStream",
        "trio-socket": "CRC + header + ACK; trio wait_readable + socket calls",
        "epoll": "CRC + header + ACK; selectors loop, no trio",
        "receiver": "receiver serve: decode, registry, durable commit, ACK",
    }
    lines += [
        f"| {r['variant']} | {does[r['variant']]} | {r['events_per_s']:.0f} | {r['p50_ms']} "
        f"| {r['p99_ms']} |"
        for r in results
    ]
    write_results("floor", {"results": results}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
