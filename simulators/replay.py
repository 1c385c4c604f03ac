"""Scenario replay: a timeline of panel and bridge behaviour, or signals re-sent from a journal.

``receiver-sim replay SCENARIO.toml --target HOST:PORT [--speed F] [--dry-run]`` runs the
phases of a scenario file (format: docs/scenarios.md). ``receiver-sim replay --from-journal DB
--target HOST:PORT [--account A] [--since ISO] [--limit N]`` re-sends recorded DC-09 signals.

Rules of this module:

- Every scenario is bounded before it starts: ``max_duration`` (seconds at speed 1) and
  ``max_frames`` are required, the phases must fit inside both, and the run is cut off at
  ``max_duration / speed`` whatever happens.
- ``--speed F`` divides every time in the scenario by F (and so multiplies rates by F); the
  number of frames never changes with the speed.
- Journal replay re-encodes each recorded frame with a fresh sequence and timestamp (never
  the recorded encrypted bytes, which a receiver would refuse as stale), one frame per
  recorded frame (the events of a multi-event frame travel together again), keeping the
  recorded spacing divided by the speed and each account's order. A frame recorded
  encrypted is sent encrypted with ``--key``, the others in plain text; without ``--key``
  such a journal is refused before anything is sent (the receiver would answer DUH).
- All the panels of one run share one sequence counter per account, starting at a random
  number unless ``--sequence-start`` is given (see ``simulators.panel``).
- Panels use ``simulators.panel``; bridges ``simulators.bridge``; the automation outage runs
  ``simulators.sink.SentinelSink``. Nothing here encodes a frame by hand except the
  deliberately malformed ones.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from attrs import frozen
from attrs.validators import ge, gt, in_, le

from protocols import dc09
from protocols.contact_id import format_adm_cid
from protocols.crc import crc16_arc
from protocols.errors import (
    InvalidInputError,
    LocalProtocolError,
    RemoteProtocolError,
    StartupError,
)
from protocols.payload import ADM_CID, SIA_DCS
from protocols.sia import format_block
from protocols.signal import ContactIdView, Flag, SiaView, Signal, Source
from receiver.config import StoreConfig
from receiver.store import open_store
from receiver.store.interface import JournalStore, StoreError
from receiver.store.signal_rows import to_us
from receiver.store.sqlite_store import SqliteStore
from simulators.bridge import FleetPlan, check_target, parse_target, run_fleet
from simulators.panel import (
    NULL_TOKEN,
    PROTOCOLS,
    LoadPlan,
    PanelFleet,
    PanelLink,
    PanelOptions,
    PanelRunSummary,
    PanelTally,
    Sequences,
    Transmission,
    account_numbers,
    add_sequence_option,
    event_for,
    options_from_args,
    report_connect_failures,
)
from simulators.sink import SentinelSink

MAX_SCENARIO_FRAMES: Final = 1_000_000
MAX_SCENARIO_SECONDS: Final = 6 * 3600.0
MALFORMED_KINDS: Final = ("bad_crc", "garbage", "truncated", "unknown_token", "bad_length")
PHASE_KINDS: Final = ("traffic", "storm", "silence", "malformed", "outage", "bridges")


def _positive_int(limit: int) -> list[Callable[[Any, Any, Any], None]]:
    return [ge(1), le(limit)]


# ---- phases -------------------------------------------------------------------------------


@frozen(kw_only=True)
class PanelPhase:
    """Panels sending events (``traffic``: a steady rate; ``storm``: every panel reports
    ``events`` each within ``duration``) or NULL polls with some panels going quiet
    (``silence``: every panel polls each ``interval`` s; the first ``silent_panels`` stop at
    ``silent_at`` s into the phase)."""

    name: str
    kind: str = attrs.field(validator=in_(("traffic", "storm", "silence")))
    at: float = attrs.field(validator=ge(0.0))
    duration: float = attrs.field(validator=gt(0.0))
    panels: int = attrs.field(validator=_positive_int(100_000))
    first_account: str
    connections: int = attrs.field(default=10, validator=_positive_int(10_000))
    protocol: str = attrs.field(default="mixed", validator=in_(PROTOCOLS))
    rate: float = attrs.field(default=1.0, validator=gt(0.0))
    events: int = attrs.field(default=1, validator=_positive_int(100))
    sia: str | None = None  # storm: the SIA code every panel reports (e.g. AT, AC loss)
    cid: str | None = None  # storm: the Contact ID event, qualifier digit first (e.g. 1301)
    interval: float = attrs.field(default=60.0, validator=gt(0.0))
    silent_panels: int = attrs.field(default=0, validator=ge(0))
    silent_at: float = attrs.field(default=0.0, validator=ge(0.0))

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def frames(self) -> int:
        if self.kind == "traffic":
            return max(1, round(self.rate * self.duration))
        if self.kind == "storm":
            return self.panels * self.events
        return len(self.transmissions(1.0))

    def describe(self) -> str:
        accounts = f"{self.panels} panels from {self.first_account}"
        if self.kind == "traffic":
            return f"{accounts}, {self.frames} {self.protocol} frames at {self.rate:g}/s"
        if self.kind == "storm":
            what = f"SIA {self.sia}" if self.sia else f"CID {self.cid}" if self.cid else "events"
            return f"{accounts}, each {self.events}x {what}: {self.frames} frames"
        quiet = (
            f"; {self.silent_panels} go silent at +{self.silent_at:g} s"
            if self.silent_panels
            else ""
        )
        return f"{accounts} polling every {self.interval:g} s{quiet} ({self.frames} polls)"

    def storm_event(self, index: int) -> tuple[str, SiaView | ContactIdView]:
        if self.sia:
            return "SIA-DCS", SiaView(self.sia, "")
        if self.cid:
            return "ADM-CID", ContactIdView.from_digit(self.cid[0], self.cid[1:4])
        return event_for(index, self.protocol)

    def transmissions(self, speed: float) -> list[Transmission]:
        """Every frame of the phase, times relative to the phase start, divided by ``speed``."""
        accounts = account_numbers(self.first_account, self.panels)
        if self.kind == "traffic":
            plan = LoadPlan(
                accounts=accounts,
                count=self.frames,
                connections=1,
                rate=self.rate * speed,
                protocol=self.protocol,
            )
            return list(plan.lane(0))
        out: list[Transmission] = []
        if self.kind == "storm":
            total = self.frames
            for index in range(total):
                token, event = self.storm_event(index)
                at = index * self.duration / total / speed
                out.append(Transmission(at, accounts[index % self.panels], token, event))
            return out
        for number, account in enumerate(accounts):
            stop = self.silent_at if number < self.silent_panels else self.duration
            # Panels poll out of step: each starts at its own offset within the interval.
            poll = self.interval * (number + 0.5) / self.panels
            while poll < min(stop, self.duration):
                out.append(Transmission(poll / speed, account, NULL_TOKEN))
                poll += self.interval
        out.sort(key=lambda t: t.at)
        return out

    def lanes(self, speed: float) -> list[list[Transmission]]:
        items = self.transmissions(speed)
        count = min(self.connections, len(items)) or 1
        return [items[i::count] for i in range(count)]


@frozen(kw_only=True)
class MalformedPhase:
    """``count`` bad frames at ``rate``/s, each followed by a NULL poll for ``account`` that
    must still be ACKed (a bad frame must not cost the good one sharing its read)."""

    name: str
    kind: str = attrs.field(validator=in_(("malformed",)))
    at: float = attrs.field(validator=ge(0.0))
    count: int = attrs.field(validator=_positive_int(100_000))
    rate: float = attrs.field(default=10.0, validator=gt(0.0))
    account: str = "1234"
    variants: tuple[str, ...] = attrs.field(
        default=MALFORMED_KINDS,
        converter=tuple,
        validator=attrs.validators.deep_iterable(in_(MALFORMED_KINDS)),
    )

    @property
    def duration(self) -> float:
        return self.count / self.rate

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def frames(self) -> int:
        return 2 * self.count

    def describe(self) -> str:
        return (
            f"{self.count} malformed frames ({', '.join(self.variants)}) at {self.rate:g}/s, "
            f"each chased by a NULL poll from {self.account}"
        )

    def bad_frame(self, index: int, sequence: int | None = None) -> bytes:
        """The ``index``-th bad frame, numbered ``sequence`` (default: from the index). The
        bad-length one is accepted and stored, so a run gives it its own sequence."""
        variant = self.variants[index % len(self.variants)]
        sequence = index % 9999 + 1 if sequence is None else sequence
        good = dc09.encode_frame(
            "SIA-DCS", sequence, self.account, f"#{self.account}|NRP", line="0"
        )
        if variant == "bad_crc":
            return good[:1] + (b"0000" if good[1:5] != b"0000" else b"1111") + good[5:]
        if variant == "garbage":
            return b"F#123456\r\n\x00\xff junk"  # a Galaxy "SIA over IP" flood line
        if variant == "truncated":
            return good[: len(good) // 2]
        if variant == "unknown_token":
            span = f'"XYZ"{sequence:04d}L0#{self.account}[]'.encode()
            return b"\n%04X%04X%s\r" % (crc16_arc(span), len(span), span)
        return good[:5] + b"0FFF" + good[9:]  # bad_length: CRC good, length wrong


@frozen(kw_only=True)
class OutagePhase:
    """The automation platform (a Sentinel sink on ``listen``) down for ``duration`` seconds
    from ``at``, up before and after. The receiver's Sentinel output must point at it."""

    name: str
    kind: str = attrs.field(validator=in_(("outage",)))
    at: float = attrs.field(validator=ge(0.0))
    duration: float = attrs.field(validator=gt(0.0))
    listen: str = "127.0.0.1:9300"
    out: str = "var/replay-sink"

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def frames(self) -> int:
        return 0

    def describe(self) -> str:
        return f"automation sink on {self.listen} down, then back (packages to {self.out})"


