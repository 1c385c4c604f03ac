"""Simulated alarm panels: a fleet speaking DC-09 to the receiver through ``protocols.dc09``.

Rules of this module:

- A panel is stop-and-wait, as real diallers are: one frame in flight per connection, and each
  frame waits for its reply. No reply within ``timeout`` (or no connection): the same bytes
  are sent again (same sequence), up to ``retries`` times. A DUH is final (the receiver cannot
  process it, resending would not help).
- A NAK carrying a time that differs from the panel's clock (by more than
  ``CLOCK_TOLERANCE_S``) corrects that account's clock offset, and the frame is rebuilt with
  the same sequence and a fresh timestamp. A NAK whose time agrees with the panel's clock is
  not about the clock: the receiver could not decrypt the frame (wrong key). It is final and
  counted as ``naks_wrong_key``; resending it would get the same NAK.
- Each frame ends in exactly one outcome: acked, naked, duh, timeout, or connect failure (no
  connection could be opened for its last attempt). Retransmissions, NAK replies seen along
  the way and clock corrections are counted beside them.
- Sequence numbers are per account (0001..9999, wrapping), shared by every connection that
  reports for the account, so two connections never send the same (account, sequence, data).
  A run starts from a random sequence (or ``sequence_start``): a second run within the
  receiver's duplicate window must not send the first run's (account, sequence, data) again,
  which the receiver would ACK and absorb as duplicates.
- A backup receiver path (``--backup``), as DC-09 panels have: a connection whose receiver stops
  answering (no reply within ``timeout``, the connection refused or closed) sends that frame's
  next attempt to the other path, with the same sequence (a receiver that did store it absorbs
  the retry as a duplicate). It then stays on the path that answers, and goes back to the other
  one only when this one stops answering in turn (the panel does not probe its primary while
  the backup serves; a real dialler's periodic primary test is not simulated). A NAK or DUH is
  an answer: it never switches. The summary counts the frames ACKed on each path.
- Loopback only unless ``allow_remote``; every run is bounded in frames
  (``MAX_FRAMES``) and connections (``MAX_CONNECTIONS``).
- Field quirks are sent only on request (``PanelQuirks``): binary CRC, a data block without
  ``#`` before the account, lower-case accounts.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

import attrs
import trio
from attrs import frozen
from attrs.validators import ge, gt, in_, le, optional

from protocols import dc09
from protocols.contact_id import format_adm_cid
from protocols.errors import InvalidInputError, RemoteProtocolError, Reply
from protocols.sia import format_block
from protocols.signal import ContactIdView, SiaView
from simulators.bridge import check_target, parse_target
from simulators.endpoints import open_stream, reason, where

MAX_FRAMES: Final = 10_000_000
MAX_CONNECTIONS: Final = 20_000
MAX_ACCOUNTS: Final = 1_000_000
CONNECT_LIMIT: Final = 64  # concurrent TCP connects while a fleet starts
CLOCK_TOLERANCE_S: Final = 2.0  # a NAK's time has whole seconds, and the reply takes a while
MAX_SEQUENCE: Final = 9999
NULL_TOKEN: Final = "NULL"  # noqa: S105 - the DC-09 link-test token, not a secret
PROTOCOLS: Final = ("sia", "cid", "mixed")
QUIRKS: Final = ("binary-crc", "no-hash", "lower-account")

# What a fleet reports: burglary, fire, AC, opening/closing pairs, in both languages.
SIA_EVENTS: Final = (
    SiaView("BA", "001"),
    SiaView("BR", "001"),
    SiaView("FA", "002"),
    SiaView("FR", "002"),
    SiaView("AT", ""),
    SiaView("AR", ""),
    SiaView("OP", "001", (("id", "1"),)),
    SiaView("CL", "001", (("id", "1"),)),
)
CID_EVENTS: Final = (
    ContactIdView("E", "130", "01", "001"),
    ContactIdView("R", "130", "01", "001"),
    ContactIdView("E", "110", "01", "002"),
    ContactIdView("R", "110", "01", "002"),
    ContactIdView("E", "301", "00", "000"),
    ContactIdView("R", "301", "00", "000"),
    ContactIdView("E", "401", "01", "001"),
    ContactIdView("R", "401", "01", "001"),
)

Content = SiaView | ContactIdView | str | None


@frozen
class Transmission:
    """One frame a panel will send: ``at`` seconds after the run starts (0: as soon as it can).

    ``content`` is the event (a SiaView for SIA-DCS, a ContactIdView for ADM-CID), a data block
    already written out (str, sent verbatim; journal replay uses it), or None (NULL poll).
    """

    at: float
    account: str
    token: str
    content: Content = None


@frozen(kw_only=True)
class PanelQuirks:
    """Field deviations to send on purpose (field-issues.md §3, §7, §8)."""

    binary_crc: bool = False
    no_hash: bool = False
    lower_account: bool = False

    @classmethod
    def from_words(cls, words: Iterable[str]) -> PanelQuirks:
        chosen = set(words)
        unknown = chosen - set(QUIRKS)
        if unknown:
            raise InvalidInputError(
                f"unknown quirk {sorted(unknown)[0]!r}; use one of {', '.join(QUIRKS)}"
            )
        return cls(
            binary_crc="binary-crc" in chosen,
            no_hash="no-hash" in chosen,
            lower_account="lower-account" in chosen,
        )


@frozen(kw_only=True)
class PanelOptions:
    """How every panel of a run talks: key, transport, retries, clock, quirks."""

    key: bytes | None = None
    udp: bool = False
    timeout: float = attrs.field(default=5.0, validator=gt(0.0))
    retries: int = attrs.field(default=3, validator=[ge(0), le(100)])
    skew: float = 0.0  # seconds the panels' clocks are off at the start
    receiver: str | None = None
    line: str | None = "0"
    quirks: PanelQuirks = PanelQuirks()
    sequence_start: int | None = attrs.field(
        default=None, validator=optional([ge(1), le(MAX_SEQUENCE)])
    )


class Sequences:
    """DC-09 sequence numbers per account, 0001..9999 wrapping, each account's first one
    ``start``; shared by the fleets of one run so that they never repeat each other."""

    def __init__(self, start: int) -> None:
        if not 1 <= start <= MAX_SEQUENCE:
            raise InvalidInputError(f"--sequence-start must be 1..{MAX_SEQUENCE}, got {start}")
        self.start = start
        self._last: dict[str, int] = {}

    @classmethod
    def for_run(cls, options: PanelOptions, rand: Callable[[int], bytes] = os.urandom) -> Sequences:
        """From ``options.sequence_start``, else from a random start."""
        if options.sequence_start is not None:
            return cls(options.sequence_start)
        return cls(int.from_bytes(rand(2), "big") % MAX_SEQUENCE + 1)

    def next(self, account: str) -> int:
        value = self._last.get(account, self.start - 1) % MAX_SEQUENCE + 1
        self._last[account] = value
        return value


# ---- the summary --------------------------------------------------------------------------


@attrs.define
class PanelTally:
    """Counts shared by the panels of one run (one trio thread: no locking needed)."""

    accounts: int = 0
    connections: int = 0
    planned: int = 0
    sent: int = 0
    polls: int = 0
    acked: int = 0
    acked_events: int = 0
    naked: int = 0
    duh: int = 0
    timeouts: int = 0
    connect_failures: int = 0
    retransmits: int = 0
    nak_replies: int = 0
    naks_wrong_key: int = 0
    clock_corrections: int = 0
    bad_replies: int = 0
    connect_error: str | None = None
    latencies_ms: list[float] = attrs.Factory(list)
    # With a backup path: ACKed frames per path ("HOST:PORT"), and switches between paths.
    acked_at: dict[str, int] = attrs.Factory(dict)
    switches: int = 0

    def summary(self, elapsed_s: float) -> PanelRunSummary:
        fields = attrs.asdict(self, recurse=False)
        fields["latencies_ms"] = tuple(self.latencies_ms)
        fields["acked_at"] = tuple(sorted(self.acked_at.items()))
        return PanelRunSummary(**fields, elapsed_s=elapsed_s)


@frozen(kw_only=True)
class PanelRunSummary:
    """What a run did. ``sent`` counts the frames taken up (NULL polls included, ``polls`` of
    them); ``acked + naked + duh + timeouts + connect_failures == sent`` once the run is over;
    ``acked_events`` counts ACKed frames that carried events (what the journal should hold,
    one row per event). ``naks_wrong_key`` counts the naked frames whose NAK carried the
    panel's own time (not a clock problem: a wrong key); ``connect_error`` is the last reason
    a connection could not be opened. With a backup path, ``acked_at`` holds the frames ACKed
    on each path (``HOST:PORT``) and ``switches`` how often a connection changed path.
    """

    accounts: int
    connections: int
    planned: int
    sent: int
    polls: int
    acked: int
    acked_events: int
    naked: int
    duh: int
    timeouts: int
    connect_failures: int
    retransmits: int
    nak_replies: int
    naks_wrong_key: int
    clock_corrections: int
    bad_replies: int
    connect_error: str | None
    latencies_ms: tuple[float, ...]
    elapsed_s: float
    acked_at: tuple[tuple[str, int], ...] = ()
    switches: int = 0

    @property
    def ok(self) -> bool:
        """Every planned frame was sent and ACKed."""
        return self.acked == self.planned == self.sent

    @property
    def events_per_s(self) -> float:
        return self.acked / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def latency_ms(self, fraction: float) -> float | None:
        """ACK latency at ``fraction`` (0.5 = median), nearest rank; None without ACKs."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return round(ordered[rank - 1], 3)

    def as_dict(self) -> dict[str, object]:
        """The ``--json`` summary."""
        out = attrs.asdict(self, recurse=False)
        del out["latencies_ms"]
        out["acked_at"] = dict(self.acked_at)
        out["elapsed_s"] = round(self.elapsed_s, 3)
        out["ok"] = self.ok
        out["events_per_s"] = round(self.events_per_s, 1)
        for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)):
            out[f"latency_{name}_ms"] = self.latency_ms(fraction)
        return out

    def line(self) -> str:
        """The human-readable summary."""

        def ms(fraction: float) -> str:
            value = self.latency_ms(fraction)
            return "-" if value is None else f"{value}"

        paths = ""
        if self.acked_at or self.switches:
            counts = ", ".join(f"{count} at {path}" for path, count in self.acked_at)
            paths = f", acked {counts or 'none'} (path switches {self.switches})"
        return (
            f"panels {self.accounts} on {self.connections} connections: "
            f"sent {self.sent}/{self.planned} (polls {self.polls}), acked {self.acked}, "
            f"naked {self.naked}, duh {self.duh}, timeouts {self.timeouts}, "
            f"connect failures {self.connect_failures}, retransmits {self.retransmits}, "
            f"naks (wrong key?) {self.naks_wrong_key}, "
            f"clock corrections {self.clock_corrections}, "
            f"{self.events_per_s:.1f} events/s, ack p50 {ms(0.5)} ms, p90 {ms(0.9)} ms, "
            f"p99 {ms(0.99)} ms, max {ms(1.0)} ms{paths}"
        )


