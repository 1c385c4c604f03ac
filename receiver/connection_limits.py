"""Connection limits shared by the listeners: in total and per peer address.

A slow or hostile peer opening connections in a loop must not starve everyone else; a limit
refuses the newcomer (it is closed at once), never an established link.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import trio

from receiver.metrics import Counters

_conn_ids = itertools.count(1)

Converse = Callable[[trio.SocketStream, str, Any], Awaitable[None]]
"""A listener's conversation with one admitted connection: (stream, peer, bound log)."""


class ConnectionLimits:
    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self.by_peer: Counter[str] = Counter()

    @contextmanager
    def admit(self, peer_host: str) -> Iterator[bool]:
        """Yield whether the connection may stay; count it while it does."""
        if self.open >= self.total or self.by_peer[peer_host] >= self.per_peer:
            yield False
            return
        self.open += 1
        self.by_peer[peer_host] += 1
        try:
            yield True
        finally:
            self.open -= 1
            self.by_peer[peer_host] -= 1
            if not self.by_peer[peer_host]:
                del self.by_peer[peer_host]


async def serve_connection(
    stream: trio.SocketStream,
    converse: Converse,
    *,
    limits: ConnectionLimits,
    counters: Counters,
    counter: str,
    log: Any,
    **bind: str,
) -> None:
    """One accepted connection, for every listener: admit it under ``limits`` or refuse it
    (counted as ``<counter>_refused``, logged, closed at once), bind a process-wide ``conn_id``
    and the peer to the log, run ``converse``, and always close the stream, even on cancel."""
    try:
        peer_host, peer_port = stream.socket.getpeername()[:2]
    except OSError:
        return
    peer = f"{peer_host}:{peer_port}"
    log = log.bind(conn_id=next(_conn_ids), peer=peer, **bind)
    with limits.admit(peer_host) as admitted:
        if not admitted:
            counters.inc(f"{counter}_refused")
            log.warning("connection_refused", reason="connection limit")
            await stream.aclose()
            return
        counters.inc(counter)
        try:
            await converse(stream, peer, log)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("connection_lost")
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()


def next_conn_id() -> int:
    """A process-wide connection id for the logs (``conn_id``)."""
    return next(_conn_ids)


def try_admit(limits: ConnectionLimits, peer_host: str) -> bool:
    """Count a connection from ``peer_host`` if the limits allow it (pair with ``release``),
    for loops that serve many connections in one task and cannot hold ``admit`` open."""
    if limits.open >= limits.total or limits.by_peer[peer_host] >= limits.per_peer:
        return False
    limits.open += 1
    limits.by_peer[peer_host] += 1
    return True


def release(limits: ConnectionLimits, peer_host: str) -> None:
    """Forget a connection counted by ``try_admit``."""
    limits.open -= 1
    limits.by_peer[peer_host] -= 1
    if not limits.by_peer[peer_host]:
        del limits.by_peer[peer_host]
