"""Logging: structlog key-value events, JSON when stderr is not a terminal.

Event names are snake_case; values are fields, never f-strings. Raw bytes are logged as an
escaped string (``raw``) so a bad frame can be replayed from the log.

Rejected input is logged through a ``RejectionLog`` (one per connection, one per UDP peer
address): a sender of garbage must not turn each byte it sends into a line of log.
"""

from __future__ import annotations

import functools
import json as json_module
import logging
import os
import sys
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, TextIO, cast

import attrs
import structlog
import trio

from protocols.signal import ContactIdView, SiaView, Signal


class LogStream:
    """The stream log lines go to (stderr). A line that cannot be written (stderr redirected to
    a file on a full disk, a closed pipe) is dropped and counted in ``lost``: logging must never
    be what ends the receiver."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.lost = 0

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            self.lost += 1
            return 0

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            self.lost += 1


def configure(
    *, json: bool | None = None, level: int = logging.INFO, stream: TextIO | None = None
) -> None:
    """Configure structlog once for the service (CLI commands stay quiet). ``stream``: where
    lines go (default stderr)."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    out = LogStream(stream if stream is not None else sys.stderr)
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        renderer,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # One write per line (the message and its newline together): the coordinator and its
        # workers share one stderr, and print's two writes let their lines interleave.
        logger_factory=structlog.WriteLoggerFactory(file=cast(TextIO, out)),
        cache_logger_on_first_use=True,
    )
    direct = json and level <= logging.INFO
    _configured.signal_lines = _SignalLines(processors, renderer, out) if direct else None