# ---- links: one TCP connection or one UDP socket ------------------------------------------


class PanelLink:
    """A panel's path to the receiver: send a frame, read replies until a deadline."""

    def __init__(
        self, target: tuple[str, int], *, udp: bool, backup: tuple[str, int] | None = None
    ) -> None:
        self.target = target
        self.other = backup
        self.udp = udp
        self._stream: trio.abc.Stream | None = None
        self._socket: trio.socket.SocketType | None = None
        self._splitter = dc09.FrameSplitter()

    async def open(self) -> None:
        if self.udp:
            family = socket.AF_INET6 if ":" in self.target[0] else socket.AF_INET
            sock = trio.socket.socket(family, socket.SOCK_DGRAM)
            await sock.connect(self.target)
            self._socket = sock
        else:
            self._stream = await open_stream("panel", *self.target)
            self._splitter = dc09.FrameSplitter()

    @property
    def path(self) -> str:
        return where(*self.target)

    async def switch(self) -> bool:
        """Close this path and take the other one for the next attempt; False without one."""
        if self.other is None:
            return False
        await self.aclose()
        self.target, self.other = self.other, self.target
        return True

    @property
    def is_open(self) -> bool:
        return self._stream is not None or self._socket is not None

    async def send(self, frame: bytes) -> bool:
        """Send one frame; False (and closed) when the connection broke."""
        try:
            if self._socket is not None:
                await self._socket.send(frame)
            elif self._stream is not None:
                await self._stream.send_all(frame)
            else:
                return False
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await self.aclose()
            return False
        return True

    async def receive(self) -> bytes | None:
        """The next reply frame; None when the connection closed."""
        if self._socket is not None:
            try:
                return bytes(await self._socket.recv(65536))
            except OSError:
                # ICMP port unreachable on a connected UDP socket: nobody is listening yet.
                await trio.sleep(0.01)
                return b""
        while self._stream is not None:
            event = self._splitter.next_event()
            if isinstance(event, bytes):
                return event
            if event is dc09.NEED_DATA:
                try:
                    data = await self._stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
                if not data:
                    await self.aclose()
                    return None
                self._splitter.receive_data(bytes(data))
            # A FramingError: garbage between replies; keep reading.
        return None

    async def aclose(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            await stream.aclose()
        if self._socket is not None:
            self._socket.close()
            self._socket = None


# ---- the fleet ----------------------------------------------------------------------------


class PanelFleet:
    """Panels sharing one clock offset and one sequence counter per account."""

    def __init__(
        self,
        target: tuple[str, int],
        options: PanelOptions,
        tally: PanelTally | None = None,
        *,
        rand: Callable[[int], bytes] = os.urandom,
        sequences: Sequences | None = None,
        backup: tuple[str, int] | None = None,
    ) -> None:
        self.target = target
        self.backup = backup
        self.options = options
        self.tally = tally or PanelTally()
        self.rand = rand
        self.offsets: dict[str, float] = {}
        self.sequences = sequences or Sequences.for_run(options, rand)
        self._limiter = trio.CapacityLimiter(CONNECT_LIMIT)

    def next_sequence(self, account: str) -> int:
        return self.sequences.next(account)

    def panel_time(self, account: str) -> datetime:
        """The account's panel clock: real UTC plus the skew, minus any correction since."""
        offset = self.offsets.get(account, self.options.skew)
        return datetime.now(UTC) + timedelta(seconds=offset)

    def data_block(self, account: str, content: Content) -> str:
        hash_mark = "" if self.options.quirks.no_hash else "#"
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        block = (
            format_block(account, [content])
            if isinstance(content, SiaView)
            else format_adm_cid(account, content)
        )
        return block[1:] if not hash_mark else block

    def encode(self, item: Transmission, sequence: int) -> bytes:
        """The frame for ``item`` at the account's current panel time."""
        opts = self.options
        account = item.account.lower() if opts.quirks.lower_account else item.account
        return dc09.encode_frame(
            item.token,
            sequence,
            account,
            self.data_block(account, item.content),
            receiver=opts.receiver,
            line=opts.line,
            key=opts.key,
            timestamp=self.panel_time(item.account),
            crc_form="binary" if opts.quirks.binary_crc else "hex",
            rand=self.rand,
        )

    async def run_connection(self, transmissions: Iterable[Transmission], start: float) -> None:
        """Send ``transmissions`` in order over one connection, each waiting for its reply."""
        link = PanelLink(self.target, udp=self.options.udp, backup=self.backup)
        try:
            for item in transmissions:
                if item.at > 0:
                    await trio.sleep_until(start + item.at)
                await self.deliver(link, item)
        finally:
            await link.aclose()

    async def deliver(self, link: PanelLink, item: Transmission) -> None:
        """One frame to its outcome (see the module rules)."""
        tally, opts = self.tally, self.options
        sequence = self.next_sequence(item.account)
        frame = self.encode(item, sequence)
        tally.sent += 1
        if item.token == NULL_TOKEN:
            tally.polls += 1
        started = trio.current_time()
        outcome: Reply | None = None
        connected = True
        attempts = 0
        while attempts <= opts.retries:
            if attempts:
                tally.retransmits += 1
            attempts += 1
            if not link.is_open:
                try:
                    async with self._limiter:
                        await link.open()
                except OSError as exc:
                    connected = False
                    tally.connect_error = f"cannot connect to {link.path}: {reason(exc)}"
                    if not await self._switch(link):
                        await trio.sleep(min(opts.timeout, 0.05))
                    continue
            connected = True
            if not await link.send(frame):
                await self._switch(link)
                continue
            reply = await self._await_reply(link, f"{sequence:04d}")
            if reply is None:
                outcome = None
                await self._switch(link)
                continue
            outcome = reply.kind
            if reply.kind is Reply.ACK:
                tally.acked += 1
                if self.backup is not None:
                    tally.acked_at[link.path] = tally.acked_at.get(link.path, 0) + 1
                if item.token != NULL_TOKEN:
                    tally.acked_events += 1
                tally.latencies_ms.append((trio.current_time() - started) * 1000.0)
                return
            if reply.kind is Reply.DUH:
                tally.duh += 1
                return
            tally.nak_replies += 1
            if reply.timestamp is None:
                continue  # a NAK that says nothing more: send the same bytes again
            skew = (reply.timestamp - self.panel_time(item.account)).total_seconds()
            if abs(skew) <= CLOCK_TOLERANCE_S:
                # The receiver's clock agrees with ours, so the clock is not what it refused:
                # it could not decrypt the frame. The same bytes would get the same NAK.
                tally.naks_wrong_key += 1
                break
            # The receiver said what time it is: adopt it, rebuild with the same sequence.
            self.offsets[item.account] = (reply.timestamp - datetime.now(UTC)).total_seconds()
            tally.clock_corrections += 1
            frame = self.encode(item, sequence)
        if outcome is Reply.NAK:
            tally.naked += 1
        elif not connected:
            tally.connect_failures += 1
        else:
            tally.timeouts += 1

    async def _switch(self, link: PanelLink) -> bool:
        """The receiver on this path stopped answering: the next attempt goes to the other."""
        if not await link.switch():
            return False
        self.tally.switches += 1
        return True

    async def _await_reply(self, link: PanelLink, sequence: str) -> dc09.Dc09Reply | None:
        with trio.move_on_after(self.options.timeout):
            while True:
                raw = await link.receive()
                if raw is None:
                    return None
                if not raw:
                    continue
                try:
                    reply = dc09.decode_reply(raw, key=self.options.key)
                except RemoteProtocolError:
                    self.tally.bad_replies += 1
                    continue
                # The standard NAK names sequence 0000; anything else must be this frame's.
                if reply.kind is Reply.NAK or reply.sequence == sequence:
                    return reply
        return None

    async def run(
        self,
        lanes: Sequence[Iterable[Transmission]],
        *,
        progress: Callable[[PanelRunSummary], None] | None = None,
        limit_s: float | None = None,
    ) -> PanelRunSummary:
        """Run one connection per lane until every lane is done (or ``limit_s`` passed)."""
        if len(lanes) > MAX_CONNECTIONS:
            raise InvalidInputError(f"at most {MAX_CONNECTIONS} connections")
        self.tally.connections = max(self.tally.connections, len(lanes))
        start = trio.current_time()

        async def report() -> None:
            assert progress is not None
            while True:
                await trio.sleep(0.5)
                progress(self.tally.summary(trio.current_time() - start))

        with trio.move_on_after(math.inf if limit_s is None else limit_s):
            async with trio.open_nursery() as nursery:
                if progress is not None:
                    nursery.start_soon(report)
                async with trio.open_nursery() as panels:
                    for lane in lanes:
                        panels.start_soon(self.run_connection, lane, start)
                nursery.cancel_scope.cancel()
        return self.tally.summary(trio.current_time() - start)


# ---- the load a command asks for ----------------------------------------------------------


def account_numbers(first: str, count: int) -> list[str]:
    """``count`` accounts from ``first`` upwards: decimal when it is all digits, else hex,
    keeping its width (``0999`` → ``0999, 1000``; ``10000A`` → ``10000A, 10000B``)."""
    if not 1 <= count <= MAX_ACCOUNTS:
        raise InvalidInputError(f"--accounts must be 1..{MAX_ACCOUNTS}")
    if not first or not first.isalnum() or not first.isascii() or len(first) > 16:
        raise InvalidInputError(f"account {first!r} must be 1-16 letters or digits")
    if count == 1:
        return [first]
    if first.isdigit():
        base, width = int(first), len(first)
        numbers = [f"{base + i:0{width}d}" for i in range(count)]
    else:
        try:
            base = int(first, 16)
        except ValueError:
            raise InvalidInputError(
                f"account {first!r} is neither decimal nor hex: cannot count up from it"
            ) from None
        width = len(first)
        numbers = [f"{base + i:0{width}X}" for i in range(count)]
    if len(numbers[-1]) > 16:
        raise InvalidInputError("accounts would exceed 16 characters")
    return numbers


def event_for(index: int, protocol: str) -> tuple[str, SiaView | ContactIdView]:
    """The token and event of a fleet's ``index``-th frame: a fixed rotation per protocol."""
    use_sia = protocol == "sia" or (protocol == "mixed" and index % 2 == 0)
    table_index = (index // (2 if protocol == "mixed" else 1)) % len(SIA_EVENTS)
    if use_sia:
        return "SIA-DCS", SIA_EVENTS[table_index]
    return "ADM-CID", CID_EVENTS[table_index]


def _as_accounts(value: Iterable[str]) -> tuple[str, ...]:
    accounts = tuple(value)
    if not accounts:
        raise InvalidInputError("a load needs at least one account")
    return accounts


@frozen(kw_only=True)
class LoadPlan:
    """``count`` frames over ``connections`` connections for ``accounts``; ``rate`` frames/s in
    all (0: closed loop, as fast as ACKs come back); every ``null_every``-th frame a NULL poll."""

    accounts: tuple[str, ...] = attrs.field(converter=_as_accounts)
    count: int = attrs.field(validator=[ge(1), le(MAX_FRAMES)])
    connections: int = attrs.field(default=1, validator=[ge(1), le(MAX_CONNECTIONS)])
    rate: float = attrs.field(default=0.0, validator=ge(0.0))
    protocol: str = attrs.field(default="mixed", validator=in_(PROTOCOLS))
    null_every: int = attrs.field(default=0, validator=ge(0))

    def lane(self, lane: int) -> Iterator[Transmission]:
        """Connection ``lane``'s frames: global frames lane, lane + C, lane + 2C, ..."""
        step = self.connections
        for index in range(lane, self.count, step):
            at = index / self.rate if self.rate else 0.0
            account = self.accounts[index % len(self.accounts)]
            if self.null_every and (index + 1) % self.null_every == 0:
                yield Transmission(at, account, NULL_TOKEN)
                continue
            token, event = event_for(index, self.protocol)
            yield Transmission(at, account, token, event)

    def lanes(self) -> list[Iterator[Transmission]]:
        return [self.lane(i) for i in range(min(self.connections, self.count))]


async def run_load(
    target: tuple[str, int],
    plan: LoadPlan,
    options: PanelOptions,
    *,
    allow_remote: bool = False,
    progress: Callable[[PanelRunSummary], None] | None = None,
    rand: Callable[[int], bytes] = os.urandom,
    backup: tuple[str, int] | None = None,
) -> PanelRunSummary:
    """Send ``plan`` to ``target`` (loopback unless ``allow_remote``), switching to ``backup``
    when it stops answering, and summarize."""
    check_target(target[0], allow_remote=allow_remote)
    if backup is not None:
        check_target(backup[0], allow_remote=allow_remote)
    tally = PanelTally(accounts=len(plan.accounts), planned=plan.count)
    fleet = PanelFleet(target, options, tally, rand=rand, backup=backup)
    return await fleet.run(plan.lanes(), progress=progress)


# ---- the command ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``receiver-sim panel``."""
    parser = sub.add_parser(
        "panel",
        help="a fleet of DC-09 alarm panels reporting to the receiver",
        description=(
            "Send --count DC-09 frames over --connections connections for --accounts accounts "
            "(counting up from --account), each frame waiting for its reply, with retries, "
            "NAK clock correction and optional field quirks. Prints a summary; exit 0 when "
            "every frame was ACKed, 1 otherwise, 2 on bad arguments."
        ),
    )
    parser.add_argument("--target", required=True, metavar="HOST:PORT")
    parser.add_argument(
        "--backup",
        metavar="HOST:PORT",
        help="backup receiver path: taken when --target stops answering (no reply within "
        "--timeout, connection refused or closed); kept while it answers",
    )
    parser.add_argument("--account", required=True, help="first account number")
    parser.add_argument("--accounts", type=int, default=1, help="number of accounts (panels)")
    parser.add_argument("--key", help="AES key shared by the panels (encrypted frames)")
    parser.add_argument("--key-format", choices=("hex", "ascii"), default="hex")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="mixed")
    parser.add_argument("--count", type=int, default=100, help="frames to send in all")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.0, help="frames/s in all (0: closed loop)")
    parser.add_argument("--udp", action="store_true", help="one datagram per frame")
    parser.add_argument("--null-every", type=int, default=0, metavar="K", help="every Kth: NULL")
    parser.add_argument("--skew", type=float, default=0.0, metavar="S", help="panel clock offset")
    parser.add_argument(
        "--quirk", action="append", default=[], choices=QUIRKS, help="send a field quirk"
    )
    parser.add_argument("--receiver", help="the R field (omitted by default)")
    parser.add_argument("--line", default="0", help="the L field (default 0)")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for a reply")
    parser.add_argument("--retries", type=int, default=3, help="retransmissions per frame")
    add_sequence_option(parser)
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    parser.set_defaults(handler=handle)