@frozen(kw_only=True)
class BridgePhase:
    """A fleet of video bridges (``simulators.bridge``) on the bridge port (``--bridge-target``)."""

    name: str
    kind: str = attrs.field(validator=in_(("bridges",)))
    at: float = attrs.field(validator=ge(0.0))
    duration: float = attrs.field(validator=gt(0.0))
    bridges: int = attrs.field(validator=_positive_int(10_000))
    rate: float = attrs.field(default=1.0, validator=ge(0.0))
    token: str = "sim-token"  # noqa: S105 - the bridges' enrolment token in a test scenario
    serial_prefix: str = "SIM"
    channels: int = 4
    heartbeat: float = 30.0

    @property
    def end(self) -> float:
        return self.at + self.duration

    @property
    def frames(self) -> int:
        return round(self.rate * self.duration + self.bridges * self.duration / self.heartbeat)

    def describe(self) -> str:
        return (
            f"{self.bridges} bridges ({self.serial_prefix}-NNNN), {self.rate:g} alarms/s, "
            f"heartbeat {self.heartbeat:g} s"
        )


Phase = PanelPhase | MalformedPhase | OutagePhase | BridgePhase


def phase_from_table(table: Mapping[str, Any], number: int) -> Phase:
    """One ``[[phase]]`` table as a Phase; InvalidInputError names the phase and the problem."""
    data = dict(table)
    kind = data.get("kind")
    data.setdefault("name", f"phase {number} ({kind})")
    cls: type[Phase]
    if kind in ("traffic", "storm", "silence"):
        cls = PanelPhase
    elif kind == "malformed":
        cls = MalformedPhase
    elif kind == "outage":
        cls = OutagePhase
    elif kind == "bridges":
        cls = BridgePhase
    else:
        raise InvalidInputError(f"phase {number}: kind must be one of {', '.join(PHASE_KINDS)}")
    fields = {a.name: a for a in attrs.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise InvalidInputError(
            f"phase {number} ({kind}): unknown keys {', '.join(sorted(unknown))}"
        )
    missing = [n for n, a in fields.items() if a.default is attrs.NOTHING and n not in data]
    if missing:
        raise InvalidInputError(
            f"phase {number} ({kind}): {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} required"
        )
    for name, value in data.items():
        _check_type(f"phase {number} ({kind}): {name}", str(fields[name].type), value)
    try:
        return cls(**data)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"phase {number} ({kind}): {exc}") from None


