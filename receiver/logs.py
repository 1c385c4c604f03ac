"""Logging: structlog key-value events, JSON when stderr is not a terminal.

Event names are snake_case; values are fields, never f-strings. Raw bytes are logged as an
escaped string (``raw``) so a bad frame can be replayed from the log.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

import structlog

from protocols.signal import Signal


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
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def raw_text(raw: bytes, limit: int = 512) -> str:
    """Bytes as an escaped, replayable string (latin-1 keeps every byte one character)."""
    text = raw[:limit].decode("latin-1").encode("unicode_escape").decode("ascii")
    return text if len(raw) <= limit else text + f"...(+{len(raw) - limit} bytes)"


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
    the information and drops most of its cost (the processor chain and a write per event)."""
    if not signals:
        return
    duplicate_ids = {s.id for s in duplicates} if duplicates else set()
    log.info(
        "signals",
        count=len(signals),
        signals=[signal_entry(s, duplicate=s.id in duplicate_ids) for s in signals],
    )
