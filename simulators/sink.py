"""Automation sinks: the far side of the outputs, for tests, QA and benchmarks.

``receiver-sim sink sentinel --listen HOST:PORT [--passkey K] [--mode ack|nak|silent|drop]
--out DIR`` writes each package that arrives as ``DIR/<package-id>.xml`` (atomically; a
package id seen before is counted as a duplicate and not rewritten), then answers per mode:
ack (ACK it), nak (NAK it), silent (say nothing), drop (close the connection). Without
``--passkey`` any passkey is accepted. A client that resets its connection costs that
connection only: one line on stderr, counted as ``lost`` in the summary.

``receiver-sim sink surgard --listen HOST:PORT [--mode ack|nak|silent] --out FILE`` appends
each message that arrives (heartbeats included, without the DC4) as one line, then answers
0x06, 0x15 or nothing. A malformed message is NAKed and not written.

Both run until SIGINT/SIGTERM or ``--duration S``, print ``listening on HOST:PORT`` first (port 0
picks a free one) and a summary at the end. A port in use or an address that cannot be bound is
one line on stderr naming the sink and the address, exit 1.
"""

from __future__ import annotations

import argparse
import hmac
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from adapters.output import parse_address
from adapters.sentinel import transport
from adapters.sentinel.package import PACKAGE_ID, parse_document
from adapters.spool import write_atomically
from protocols import surgard
from protocols.errors import ReceiverError, RemoteProtocolError
from simulators.endpoints import EndpointError, open_listeners


class SentinelSink:
    """A Sentinel-style XML receiver that files every package it gets."""

    def __init__(self, out: Path, *, passkey: str | None = None, mode: str = "ack") -> None:
        if mode not in ("ack", "nak", "silent", "drop"):
            raise ValueError(f"mode must be ack, nak, silent or drop, got {mode!r}")
        self.out = out
        self.passkey = passkey
        self.mode = mode
        self.packages = 0
        self.duplicates = 0
        self.invalid = 0
        self.refused = 0
        self.heartbeats = 0
        self.lost = 0  # connections the client reset (or left) before its answer

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        listeners = await open_listeners("sentinel sink", host, port)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        """Serve one client. A client that resets the connection (or is gone when answered)
        costs that connection only: counted as ``lost``, one line on stderr."""
        try:
            peer = "{}:{}".format(*stream.socket.getpeername())
        except OSError:
            peer = "a client"
        try:
            await self._converse(stream)
        except trio.BrokenResourceError as exc:
            self.lost += 1
            print(f"receiver-sim sink: connection lost ({peer}): {exc}", file=sys.stderr)

    async def _converse(self, stream: trio.SocketStream) -> None:
        reader = transport.FrameReader()
        authenticated = False
        async with stream:
            while True:
                event = reader.next_event()
                if event is transport.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    reader.receive_data(data)
                    continue
                match event:
                    case transport.Auth(passkey=passkey):
                        if self.passkey is None or hmac.compare_digest(
                            passkey.encode(), self.passkey.encode()
                        ):
                            authenticated = True
                            await stream.send_all(transport.encode(transport.AuthAccepted()))
                            continue
                        self.refused += 1
                        await stream.send_all(
                            transport.encode(transport.AuthRefused("wrong passkey"))
                        )
                        return
                    case transport.Heartbeat() if authenticated:
                        self.heartbeats += 1
                        await stream.send_all(transport.encode(transport.Heartbeat()))
                    case transport.PackageFrame(xml=xml) if authenticated:
                        answer = self._file(xml)
                        if self.mode == "drop":
                            return
                        if self.mode == "nak" and isinstance(answer, transport.Ack):
                            answer = transport.Nak(answer.package_id, "refused by sink (nak mode)")
                        if self.mode != "silent":
                            await stream.send_all(transport.encode(answer))
                    case _:
                        # Unauthenticated traffic, framing errors, messages only we may send.
                        return

    def _file(self, xml: bytes) -> transport.Ack | transport.Nak:
        try:
            root = parse_document(xml)
        except RemoteProtocolError as exc:
            self.invalid += 1
            return transport.Nak.because("unknown", exc.message)
        package_id = str(root.get("id"))
        assert PACKAGE_ID.match(package_id)  # the XSD holds the same pattern
        if (self.out / f"{package_id}.xml").exists():
            self.duplicates += 1
        else:
            # A test sink needs whole files, not crash-proof ones: skipping fsync keeps the
            # sink from being what a latency benchmark measures.
            write_atomically(self.out, f"{package_id}.xml", xml, durable=False)
            self.packages += 1
        return transport.Ack(package_id)

    def summary(self) -> str:
        return (
            f"packages={self.packages} duplicates={self.duplicates} invalid={self.invalid} "
            f"heartbeats={self.heartbeats} refused={self.refused} lost={self.lost}"
        )