def add_sequence_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sequence-start",
        type=int,
        metavar="N",
        help=f"first sequence number of each account, 1..{MAX_SEQUENCE} (default: random, so "
        "that a second run is not taken for the first one's duplicates)",
    )


def options_from_args(args: argparse.Namespace) -> PanelOptions:
    """PanelOptions from the shared panel arguments (also used by ``replay``)."""
    key = dc09.parse_key(args.key, args.key_format) if args.key else None
    try:
        return PanelOptions(
            key=key,
            udp=args.udp,
            timeout=args.timeout,
            retries=args.retries,
            skew=getattr(args, "skew", 0.0),
            receiver=args.receiver,
            line=args.line or None,
            quirks=PanelQuirks.from_words(getattr(args, "quirk", ())),
            sequence_start=getattr(args, "sequence_start", None),
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def handle(args: argparse.Namespace) -> int:
    """Run the fleet; print the summary; exit 0, 1 or 2."""
    try:
        target = parse_target(args.target)
        check_target(target[0], allow_remote=args.allow_remote)
        backup = parse_target(args.backup) if args.backup else None
        if backup is not None:
            check_target(backup[0], allow_remote=args.allow_remote)
        options = options_from_args(args)
        plan = LoadPlan(
            accounts=account_numbers(args.account, args.accounts),
            count=args.count,
            connections=args.connections,
            rate=args.rate,
            protocol=args.protocol,
            null_every=args.null_every,
        )
    except InvalidInputError as exc:
        print(f"receiver-sim panel: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"receiver-sim panel: {exc}", file=sys.stderr)
        return 2
    on_terminal = sys.stderr.isatty()
    summary = trio.run(
        lambda: run_load(
            target,
            plan,
            options,
            allow_remote=args.allow_remote,
            progress=print_progress if on_terminal else None,
            backup=backup,
        )
    )
    if on_terminal:
        print(file=sys.stderr)
    print(json.dumps(summary.as_dict(), sort_keys=True) if args.json else summary.line())
    report_connect_failures("receiver-sim panel", summary)
    return 0 if summary.ok else 1


def report_connect_failures(prog: str, summary: PanelRunSummary) -> None:
    """One line on stderr when frames could not be sent for want of a connection."""
    if summary.connect_failures:
        print(
            f"{prog}: {summary.connect_error} ({summary.connect_failures} frames not sent)",
            file=sys.stderr,
        )


def print_progress(summary: PanelRunSummary) -> None:
    """A one-line progress bar on stderr."""
    done = summary.acked + summary.naked + summary.duh + summary.timeouts + summary.connect_failures
    total = max(summary.planned, 1)
    filled = min(30, done * 30 // total)
    print(
        f"\r[{'#' * filled}{'.' * (30 - filled)}] {done}/{summary.planned} "
        f"acked {summary.acked} naked {summary.naked} duh {summary.duh} "
        f"timeouts {summary.timeouts} connect failures {summary.connect_failures} "
        f"{summary.events_per_s:.0f}/s",
        end="",
        file=sys.stderr,
        flush=True,
    )