def _check_type(what: str, annotation: str, value: object) -> None:
    """Refuse a TOML value of the wrong type with the key's name (attrs would not say it)."""
    if annotation == "float":
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        expected = "a number"
    elif annotation == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "a whole number"
    elif annotation in ("str", "str | None"):
        ok = isinstance(value, str)
        expected = "a string"
    elif annotation.startswith("tuple[str"):
        ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
        expected = "a list of strings"
    else:  # pragma: no cover - every phase field has one of the types above
        return
    if not ok:
        raise InvalidInputError(f"{what} must be {expected}, got {value!r}")


@frozen(kw_only=True)
class Scenario:
    """A bounded timeline of phases."""

    name: str
    description: str = ""
    max_duration: float = attrs.field(validator=[gt(0.0), le(MAX_SCENARIO_SECONDS)])
    max_frames: int = attrs.field(validator=_positive_int(MAX_SCENARIO_FRAMES))
    phases: tuple[Phase, ...]

    def __attrs_post_init__(self) -> None:
        if not self.phases:
            raise InvalidInputError(f"scenario {self.name!r} has no [[phase]]")
        late = [p.name for p in self.phases if p.end > self.max_duration]
        if late:
            raise InvalidInputError(
                f"scenario {self.name!r}: phase {late[0]!r} ends after max_duration "
                f"{self.max_duration:g} s"
            )
        if self.frames > self.max_frames:
            raise InvalidInputError(
                f"scenario {self.name!r}: phases add up to {self.frames} frames, more than "
                f"max_frames {self.max_frames}"
            )

    @property
    def frames(self) -> int:
        return sum(p.frames for p in self.phases)

    @classmethod
    def from_toml(cls, text: str, *, name: str = "scenario") -> Scenario:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInputError(f"scenario is not valid TOML: {exc}") from None
        tables = data.pop("phase", [])
        if not isinstance(tables, list):
            raise InvalidInputError("phases are [[phase]] tables")
        phases = tuple(phase_from_table(t, n) for n, t in enumerate(tables, 1))
        unknown = set(data) - {"name", "description", "max_duration", "max_frames"}
        if unknown:
            raise InvalidInputError(f"scenario: unknown keys {', '.join(sorted(unknown))}")
        for required in ("max_duration", "max_frames"):
            if required not in data:
                raise InvalidInputError(f"scenario: {required} is required (every run is bounded)")
        _check_type("scenario: max_duration", "float", data["max_duration"])
        _check_type("scenario: max_frames", "int", data["max_frames"])
        try:
            return cls(
                name=str(data.get("name", name)),
                description=str(data.get("description", "")),
                max_duration=data["max_duration"],
                max_frames=data["max_frames"],
                phases=phases,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"scenario: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Scenario:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInputError(f"cannot read scenario {path}: {exc.strerror}") from None
        return cls.from_toml(text, name=Path(path).stem)

    def timeline(self, speed: float = 1.0) -> list[str]:
        """The ``--dry-run`` listing: one line per phase, in start order, times at ``speed``."""
        lines = [
            f"scenario {self.name}: {len(self.phases)} phases, {self.frames} frames, "
            f"at most {self.max_duration / speed:g} s at speed {speed:g}"
        ]
        if self.description:
            lines.append(f"  {self.description}")
        for phase in sorted(self.phases, key=lambda p: p.at):
            lines.append(
                f"  {phase.at / speed:8.1f} s .. {phase.end / speed:8.1f} s  "
                f"{phase.kind:<9} {phase.name}: {phase.describe()}"
            )
        return lines


# ---- running a scenario -------------------------------------------------------------------


@attrs.define
class PhaseReport:
    name: str
    kind: str
    outcome: dict[str, object]


async def _malformed(
    phase: MalformedPhase,
    target: tuple[str, int],
    options: PanelOptions,
    speed: float,
    sequences: Sequences,
) -> dict[str, object]:
    tally = PanelTally(accounts=1, planned=phase.count)
    fleet = PanelFleet(target, options, tally, sequences=sequences)
    link = PanelLink(target, udp=options.udp)
    start = trio.current_time()
    sent = 0
    try:
        for index in range(phase.count):
            await trio.sleep_until(start + index / phase.rate / speed)
            if not link.is_open:
                await link.open()
            # Bad frame and poll go out in one write, so they share the receiver's read.
            poll = fleet.encode(
                Transmission(0, phase.account, NULL_TOKEN), fleet.next_sequence(phase.account)
            )
            bad = phase.bad_frame(index, fleet.next_sequence(phase.account))
            if await link.send(bad + poll):
                sent += 1
            await fleet.deliver(link, Transmission(0, phase.account, NULL_TOKEN))
    finally:
        await link.aclose()
    summary = tally.summary(trio.current_time() - start)
    return {"malformed_sent": sent, "polls_acked": summary.acked, "polls": summary.sent}


async def run_scenario(
    scenario: Scenario,
    target: tuple[str, int],
    options: PanelOptions,
    *,
    speed: float = 1.0,
    bridge_target: tuple[str, int] | None = None,
    allow_remote: bool = False,
) -> list[PhaseReport]:
    """Run every phase at its time (divided by ``speed``); a report per phase, in file order."""
    if speed <= 0:
        raise InvalidInputError("--speed must be > 0")
    check_target(target[0], allow_remote=allow_remote)
    if bridge_target is not None:
        check_target(bridge_target[0], allow_remote=allow_remote)
    reports: dict[int, PhaseReport] = {}
    sequences = Sequences.for_run(options)
    outages = [(i, p) for i, p in enumerate(scenario.phases) if isinstance(p, OutagePhase)]
    active = [(i, p) for i, p in enumerate(scenario.phases) if not isinstance(p, OutagePhase)]
    start = trio.current_time()

    async def one(index: int, phase: Phase) -> None:
        await trio.sleep_until(start + phase.at / speed)
        outcome: dict[str, object]
        if isinstance(phase, PanelPhase):
            lanes = phase.lanes(speed)
            tally = PanelTally(accounts=phase.panels, planned=sum(len(lane) for lane in lanes))
            fleet = PanelFleet(target, options, tally, sequences=sequences)
            outcome = (await fleet.run(lanes)).as_dict()
        elif isinstance(phase, MalformedPhase):
            outcome = await _malformed(phase, target, options, speed, sequences)
        elif isinstance(phase, BridgePhase):
            if bridge_target is None:
                outcome = {"skipped": "no --bridge-target given"}
            else:
                plan = FleetPlan(
                    serial_prefix=phase.serial_prefix,
                    token=phase.token,
                    channels=phase.channels,
                    bridges=phase.bridges,
                    rate=phase.rate * speed,
                    duration=phase.duration / speed,
                    heartbeat=phase.heartbeat / speed,
                )
                outcome = (
                    await run_fleet(bridge_target, plan, allow_remote=allow_remote)
                ).as_dict()
        else:  # pragma: no cover - outages run beside the others
            return
        reports[index] = PhaseReport(phase.name, phase.kind, outcome)

    async def outage(index: int, phase: OutagePhase) -> None:
        host, _, port = phase.listen.rpartition(":")
        sink = SentinelSink(Path(phase.out))
        async with trio.open_nursery() as up:
            await up.start(sink.serve, host, int(port))
            await trio.sleep_until(start + phase.at / speed)
            up.cancel_scope.cancel()
        await trio.sleep_until(start + phase.end / speed)
        reports[index] = PhaseReport(
            phase.name, phase.kind, {"packages_before_outage": sink.packages}
        )
        async with trio.open_nursery() as again:
            await again.start(sink.serve, host, int(port))
            await trio.sleep_forever()

    with trio.move_on_after(scenario.max_duration / speed):
        async with trio.open_nursery() as services:
            for index, outage_phase in outages:
                services.start_soon(outage, index, outage_phase)
            async with trio.open_nursery() as nursery:
                for index, phase in active:
                    nursery.start_soon(one, index, phase)
            services.cancel_scope.cancel()
    for index, any_phase in enumerate(scenario.phases):
        reports.setdefault(index, PhaseReport(any_phase.name, any_phase.kind, {"cut_off": True}))
    return [reports[i] for i in range(len(scenario.phases))]


# ---- replay from a journal -----------------------------------------------------------------


@frozen
class RecordedFrame:
    """One frame as a journal recorded it, ready to be sent again."""

    received_us: int
    account: str
    receiver: str | None
    line: str | None
    token: str
    data: str
    encrypted: bool = False


def _data_block(signals: Sequence[Signal], key: bytes | None) -> str | None:
    """The data block of a recorded frame: decoded from its raw bytes where possible, else
    rebuilt from the signals' views (an encrypted frame without its key)."""
    first = signals[0]
    if first.raw:
        window = dc09.TimestampWindow(policy="flag")
        try:
            return dc09.decode_frame(first.raw, key=key, now=first.received_at, window=window).data
        except RemoteProtocolError:
            pass
    try:
        if first.token == ADM_CID and first.cid is not None:
            return format_adm_cid(first.account, first.cid)
        if first.token == SIA_DCS:
            views = [s.sia for s in signals if s.sia is not None]
            return format_block(first.account, views) if views else None
    except (ValueError, RemoteProtocolError, LocalProtocolError):
        return None
    return None


def open_journal(source: str | Path) -> JournalStore:
    """The journal to read: a ``postgresql://`` URL, else a receiver's SQLite file (which must
    exist: reading never creates one)."""
    text = str(source)
    if text.startswith(("postgresql://", "postgres://")):
        try:
            return open_store(StoreConfig(url=text))
        except StartupError as exc:
            raise InvalidInputError(str(exc)) from None
    if not Path(text).exists():
        raise InvalidInputError(f"no journal at {text}")
    return SqliteStore(text, create=False)


# Journal rows read per call while looking for frames.
_READ_CHUNK = 2000


def recorded_frames(
    source: str | Path | JournalStore,
    *,
    accounts: Iterable[str] = (),
    since: datetime | None = None,
    limit: int = 10_000,
    key: bytes | None = None,
) -> tuple[list[RecordedFrame], int]:
    """DC-09 frames from a receiver's journal, oldest first, and how many could not be rebuilt.

    The journal is read through the store's read side (``read_after``, in journal order), from
    a store, a SQLite file or a PostgreSQL URL. Signals that came from the same frame (same raw
    bytes, same receive time) become one frame.
    """
    store = open_journal(source) if isinstance(source, str | Path) else source
    wanted = {a.strip().upper() for a in accounts}
    groups: list[list[Signal]] = []
    seq = 0
    try:
        while len(groups) <= limit:
            batch = store.read_after(seq, _READ_CHUNK)
            if not batch:
                break
            seq = batch[-1][0]
            for _, signal in batch:
                if signal.source is not Source.DC09:
                    continue
                if since is not None and signal.received_at < since:
                    continue
                if wanted and not (
                    signal.account.upper() in wanted or signal.effective_account in wanted
                ):
                    continue
                previous = groups[-1][0] if groups else None
                if (
                    previous is not None
                    and signal.raw
                    and previous.raw == signal.raw
                    and previous.received_at == signal.received_at
                ):
                    groups[-1].append(signal)
                    continue
                groups.append([signal])
    except (sqlite3.Error, StoreError, StartupError) as exc:
        raise InvalidInputError(f"cannot read journal {source}: {exc}") from None
    finally:
        if isinstance(source, str | Path):
            store.close()
    groups = groups[:limit]
    keyless = sorted({g[0].account for g in groups if _encrypted(g[0])}) if key is None else []
    if keyless:
        more = f" and {len(keyless) - 3} more" if len(keyless) > 3 else ""
        raise InvalidInputError(
            f"account{'s' if len(keyless) > 1 else ''} {', '.join(keyless[:3])}{more} "
            "reported encrypted: give the key with --key (and --key-format) to re-send "
            "those frames, or leave them out with --account"
        )
    frames: list[RecordedFrame] = []
    skipped = 0
    for signals in groups:
        data = _data_block(signals, key)
        first = signals[0]
        if data is None or first.token not in (SIA_DCS, ADM_CID):
            skipped += 1
            continue
        frames.append(
            RecordedFrame(
                to_us(first.received_at),
                first.account,
                first.receiver_no,
                first.line,
                first.token,
                data,
                _encrypted(first),
            )
        )
    return frames, skipped


# Frames that share a connection's fields: receiver number, line number, encrypted or not.
_Route = tuple[str | None, str | None, bool]


def _encrypted(signal: Signal) -> bool:
    return Flag.ENCRYPTED in signal.flags


async def replay_journal(
    frames: Sequence[RecordedFrame],
    target: tuple[str, int],
    options: PanelOptions,
    *,
    speed: float = 1.0,
    connections: int = 50,
    allow_remote: bool = False,
) -> PanelRunSummary:
    """Re-send ``frames`` with their recorded spacing divided by ``speed`` (0: no spacing).

    Each account stays on one connection, so its frames arrive in the recorded order. Frames
    recorded with other receiver/line fields than ``options`` keep their own; frames recorded
    in plain text are sent in plain text, encrypted ones with ``options.key``.
    """
    check_target(target[0], allow_remote=allow_remote)
    tally = PanelTally(accounts=len({f.account for f in frames}), planned=len(frames))
    if not frames:
        return tally.summary(0.0)
    if options.key is None and any(f.encrypted for f in frames):
        raise InvalidInputError("frames recorded encrypted need --key to be re-sent")
    first_us = frames[0].received_us
    sequences = Sequences.for_run(options)
    by_route: dict[_Route, dict[str, list[Transmission]]] = {}
    for frame in frames:
        at = (frame.received_us - first_us) / 1e6 / speed if speed > 0 else 0.0
        lanes = by_route.setdefault((frame.receiver, frame.line, frame.encrypted), {})
        lanes.setdefault(frame.account, []).append(
            Transmission(at, frame.account, frame.token, frame.data)
        )
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        for (receiver, line, encrypted), per_account in by_route.items():
            route_options = attrs.evolve(
                options, receiver=receiver, line=line, key=options.key if encrypted else None
            )
            fleet = PanelFleet(target, route_options, tally, sequences=sequences)
            merged: list[list[Transmission]] = [
                [] for _ in range(min(connections, len(per_account)))
            ]
            for number, items in enumerate(per_account.values()):
                merged[number % len(merged)].extend(items)
            for lane in merged:
                lane.sort(key=lambda t: t.at)
            nursery.start_soon(fleet.run, merged)
    return tally.summary(trio.current_time() - started)


# ---- the command ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receiver-sim replay``."""
    parser = sub.add_parser(
        "replay",
        help="run a scenario file, or re-send signals recorded in a receiver's journal",
        description=(
            "Run SCENARIO (a TOML timeline, see docs/scenarios.md) against the receiver, or "
            "with --from-journal re-send recorded DC-09 signals with fresh sequences and "
            "timestamps. Exit 0 when every frame was ACKed, 1 otherwise, 2 on bad input."
        ),
    )
    parser.add_argument("scenario", nargs="?", metavar="SCENARIO", help="scenario file (TOML)")
    parser.add_argument("--target", metavar="HOST:PORT", help="the receiver's DC-09 port")
    parser.add_argument("--bridge-target", metavar="HOST:PORT", help="the receiver's bridge port")
    parser.add_argument(
        "--speed", type=float, default=1.0, help="time compression factor (journal: 0 = no gaps)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the timeline and stop")
    parser.add_argument("--key", help="AES key for the panels (encrypted frames)")
    parser.add_argument("--key-format", choices=("hex", "ascii"), default="hex")
    parser.add_argument("--udp", action="store_true", help="one datagram per frame")
    parser.add_argument("--receiver", help="the R field (omitted by default)")
    parser.add_argument("--line", default="0", help="the L field (default 0)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
    parser.add_argument("--retries", type=int, default=3, help="retransmissions per frame")
    add_sequence_option(parser)
    parser.add_argument("--json", action="store_true", help="print the outcome as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    journal = parser.add_argument_group("replay from a journal")
    journal.add_argument(
        "--from-journal",
        metavar="STORE",
        help="a receiver's store: its SQLite file or its postgresql:// URL",
    )
    journal.add_argument("--account", action="append", default=[], help="only this account")
    journal.add_argument("--since", help="only signals received at or after (ISO 8601, UTC)")
    journal.add_argument("--limit", type=int, default=10_000, help="at most N frames")
    journal.add_argument("--connections", type=int, default=50, help="connections at most")
    parser.set_defaults(handler=handle)


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"--since {text!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def handle(args: argparse.Namespace) -> int:
    """Run the scenario or the journal replay; exit 0, 1 or 2."""
    try:
        return _handle(args)
    except InvalidInputError as exc:
        print(f"receiver-sim replay: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"receiver-sim replay: {exc}", file=sys.stderr)
        return 1


def _handle(args: argparse.Namespace) -> int:
    if args.speed < 0 or (args.speed == 0 and args.from_journal is None):
        raise InvalidInputError("--speed must be > 0 (0, no spacing, only with --from-journal)")
    if (args.scenario is None) == (args.from_journal is None):
        raise InvalidInputError("give either SCENARIO or --from-journal DB")
    if args.scenario is not None:
        scenario = Scenario.load(args.scenario)
        if args.dry_run:
            print("\n".join(scenario.timeline(args.speed)))
            return 0
    options = options_from_args(args)
    if args.from_journal is not None:
        frames, skipped = recorded_frames(
            args.from_journal,
            accounts=args.account,
            since=_since(args.since),
            limit=args.limit,
            key=options.key,
        )
        if args.dry_run:
            print(f"{len(frames)} frames to re-send, {skipped} could not be rebuilt")
            return 0
    if args.target is None:
        raise InvalidInputError("--target HOST:PORT is required")
    target = parse_target(args.target)
    check_target(target[0], allow_remote=args.allow_remote)
    if args.from_journal is not None:
        summary = trio.run(
            lambda: replay_journal(
                frames,
                target,
                options,
                speed=args.speed,
                connections=args.connections,
                allow_remote=args.allow_remote,
            )
        )
        out = summary.as_dict() | {"skipped": skipped}
        print(
            json.dumps(out, sort_keys=True) if args.json else f"{summary.line()}, skipped {skipped}"
        )
        report_connect_failures("receiver-sim replay", summary)
        return 0 if summary.ok else 1
    bridge_target = parse_target(args.bridge_target) if args.bridge_target else None
    reports = trio.run(
        lambda: run_scenario(
            scenario,
            target,
            options,
            speed=args.speed,
            bridge_target=bridge_target,
            allow_remote=args.allow_remote,
        )
    )
    ok = True
    for report in reports:
        outcome = report.outcome
        if outcome.get("ok") is False or outcome.get("cut_off"):
            ok = False
        if report.kind == "malformed" and outcome["polls_acked"] != outcome["polls"]:
            ok = False
    if args.json:
        print(json.dumps([attrs.asdict(r) for r in reports], sort_keys=True))
    else:
        for report in reports:
            fields = ", ".join(f"{k} {v}" for k, v in report.outcome.items())
            print(f"{report.kind:<9} {report.name}: {fields}")
    return 0 if ok else 1
