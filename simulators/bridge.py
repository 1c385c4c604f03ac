"""Simulated video bridges: one bridge sending a scripted list, or a fleet for load.

Rules of this module:

- A simulated bridge is the receiver's bridge role of ``protocols.bridge`` over a trio stream:
  HELLO first, then stop-and-wait (each message waits for its ACK); a message that gets no
  answer within ``timeout`` (or a NAK ``bad_crc``/``busy``) is sent again with the same bytes
  and the same sequence, up to ``retries`` times.
- Loopback only: a non-loopback target is refused unless ``allow_remote`` is given, so a test
  or a mistyped address never loads a real receiver.
- The bridge id on the wire is derived from the serial (``bridge_mac``), so the same serial
  always reports as the same bridge.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import math
import random
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final

import attrs
import trio
from attrs import frozen
from attrs.validators import ge, gt, le

from protocols.bridge import (
    NEED_DATA,
    Ack,
    ArmState,
    BridgeConnection,
    BridgeState,
    Envelope,
    Event,
    EventKind,
    Heartbeat,
    Hello,
    Nak,
    NakReason,
)
from protocols.errors import InvalidInputError
from simulators.endpoints import EndpointError, open_stream

# A NAK with one of these asks for the same frame again (docs/bridge-protocol.md §5).
RESEND_REASONS: Final = frozenset({NakReason.BAD_CRC, NakReason.BUSY})
MAX_FLEET_BRIDGES: Final = 10_000
MAX_FLEET_RATE: Final = 100_000.0
MAX_FLEET_DURATION: Final = 24 * 3600.0
CONNECT_LIMIT: Final = 64  # concurrent TCP connects while a fleet starts

_CHANNEL_WORDS: Final[Mapping[str, EventKind]] = {
    "alarm": EventKind.INPUT_ALARM,
    "restore": EventKind.INPUT_RESTORE,
    "analytics": EventKind.ANALYTICS,
    "camera-lost": EventKind.CAMERA_LOST,
    "camera-restored": EventKind.CAMERA_RESTORED,
    "tamper": EventKind.TAMPER,
    "tamper-restore": EventKind.TAMPER_RESTORE,
}
_BRIDGE_WORDS: Final[Mapping[str, EventKind]] = {
    "arm": EventKind.ARM,
    "disarm": EventKind.DISARM,
    "partial-arm": EventKind.PARTIAL_ARM,
    "power-lost": EventKind.POWER_LOST,
    "power-restored": EventKind.POWER_RESTORED,
    "test": EventKind.PERIODIC_TEST,
    "privacy-on": EventKind.PRIVACY_ON,
    "privacy-off": EventKind.PRIVACY_OFF,
    "programming": EventKind.PROGRAMMING_CHANGE,
}
_ARMING: Final[Mapping[EventKind, ArmState]] = {
    EventKind.ARM: ArmState.ARMED,
    EventKind.DISARM: ArmState.DISARMED,
    EventKind.PARTIAL_ARM: ArmState.PARTIAL,
}
SEND_WORDS: Final = (
    "arm[:USER]",
    "disarm[:USER]",
    "partial-arm[:USER]",
    "alarm:CH",
    "restore:CH",
    "analytics:CH",
    "camera-lost:CH",
    "camera-restored:CH",
    "tamper[:CH]",
    "tamper-restore[:CH]",
    "power-lost",
    "power-restored",
    "test",
    "privacy-on[:USER]",
    "privacy-off[:USER]",
    "programming[:USER]",
    "heartbeat",
)


def parse_send(word: str, channels: int) -> Event | Heartbeat | None:
    """One ``--send`` word as a message; None stands for a heartbeat (its state comes later).

    ``alarm:2`` is an input alarm on channel 2, ``disarm:7`` a disarm by user 7,
    ``tamper`` (no channel) a tamper of the enclosure.
    """
    name, _, arg = word.strip().lower().partition(":")
    if name == "heartbeat" and not arg:
        return None
    try:
        number = int(arg) if arg else None
    except ValueError:
        raise InvalidInputError(f"--send {word!r}: {arg!r} is not a number") from None
    if name in _CHANNEL_WORDS:
        kind = _CHANNEL_WORDS[name]
        if number is None and kind in (EventKind.TAMPER, EventKind.TAMPER_RESTORE):
            number = 0
        if number is None or not (0 if name.startswith("tamper") else 1) <= number <= channels:
            raise InvalidInputError(f"--send {word!r}: give a channel 1..{channels}, e.g. {name}:1")
        return Event(channel=number, kind=kind)
    if name in _BRIDGE_WORDS:
        try:
            return Event(channel=0, kind=_BRIDGE_WORDS[name], user=number)
        except ValueError as exc:
            raise InvalidInputError(f"--send {word!r}: {exc}") from None
    raise InvalidInputError(f"--send {word!r}: unknown; use one of {', '.join(SEND_WORDS)}")


def bridge_mac(serial: str) -> bytes:
    """A stable, locally administered MAC for a simulated bridge's serial."""
    return b"\x02" + hashlib.sha256(serial.encode("utf-8")).digest()[:5]


