"""Logging: structlog key-value events, JSON when stderr is not a terminal.

Event names are snake_case; values are fields, never f-strings. Raw bytes are logged as an
escaped string (``raw``) so a bad frame can be replayed from the log.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog

from protocols.signal import Signal


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


def configure(*, json: bool | None = None, level: int = logging.INFO) -> None:
    """Configure structlog once for the service (CLI commands stay quiet)."""
    if json is None:
        json = not sys.stderr.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, LogStream(sys.stderr))),
        cache_logger_on_first_use=True,
    )


def raw_text(raw: bytes, limit: int = 512) -> str:
    """Bytes as an escaped, replayable string (latin-1 keeps every byte one character)."""
    text = raw[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return text if len(raw) <= limit else text + f"...(+{len(raw) - limit} bytes)"


def log_signal(log: Any, signal: Signal, *, duplicate: bool) -> None:
    """One ``signal`` line per stored signal (``log_signals = true``), from any listener."""
    cid, sia = signal.cid, signal.sia
    log.info(
        "signal",
        signal_id=signal.id,
        account=signal.account,
        effective_account=signal.effective_account,
        device=signal.device,
        channel=signal.channel,
        cid_event=f"{cid.qualifier}{cid.code}" if cid else None,
        group=cid.group if cid else None,
        zone=cid.zone if cid else None,
        sia=sia.code if sia else None,
        name=signal.name,
        flags=sorted(signal.flags) or None,
        duplicate=duplicate or None,
    )