class SurGardSink:
    """An automation computer on the SG TCP port: one line per message, then the handshake."""

    def __init__(self, out: Path, *, mode: str = "ack") -> None:
        if mode not in ("ack", "nak", "silent"):
            raise ValueError(f"mode must be ack, nak or silent, got {mode!r}")
        self.out = out
        self.mode = mode
        self.messages = 0
        self.heartbeats = 0
        self.invalid = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        listeners = await open_listeners("surgard sink", host, port)
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        reader = surgard.MessageReader()
        async with stream:
            while True:
                event = reader.next_event()
                if event is surgard.NEED_DATA:
                    try:
                        data = await stream.receive_some(4096)
                    except trio.BrokenResourceError:
                        return
                    if not data:
                        return
                    reader.receive_data(data)
                    continue
                if isinstance(event, RemoteProtocolError):
                    self.invalid += 1
                    answer = surgard.NAK
                else:
                    assert not isinstance(event, type)
                    self._write(event)
                    answer = surgard.ACK if self.mode == "ack" else surgard.NAK
                if self.mode != "silent":
                    try:
                        await stream.send_all(answer)
                    except trio.BrokenResourceError:
                        return

    def _write(self, message: surgard.SurGardMessage) -> None:
        with self.out.open("ab") as file:
            file.write(message.encode()[:-1] + b"\n")
        if isinstance(message, surgard.Heartbeat):
            self.heartbeats += 1
        else:
            self.messages += 1

    def summary(self) -> str:
        return f"messages={self.messages} heartbeats={self.heartbeats} invalid={self.invalid}"


async def _run(sink: SentinelSink | SurGardSink, listen: str, duration: float | None) -> None:
    host, port = parse_address(listen, "--listen")
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(sink.serve, host, port)
            print(f"listening on {host}:{bound}", flush=True)

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(stop_on_signal)
            if duration is not None:
                nursery.cancel_scope.deadline = trio.current_time() + duration


def _handler(args: argparse.Namespace) -> int:
    try:
        sink: SentinelSink | SurGardSink
        if args.kind == "sentinel":
            sink = SentinelSink(Path(args.out), passkey=args.passkey, mode=args.mode)
        else:
            sink = SurGardSink(Path(args.out), mode=args.mode)
        trio.run(_run, sink, args.listen, args.duration)
    except EndpointError as exc:
        print(f"receiver-sim sink: {exc}", file=sys.stderr)
        return 1
    except (ReceiverError, ValueError) as exc:
        print(f"receiver-sim sink: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the --out folder or file
        print(f"receiver-sim sink: {exc}", file=sys.stderr)
        return 1
    print(sink.summary(), flush=True)
    return 0


def register(sub: Any) -> None:
    parser = sub.add_parser("sink", help="automation sinks (Sentinel XML, Sur-Gard)")
    kinds = parser.add_subparsers(dest="kind", metavar="KIND")
    kinds.required = True
    sentinel = kinds.add_parser("sentinel", help="Sentinel XML receiver over TCP")
    sentinel.add_argument("--passkey", help="refuse connections that present another passkey")
    sentinel.add_argument("--mode", choices=("ack", "nak", "silent", "drop"), default="ack")
    sentinel.add_argument("--out", required=True, metavar="DIR", help="directory for packages")
    sg = kinds.add_parser("surgard", help="Sur-Gard automation computer over TCP")
    sg.add_argument("--mode", choices=("ack", "nak", "silent"), default="ack")
    sg.add_argument("--out", required=True, metavar="FILE", help="file to append messages to")
    for kind in (sentinel, sg):
        kind.add_argument("--listen", required=True, metavar="HOST:PORT")
        kind.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
        kind.set_defaults(handler=_handler)