def check_target(host: str, *, allow_remote: bool = False) -> None:
    """Refuse a target that is not loopback unless ``allow_remote``."""
    if allow_remote or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInputError(
            f"target {host} is not a loopback address; pass --allow-remote to load it"
        )


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[IPv6]:PORT`` as (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInputError(f"--target {text!r}: expected HOST:PORT")
    return host, int(port)


# ---- the summary --------------------------------------------------------------------------


@attrs.define
class _Tally:
    """Counts shared by the bridges of one run (one trio thread: no locking needed)."""

    bridges: int = 0
    planned: int = 0
    sent: int = 0
    acked: int = 0
    naked: int = 0
    timeouts: int = 0
    retransmits: int = 0
    hello_failures: int = 0
    connect_failures: int = 0
    connect_error: str | None = None
    nak_reasons: Counter[str] = attrs.Factory(Counter)
    latencies_ms: list[float] = attrs.Factory(list)

    def summary(self, elapsed_s: float) -> BridgeRunSummary:
        return BridgeRunSummary(
            bridges=self.bridges,
            planned=self.planned,
            sent=self.sent,
            acked=self.acked,
            naked=self.naked,
            timeouts=self.timeouts,
            retransmits=self.retransmits,
            hello_failures=self.hello_failures,
            connect_failures=self.connect_failures,
            connect_error=self.connect_error,
            nak_reasons=dict(self.nak_reasons),
            latencies_ms=tuple(self.latencies_ms),
            elapsed_s=elapsed_s,
        )


@frozen(kw_only=True)
class BridgeRunSummary:
    """What a run did: messages sent (first transmissions, not counting HELLO) and outcomes.

    ``timeouts`` counts messages that got no answer after every retransmission (or whose
    connection closed first); ``planned`` is what the script asked for (single bridge) or what
    was sent (fleet). ``hello_failures`` counts bridges the receiver did not let in,
    ``connect_failures`` bridges that could not connect at all (``connect_error`` says why).
    """

    bridges: int
    planned: int
    sent: int
    acked: int
    naked: int
    timeouts: int
    retransmits: int
    hello_failures: int
    connect_failures: int
    connect_error: str | None
    nak_reasons: Mapping[str, int]
    latencies_ms: tuple[float, ...]
    elapsed_s: float

    @property
    def ok(self) -> bool:
        """Every bridge was let in and every planned message was ACKed."""
        return (
            self.hello_failures == 0
            and self.connect_failures == 0
            and self.naked == 0
            and self.timeouts == 0
            and self.acked == self.planned
        )

    def latency_ms(self, fraction: float) -> float | None:
        """The ACK latency at ``fraction`` (0.5 = median), nearest rank; None without ACKs."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return round(ordered[rank - 1], 3)

    def as_dict(self) -> dict[str, object]:
        """The ``--json`` summary."""
        return {
            "ok": self.ok,
            "bridges": self.bridges,
            "planned": self.planned,
            "sent": self.sent,
            "acked": self.acked,
            "naked": self.naked,
            "timeouts": self.timeouts,
            "retransmits": self.retransmits,
            "hello_failures": self.hello_failures,
            "connect_failures": self.connect_failures,
            "connect_error": self.connect_error,
            "nak_reasons": dict(self.nak_reasons),
            "latency_p50_ms": self.latency_ms(0.5),
            "latency_p99_ms": self.latency_ms(0.99),
            "elapsed_s": round(self.elapsed_s, 3),
        }

    def line(self) -> str:
        """One human-readable line."""
        p50, p99 = self.latency_ms(0.5), self.latency_ms(0.99)
        naks = ", ".join(f"{k} {v}" for k, v in sorted(self.nak_reasons.items()))
        return (
            f"bridges {self.bridges}: sent {self.sent}/{self.planned}, acked {self.acked}, "
            f"naked {self.naked}{f' ({naks})' if naks else ''}, timeouts {self.timeouts}, "
            f"retransmits {self.retransmits}, hello refused {self.hello_failures}, "
            f"connect failures {self.connect_failures}, "
            f"ack p50 {p50 if p50 is not None else '-'} ms, "
            f"p99 {p99 if p99 is not None else '-'} ms"
        )


# ---- one bridge ---------------------------------------------------------------------------


class SimulatedBridge:
    """One bridge on an open stream: HELLO, then one message at a time until its ACK."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        hello: Hello,
        tally: _Tally,
        *,
        timeout: float = 5.0,
        retries: int = 3,
    ) -> None:
        self.stream = stream
        self.hello = hello
        self.tally = tally
        self.timeout = timeout
        self.retries = retries
        self.armed = ArmState.DISARMED
        self.conn = BridgeConnection("bridge", bridge_id=bridge_mac(hello.serial))
        self._closed = False

    async def say_hello(self) -> bool:
        """Send HELLO; True when the receiver ACKed it."""
        reply = await self._exchange(self.hello)
        if not isinstance(reply, Ack):
            self.tally.hello_failures += 1
            if isinstance(reply, Nak):
                self.tally.nak_reasons[f"hello:{reply.reason.reason}"] += 1
            return False
        return True

    async def deliver(self, message: Event | Heartbeat | None) -> None:
        """Send one message (None: a heartbeat with the current arming state) and count it."""
        if message is None:
            message = Heartbeat(self.armed, self.hello.firmware)
        if isinstance(message, Event) and message.kind in _ARMING:
            self.armed = _ARMING[message.kind]
        self.tally.sent += 1
        started = trio.current_time()
        reply = await self._exchange(message)
        if isinstance(reply, Ack):
            self.tally.acked += 1
            self.tally.latencies_ms.append((trio.current_time() - started) * 1000.0)
        elif isinstance(reply, Nak):
            self.tally.naked += 1
            self.tally.nak_reasons[reply.reason.reason] += 1
        else:
            self.tally.timeouts += 1

    @property
    def usable(self) -> bool:
        """False once the receiver closed the connection or refused the HELLO."""
        return not self._closed and self.conn.state is not BridgeState.CLOSED

    async def _exchange(self, body: Hello | Event | Heartbeat) -> Ack | Nak | None:
        if not self.usable:
            return None
        envelope = self.conn.envelope(body, now=datetime.now(UTC))
        frame = self.conn.send(envelope)
        reply: Ack | Nak | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.tally.retransmits += 1
            try:
                await self.stream.send_all(frame)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self._closed = True
                return None
            reply = await self._await_reply(envelope.sequence)
            if reply is None and self._closed:
                return None
            if isinstance(reply, Nak) and reply.reason in RESEND_REASONS:
                continue
            if reply is not None:
                return reply
        return reply

    async def _await_reply(self, sequence: int) -> Ack | Nak | None:
        with trio.move_on_after(self.timeout):
            while True:
                event = self.conn.next_event()
                if event is NEED_DATA:
                    if self._closed:
                        return None
                    try:
                        data = await self.stream.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                        data = b""
                    self.conn.receive_data(data)
                    self._closed = not data
                    continue
                # A late ACK of an earlier transmission, or a damaged frame: keep waiting.
                if isinstance(event, Envelope):
                    body = event.body
                    if isinstance(body, Ack) and body.acked_sequence == sequence:
                        return body
                    if isinstance(body, Nak) and body.nacked_sequence == sequence:
                        return body
        return None


