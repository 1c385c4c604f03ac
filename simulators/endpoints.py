"""The simulators' sockets: when one cannot be opened, one line naming what and where.

Rules:
- A listener that cannot be bound (port in use, an address this host does not have, a name
  that does not resolve) raises :class:`EndpointError` naming the role, the address and the
  reason; so does a connection that cannot be opened.
- trio wraps errors raised inside nurseries in ExceptionGroups; :func:`leaf_error` finds the
  error a person should read, so the console script prints one line, never a traceback.
"""

from __future__ import annotations

import os
import socket

import trio

from protocols.errors import ReceiverError


class EndpointError(ReceiverError, OSError):
    """A socket a simulator needs could not be opened; the message says which and why."""


def reason(exc: BaseException) -> str:
    """The human part of an OSError (``Address already in use``), looking through trio's
    "all attempts to connect failed" to the first attempt's cause."""
    cause = exc
    while isinstance(cause, OSError) and cause.__cause__ is not None and not cause.strerror:
        nested = cause.__cause__
        if isinstance(nested, BaseExceptionGroup):
            nested = leaf_error(nested)
        cause = nested
    if isinstance(cause, socket.gaierror):
        return str(cause.strerror or cause)
    if isinstance(cause, OSError):
        if isinstance(cause.errno, int) and cause.errno > 0:
            return os.strerror(cause.errno)  # trio's strerror repeats the address
        if cause.strerror:
            return str(cause.strerror)
    return str(cause) or type(cause).__name__


def where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def open_listeners(what: str, host: str, port: int) -> list[trio.SocketListener]:
    """TCP listeners on ``host:port`` (port 0: a free one)."""
    try:
        return await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        raise EndpointError(f"{what}: cannot listen on {where(host, port)}: {reason(exc)}") from exc


async def open_stream(what: str, host: str, port: int) -> trio.SocketStream:
    """A TCP connection to ``host:port``."""
    try:
        return await trio.open_tcp_stream(host, port)
    except OSError as exc:
        raise EndpointError(
            f"{what}: cannot connect to {where(host, port)}: {reason(exc)}"
        ) from exc


def leaf_error(exc: BaseException) -> BaseException:
    """The error to report from ``exc``: itself, or the first project or OS error inside the
    ExceptionGroups trio wrapped it in (else the first leaf)."""
    if not isinstance(exc, BaseExceptionGroup):
        return exc
    leaves: list[BaseException] = []

    def collect(group: BaseExceptionGroup[BaseException]) -> None:
        for inner in group.exceptions:
            if isinstance(inner, BaseExceptionGroup):
                collect(inner)
            else:
                leaves.append(inner)

    collect(exc)
    for leaf in leaves:
        if isinstance(leaf, ReceiverError | OSError):
            return leaf
    return leaves[0] if leaves else exc