def raw_text(raw: bytes, limit: int = 512) -> str:
    """Bytes as an escaped, replayable string (latin-1 keeps every byte one character)."""
    text = raw[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return text if len(raw) <= limit else text + f"...(+{len(raw) - limit} bytes)"


def crash_site(exc: BaseException) -> str:
    """Where an unexpected exception was raised (``file:line in function``), for its log line."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown"
    last = frames[-1]
    return f"{last.filename.rsplit('/', 1)[-1]}:{last.lineno} in {last.name}"


def signal_entry(signal: Signal, *, duplicate: bool) -> dict[str, Any]:
    """What the signal log says about one signal (fields that are unknown are left out)."""
    cid, sia = signal.cid, signal.sia
    entry: dict[str, Any] = {"signal_id": signal.id, "account": signal.account}
    if signal.effective_account is not None:
        entry["effective_account"] = signal.effective_account
    if signal.device is not None:
        entry["device"] = signal.device
        entry["channel"] = signal.channel
    if cid is not None:
        entry["cid_event"] = cid.qualifier + cid.code
        entry["group"] = cid.group
        entry["zone"] = cid.zone
    if sia is not None:
        entry["sia"] = sia.code
        if cid is None and sia.address:
            entry["zone"] = sia.address
    if signal.name is not None:
        entry["name"] = signal.name
    if signal.flags:
        entry["flags"] = sorted(signal.flags)
    if duplicate:
        entry["duplicate"] = True
    return entry


def log_signals(log: Any, signals: Sequence[Signal], duplicates: Sequence[Signal] = ()) -> None:
    """One ``signals`` line per commit (``log_signals = true``), from any listener: every
    stored signal's fields, as a list. One log event per batch instead of one per signal keeps
    the information and drops most of its cost (the processor chain and a write per event).

    With the service's JSON logging (``configure``) still in place, the line is rendered here
    (``_SignalLines``): the same keys and values, in the same order, as structlog writes it,
    without building a dict per signal and encoding it again. Any other configuration (the
    console renderer, ``capture_logs`` in tests) gets the event through structlog."""
    if not signals:
        return
    duplicate_ids = {s.id for s in duplicates} if duplicates else set()
    lines = _configured.signal_lines
    if lines is not None and lines.write(log, signals, duplicate_ids):
        return
    log.info(
        "signals",
        count=len(signals),
        signals=[signal_entry(s, duplicate=s.id in duplicate_ids) for s in signals],
    )


_quote = cast(Any, json_module.encoder).encode_basestring_ascii  # json.dumps' own (C) quoting
_SPLICE = f"\x00signals-{os.getpid()}-{id(object())}\x00"  # stands for the entries while rendering


@functools.lru_cache(maxsize=1024)
def _flags_json(flags: frozenset[str]) -> str:
    return json_module.dumps(sorted(flags))


def _event_text(cid: ContactIdView | None, sia: SiaView | None, name: str | None) -> str:
    """The event's part of an entry (``signal_entry``'s keys from cid_event to name)."""
    parts = []
    if cid is not None:
        parts.append(
            f', "cid_event": {_quote(cid.qualifier + cid.code)}, "group": {_quote(cid.group)}'
            f', "zone": {_quote(cid.zone)}'
        )
    if sia is not None:
        parts.append(f', "sia": {_quote(sia.code)}')
        if cid is None and sia.address:
            parts.append(f', "zone": {_quote(sia.address)}')
    if name is not None:
        parts.append(f', "name": {_quote(name)}')
    return "".join(parts)


# The codecs intern their event views (the same few events recur), so the event's text is
# cached by the views' identity (hashing an attrs view by value costs more than its text);
# each entry keeps its views alive, so an id is never reused while its entry stands.
_EVENT_TEXTS_MAX = 8192
_event_texts: dict[
    tuple[int, int, str | None], tuple[ContactIdView | None, SiaView | None, str]
] = {}


def _entry_json(signal: Signal, duplicate: bool) -> str:
    """``json.dumps(signal_entry(signal, duplicate=duplicate))``, built from cached parts."""
    cid, sia, name = signal.cid, signal.sia, signal.name
    key = (id(cid), id(sia), name)
    hit = _event_texts.get(key)
    if hit is None or hit[0] is not cid or hit[1] is not sia:
        if len(_event_texts) >= _EVENT_TEXTS_MAX:
            _event_texts.clear()
        hit = _event_texts[key] = (cid, sia, _event_text(cid, sia, name))
    effective = signal.effective_account
    device = signal.device
    return "".join(
        (
            f'{{"signal_id": {_quote(signal.id)}, "account": {_quote(signal.account)}',
            "" if effective is None else f', "effective_account": {_quote(effective)}',
            ""
            if device is None
            else f', "device": {_quote(device)}, "channel": {json_module.dumps(signal.channel)}',
            hit[2],
            f', "flags": {_flags_json(signal.flags)}' if signal.flags else "",
            ', "duplicate": true}' if duplicate else "}",
        )
    )


class _SignalLines:
    """The ``signals`` line written straight to the service's log stream, as structlog's
    processors (``configure``) would render it: the logger's bound context, ``count``,
    ``signals``, ``event``, the context variables, ``level`` and ``timestamp``."""

    def __init__(self, processors: list[Any], renderer: Any, stream: LogStream) -> None:
        self.processors = processors
        self.renderer = renderer
        self.stream = stream
        self.stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)

    def write(self, log: Any, signals: Sequence[Signal], duplicate_ids: set[str]) -> bool:
        """Write the line; False when the configuration is no longer ours (or the logger is
        not a structlog one): the caller then logs through structlog."""
        processors = structlog.get_config()["processors"]
        # capture_logs empties and refills the configured list itself: compare its contents.
        if processors is not self.processors or processors[-1:] != [self.renderer]:
            return False
        try:
            context = structlog.get_context(log)
        except AttributeError:
            return False
        if "signals" in context or "event" in context:
            return False
        event: dict[str, Any] = dict(context)
        event["count"] = len(signals)
        event["signals"] = _SPLICE
        event["event"] = "signals"
        for processor in (
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            self.stamp,
        ):
            event = dict(processor(None, "info", event))
        entries = ", ".join([_entry_json(s, s.id in duplicate_ids) for s in signals])
        line = self.renderer(None, "info", event).replace(_quote(_SPLICE), f"[{entries}]", 1)
        self.stream.write(line + "\n")
        self.stream.flush()
        return True


class _Configured:
    """What ``configure`` set up that the module's functions use."""

    signal_lines: _SignalLines | None = None


_configured = _Configured()


@attrs.define
class _Window:
    start: float
    logged: int = 0
    suppressed: int = 0