async def drive_bridge(
    stream: trio.abc.Stream,
    hello: Hello,
    messages: Sequence[Event | Heartbeat | None],
    *,
    timeout: float = 5.0,
    retries: int = 3,
) -> BridgeRunSummary:
    """Run one bridge's script on an open stream: HELLO, then each message in order."""
    tally = _Tally(bridges=1, planned=len(messages))
    started = trio.current_time()
    bridge = SimulatedBridge(stream, hello, tally, timeout=timeout, retries=retries)
    if await bridge.say_hello():
        for message in messages:
            if not bridge.usable:
                break
            await bridge.deliver(message)
    return tally.summary(trio.current_time() - started)


async def run_bridge(
    target: tuple[str, int],
    serial: str,
    token: str,
    channels: int,
    sends: Sequence[str],
    *,
    timeout: float = 5.0,
    retries: int = 3,
    model: str = "VB-SIM",
    firmware: str = "sim-1.0",
    allow_remote: bool = False,
) -> BridgeRunSummary:
    """Connect to ``target`` as one bridge and send ``sends`` (``--send`` words) in order.

    Raises ``InvalidInputError`` for a bad word or a non-loopback target, ``OSError`` when the
    connection cannot be opened.
    """
    check_target(target[0], allow_remote=allow_remote)
    try:
        hello = Hello(serial, model, channels, firmware, token)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    messages = [parse_send(word, channels) for word in sends]
    stream = await open_stream("bridge", *target)
    async with stream:
        return await drive_bridge(stream, hello, messages, timeout=timeout, retries=retries)


