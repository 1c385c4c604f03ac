"""Connection limits shared by the listeners: in total and per peer address.

A slow or hostile peer opening connections in a loop must not starve everyone else; a limit
refuses the newcomer (it is closed at once), never an established link.

Defaults (``[dc09]`` 10,000 in total and 256 per address, ``[bridge]`` 4,000 and 256): one host
takes at most 256 slots, so it takes some forty hosts to fill the DC-09 port, while a NAT'd
site (a shopping centre, a campus, an apartment block) with a couple of hundred panels behind
one address still gets in; panels behind a carrier's NAT (cellular communicators) need the
per-peer limit raised. Every connection is an open file: at start the soft open-file limit is
raised to the hard one, and if the two listeners' totals plus ``FILES_RESERVED`` (the store,
its WAL, spool files, outputs) still do not fit, the totals are lowered to fit and a warning
says so, so that accept() running out of descriptors never starves the journal.
"""

from __future__ import annotations

import itertools
import resource
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import attrs
import structlog
import trio

from receiver.config import Config
from receiver.logs import PeerRejectionLogs, crash_site
from receiver.metrics import Counters

# Descriptors kept free for everything that is not a connection.
FILES_RESERVED = 256

_conn_ids = itertools.count(1)

Converse = Callable[[trio.SocketStream, str, Any], Awaitable[None]]
"""A listener's conversation with one admitted connection: (stream, peer, bound log)."""


class ConnectionLimits:
    """Connections open in total and per peer host; refusals are logged per host through a
    ``RejectionLog``, so a host connecting in a loop past its limit does not flood the log."""

    def __init__(self, total: int, per_peer: int, *, log: Any = None) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self.by_peer: Counter[str] = Counter()
        self.refusals = PeerRejectionLogs(log if log is not None else structlog.get_logger())

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


def raise_open_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit where allowed; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def fit_to_open_files(config: Config, open_files: int) -> Config:
    """The config with both listeners' connection totals lowered, in proportion, to leave
    ``FILES_RESERVED`` of ``open_files`` free (unchanged when they fit already)."""
    dc09, bridge = config.dc09, config.bridge
    wanted = dc09.max_connections + bridge.max_connections
    room = max(open_files - FILES_RESERVED, 2)
    if wanted <= room:
        return config
    dc09_total = max(dc09.max_connections * room // wanted, 1)
    bridge_total = max(room - dc09_total, 1)
    return attrs.evolve(
        config,
        dc09=attrs.evolve(
            dc09,
            max_connections=dc09_total,
            max_connections_per_peer=min(dc09.max_connections_per_peer, dc09_total),
        ),
        bridge=attrs.evolve(
            bridge,
            max_connections=bridge_total,
            max_connections_per_peer=min(bridge.max_connections_per_peer, bridge_total),
        ),
    )


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
    and the peer to the log, run ``converse``, and always close the stream, even on cancel.
    An unexpected exception from ``converse`` closes this connection (``connection_crashed``,
    counted as ``<counter>_crashed``) and goes no further."""
    try:
        peer_host, peer_port = stream.socket.getpeername()[:2]
    except OSError:
        return
    peer = f"{peer_host}:{peer_port}"
    log = log.bind(conn_id=next(_conn_ids), peer=peer, **bind)
    with limits.admit(peer_host) as admitted:
        if not admitted:
            counters.inc(f"{counter}_refused")
            limits.refusals.sweep()
            limits.refusals.for_peer(peer_host).warning(
                "connection_refused", reason="connection limit", peer=peer, **bind
            )
            await stream.aclose()
            return
        counters.inc(counter)
        try:
            await converse(stream, peer, log)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            log.info("connection_lost")
        except Exception as exc:
            # A bug in a codec or a listener costs this connection only, never the others
            # and never the process (frames are guarded one by one before this).
            counters.inc(f"{counter}_crashed")
            log.error(
                "connection_crashed",
                error_type=type(exc).__name__,
                error=str(exc),
                where=crash_site(exc),
            )
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