class RejectionLog:
    """A logger for what one peer sent that was rejected, rate-limited per event and reason.

    Every ``warning`` through it is a rejection of the peer's input (a bad frame, discarded
    garbage, a refused datagram). Per (event, ``reason`` field), the first ``burst`` in each
    ``interval`` seconds are logged in full, raw bytes and all; the rest are only counted, and
    one ``rejections_suppressed`` warning (``rejected`` = the event, ``reason``, ``count``)
    reports them once their interval is over: on the next rejection after it, or at ``close``
    when the connection ends. The logged lines plus the counts are every rejection; the
    listeners' counters are kept apart from this and stay exact. ``error`` (a frame that hit a
    bug: ``frame_crashed``) is limited the same way, at error level, so a frame that crashes
    the codec cannot flood the log either. Other levels pass straight through, so it can be
    handed to code that takes a logger (``Dc09Intake.prepare``).
    """

    def __init__(self, log: Any, *, burst: int = 5, interval: float = 60.0) -> None:
        self._log = log
        self.burst = burst
        self.interval = interval
        self._windows: dict[tuple[str, Any], _Window] = {}
        self._due = float("inf")  # when the oldest window with suppressed lines is over
        self.debug = log.debug
        self.info = log.info
        self.exception = log.exception
        self.critical = log.critical

    def bind(self, **fields: Any) -> RejectionLog:
        """This log's limits and counts, over a logger bound with ``fields``; use the new one
        from then on (the bridge listener binds the serial once the HELLO is accepted)."""
        bound = RejectionLog(self._log.bind(**fields), burst=self.burst, interval=self.interval)
        bound._windows, bound._due = self._windows, self._due
        return bound

    def warning(self, event: str, **fields: Any) -> None:
        self._limited(self._log.warning, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._limited(self._log.error, event, fields)

    def _limited(self, emit: Any, event: str, fields: dict[str, Any]) -> None:
        now = trio.current_time()
        if now >= self._due:
            self._report(now)
        key = (event, fields.get("reason"))
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now)
        elif now >= window.start + self.interval:
            window.start, window.logged = now, 0
        if window.logged < self.burst:
            window.logged += 1
            emit(event, **fields)
            return
        if not window.suppressed:
            self._due = min(self._due, window.start + self.interval)
        window.suppressed += 1

    warn = warning

    @property
    def newest_window(self) -> float:
        """When the newest window began (a UDP peer's log is dropped once all are over)."""
        return max((w.start for w in self._windows.values()), default=float("-inf"))

    def close(self) -> None:
        """Report every suppressed count (the connection or the peer is done)."""
        self._report(float("inf"))
        self._windows.clear()

    def _report(self, now: float) -> None:
        self._due = float("inf")
        for (event, reason), window in self._windows.items():
            if not window.suppressed:
                continue
            end = window.start + self.interval
            if now >= end:
                self._log.warning(
                    "rejections_suppressed", rejected=event, reason=reason, count=window.suppressed
                )
                window.suppressed = 0
            else:
                self._due = min(self._due, end)


class PeerRejectionLogs:
    """One ``RejectionLog`` per peer address for a connectionless listener (DC-09 UDP).

    At most ``max_peers`` are kept: the one idle longest is closed (its counts reported) to
    make room, and a peer quiet for ``interval`` is closed on the next sweep, so a flood of
    spoofed source addresses costs bounded memory. A peer's log dropped and made again later
    starts afresh: still at most ``burst`` full lines per reason per interval.
    """

    def __init__(
        self, log: Any, *, max_peers: int = 4096, burst: int = 5, interval: float = 60.0
    ) -> None:
        self._log = log
        self.max_peers = max_peers
        self.burst = burst
        self.interval = interval
        self._peers: OrderedDict[str, RejectionLog] = OrderedDict()
        self._next_sweep = float("-inf")

    def for_peer(self, host: str) -> RejectionLog:
        peer = self._peers.get(host)
        if peer is not None:
            self._peers.move_to_end(host)
            return peer
        if len(self._peers) >= self.max_peers:
            _, oldest = self._peers.popitem(last=False)
            oldest.close()
        peer = self._peers[host] = RejectionLog(
            self._log.bind(peer=host), burst=self.burst, interval=self.interval
        )
        return peer

    def sweep(self) -> None:
        """Close the logs of peers quiet for a whole interval (cheap: once per interval)."""
        now = trio.current_time()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.interval
        for host in [h for h, p in self._peers.items() if now - p.newest_window >= self.interval]:
            self._peers.pop(host).close()

    def close(self) -> None:
        for peer in self._peers.values():
            peer.close()
        self._peers.clear()