# ---- a fleet ------------------------------------------------------------------------------


@frozen(kw_only=True)
class FleetPlan:
    """The load a fleet puts on the receiver."""

    serial_prefix: str
    token: str
    channels: int = attrs.field(validator=attrs.validators.in_((4, 8, 12, 16)))
    bridges: int = attrs.field(validator=attrs.validators.in_(range(1, MAX_FLEET_BRIDGES + 1)))
    rate: float = attrs.field(validator=[ge(0.0), le(MAX_FLEET_RATE)])
    duration: float = attrs.field(validator=[gt(0.0), le(MAX_FLEET_DURATION)])
    heartbeat: float = attrs.field(default=30.0, validator=gt(0.0))
    seed: int | None = None

    def __attrs_post_init__(self) -> None:
        # The longest serial and the token must make a valid HELLO before any bridge starts.
        Hello(self.serial(self.bridges), "VB-SIM", self.channels, "sim-1.0", self.token)

    def serial(self, index: int) -> str:
        """The serial of bridge ``index`` (1-based): the prefix, a dash, four digits."""
        return f"{self.serial_prefix}-{index:04d}"


Connect = Callable[[], Awaitable[trio.abc.Stream]]


async def run_fleet_on(
    connect: Connect,
    plan: FleetPlan,
    *,
    timeout: float = 5.0,
    retries: int = 3,
    model: str = "VB-SIM",
    firmware: str = "sim-1.0",
    progress: Callable[[BridgeRunSummary], None] | None = None,
) -> BridgeRunSummary:
    """Run ``plan.bridges`` bridges for ``plan.duration`` seconds over streams from ``connect``.

    Each bridge sends a heartbeat every ``plan.heartbeat`` seconds and input alarms and
    restores (alternating per channel, random channels) so that the fleet as a whole sends
    ``plan.rate`` of them per second on average.
    """
    tally = _Tally(bridges=plan.bridges)
    started = trio.current_time()
    deadline = started + plan.duration
    limiter = trio.CapacityLimiter(CONNECT_LIMIT)
    master = random.Random(plan.seed)
    per_bridge_rate = plan.rate / plan.bridges

    async def one(index: int, rng: random.Random) -> None:
        hello = Hello(plan.serial(index), model, plan.channels, firmware, plan.token)
        try:
            async with limiter:
                stream = await connect()
        except OSError as exc:
            tally.connect_failures += 1
            tally.connect_error = str(exc)
            return
        async with stream:
            bridge = SimulatedBridge(stream, hello, tally, timeout=timeout, retries=retries)
            if not await bridge.say_hello():
                return
            in_alarm: set[int] = set()
            now = trio.current_time()
            # Spread the first heartbeats so that a fleet does not beat in lockstep.
            next_beat = now + rng.uniform(0.0, plan.heartbeat)
            next_event = now + rng.expovariate(per_bridge_rate) if per_bridge_rate else math.inf
            while bridge.usable:
                at = min(next_beat, next_event)
                if at >= deadline:
                    return
                await trio.sleep_until(at)
                if at == next_beat:
                    await bridge.deliver(None)
                    next_beat += plan.heartbeat
                else:
                    channel = rng.randint(1, plan.channels)
                    kind = EventKind.INPUT_RESTORE if channel in in_alarm else EventKind.INPUT_ALARM
                    in_alarm ^= {channel}
                    await bridge.deliver(Event(channel=channel, kind=kind))
                    next_event += rng.expovariate(per_bridge_rate)

    async def report() -> None:
        assert progress is not None
        while True:
            await trio.sleep(1.0)
            progress(tally.summary(trio.current_time() - started))

    # In-flight messages may still wait for their ACK past the duration, but never forever.
    with trio.move_on_after(plan.duration + timeout * (retries + 1) + 5.0):
        async with trio.open_nursery() as nursery:
            if progress is not None:
                nursery.start_soon(report)
            async with trio.open_nursery() as bridges:
                for index in range(1, plan.bridges + 1):
                    bridges.start_soon(one, index, random.Random(master.getrandbits(64)))
            nursery.cancel_scope.cancel()
    tally.planned = tally.sent
    return tally.summary(trio.current_time() - started)


async def run_fleet(
    target: tuple[str, int],
    plan: FleetPlan,
    *,
    timeout: float = 5.0,
    retries: int = 3,
    allow_remote: bool = False,
    progress: Callable[[BridgeRunSummary], None] | None = None,
) -> BridgeRunSummary:
    """A fleet of bridges over TCP to ``target`` (loopback unless ``allow_remote``)."""
    check_target(target[0], allow_remote=allow_remote)

    async def connect() -> trio.abc.Stream:
        return await open_stream("bridge", *target)

    return await run_fleet_on(connect, plan, timeout=timeout, retries=retries, progress=progress)


# ---- the command ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receiver-sim bridge``."""
    parser = sub.add_parser(
        "bridge",
        help="a video bridge (or a fleet of them) reporting to the receiver",
        description=(
            "Connect as a video bridge, say HELLO, send each --send in order and wait for its "
            "ACK (retransmitting on timeout). Exit 0 when all were ACKed, 1 when any was "
            "NAKed or timed out, 2 on bad arguments. Fleet mode (--bridges N --rate R "
            "--duration S) runs N bridges with heartbeats and random alarms/restores."
        ),
    )
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument("--serial", required=True, help="serial (the prefix in fleet mode)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--channels", type=int, default=4, choices=(4, 8, 12, 16))
    parser.add_argument("--model", default="VB-SIM")
    parser.add_argument("--firmware", default="sim-1.0")
    parser.add_argument(
        "--send",
        action="append",
        default=[],
        metavar="WORD",
        help=f"a message to send, in order; one of: {', '.join(SEND_WORDS)}",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an ACK")
    parser.add_argument("--retries", type=int, default=3, help="retransmissions per message")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    fleet = parser.add_argument_group("fleet mode")
    fleet.add_argument("--bridges", type=int, help=f"number of bridges (1..{MAX_FLEET_BRIDGES})")
    fleet.add_argument(
        "--rate", type=float, default=1.0, help="alarms+restores per second, all bridges"
    )
    fleet.add_argument("--duration", type=float, default=10.0, help="seconds to run")
    fleet.add_argument("--heartbeat", type=float, default=30.0, help="seconds between heartbeats")
    fleet.add_argument("--seed", type=int, help="random seed, for a repeatable load")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Run the bridge or the fleet; print the summary; exit 0, 1 or 2."""
    try:
        summary = _run(args)
    except InvalidInputError as exc:
        print(f"receiver-sim bridge: {exc}", file=sys.stderr)
        return 2
    except EndpointError as exc:
        print(f"receiver-sim bridge: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"receiver-sim bridge: cannot connect to {args.target}: {exc}", file=sys.stderr)
        return 1
    if args.bridges is not None and sys.stderr.isatty():
        print(file=sys.stderr)  # end the progress line
    print(json.dumps(summary.as_dict(), sort_keys=True) if args.json else summary.line())
    if summary.connect_failures:
        print(
            f"receiver-sim bridge: {summary.connect_error} "
            f"({summary.connect_failures} bridges not connected)",
            file=sys.stderr,
        )
    return 0 if summary.ok else 1


def _run(args: argparse.Namespace) -> BridgeRunSummary:
    target = parse_target(args.target)
    check_target(target[0], allow_remote=args.allow_remote)
    if args.timeout <= 0 or args.retries < 0:
        raise InvalidInputError("--timeout must be > 0 and --retries >= 0")
    if args.bridges is None:
        return trio.run(
            lambda: run_bridge(
                target,
                args.serial,
                args.token,
                args.channels,
                args.send,
                timeout=args.timeout,
                retries=args.retries,
                model=args.model,
                firmware=args.firmware,
                allow_remote=args.allow_remote,
            )
        )
    if args.send:
        raise InvalidInputError("--send is for one bridge; fleet mode sends its own load")
    try:
        plan = FleetPlan(
            serial_prefix=args.serial,
            token=args.token,
            channels=args.channels,
            bridges=args.bridges,
            rate=args.rate,
            duration=args.duration,
            heartbeat=args.heartbeat,
            seed=args.seed,
        )
    except ValueError as exc:
        raise InvalidInputError(f"fleet: {exc}") from None
    progress = _print_progress if sys.stderr.isatty() else None
    return trio.run(
        lambda: run_fleet(
            target,
            plan,
            timeout=args.timeout,
            retries=args.retries,
            allow_remote=args.allow_remote,
            progress=progress,
        )
    )


def _print_progress(summary: BridgeRunSummary) -> None:
    print(
        f"\r{summary.elapsed_s:6.0f} s  sent {summary.sent}  acked {summary.acked}  "
        f"naked {summary.naked}  timeouts {summary.timeouts}",
        end="",
        file=sys.stderr,
        flush=True,
    )
