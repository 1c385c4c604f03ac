"""The batched bridge loop: one trio task serves every video bridge connection of the port.

Why one task: as for DC-09 (``receiver.ingest.dc09_loop``), trio's scheduler costs a few
microseconds per pass and a task per connection pays that, and a journal append, per frame.
Here one task owns all sockets through an ``epoll`` object: per wakeup it accepts what waits,
reads every ready socket once (non-blocking), feeds each connection's ``BridgeConnection``,
stores every frame of the wakeup in ONE journal append (``BridgeIntake.store``), then writes
each connection's replies in frame order in one send.

Rules (the same guarantees as the task-per-connection ``BridgeServer._converse``):
- ACK only after the append returned (and, for a heartbeat that changed the stored arming
  state or firmware, after that row is written); a batch whose outcome is unknown is answered
  NAK ``busy``. A commit in progress is shielded: shutdown lets it finish and writes its
  replies once, without waiting for any peer.
- A HELLO is decided on the registry as of now: a wakeup that may hold one (a connection not
  yet open, or the bytes of a HELLO header) refreshes the registry once before deciding.
- Timeouts (counted as ``bridge_connections_closed_<reason>``): ``no_hello``: no accepted
  HELLO within ``hello_timeout`` of the opening; ``idle``: ``idle_timeout`` since the last
  complete frame, accepted or rejected; ``garbage``: ``garbage_timeout`` since the first read
  after the last frame that completed no frame; ``send_timeout``: replies waiting and no byte
  of them written for ``send_timeout`` (also what shutdown counts for replies still unwritten).
- While a connection's replies wait, it is not read (EPOLLOUT only): a bridge that does not
  read its ACKs is not read either, so what waits for it is bounded by one read's replies, and
  the others are served meanwhile.
- Connection limits in total and per peer refuse the newcomer at accept time
  (``bridge_connections_refused``, the log line rate-limited per host).
- A bug one frame triggers costs that frame (``BridgeIntake.prepare``/``hello`` answer NAK
  ``malformed``); a bug in the handling of one connection's bytes costs that connection
  (``connection_crashed``, ``bridge_connections_crashed``): its frames of that read are
  neither stored nor ACKed. Never the loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections.abc import Sequence
from typing import Any, Final

import trio

from protocols.bridge import (
    MAGIC,
    NEED_DATA,
    VERSION,
    BridgeConnection,
    BridgeState,
    Envelope,
    Hello,
    MessageType,
)
from protocols.errors import FramingError, RemoteProtocolError
from receiver.bridge_listener import BridgeIntake, Prepared, Session
from receiver.config import BridgeConfig
from receiver.connection_limits import ConnectionLimits, next_conn_id, release, try_admit
from receiver.logs import RejectionLog, crash_site
from receiver.metrics import Counters

_READ_SIZE: Final = 65536
_SEND_BUFFER: Final = 65536  # fixed: memory per connection stays bounded
_RESOURCE_ERRORS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_IN: Final = select.EPOLLIN
_GONE: Final = select.EPOLLHUP | select.EPOLLERR
_HELLO_HEADER: Final = MAGIC + bytes([VERSION, MessageType.HELLO])


class _Bridge:
    """One bridge's TCP connection, as the loop keeps it."""

    __slots__ = (
        "closed",
        "closing",
        "codec",
        "eof",
        "fd",
        "garbage_since",
        "host",
        "last_frame",
        "log",
        "opened",
        "out",
        "peer",
        "rejections",
        "session",
        "sock",
        "stalled_since",
        "writing",
    )

    def __init__(
        self,
        sock: socket.socket,
        *,
        host: str,
        peer: str,
        config: BridgeConfig,
        log: Any,
        now: float,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.host = host
        self.peer = peer
        self.codec = BridgeConnection("receiver", max_body=config.max_body)
        self.session = Session()
        self.log = log
        self.rejections = RejectionLog(log)
        self.out = bytearray()  # replies not yet taken by the kernel
        self.opened = self.last_frame = now
        self.garbage_since: float | None = None
        self.stalled_since: float | None = None
        self.writing = False  # waiting for EPOLLOUT (and not reading) while replies wait
        self.closing = False  # a refused HELLO: close once its NAK is written
        self.eof = False
        self.closed = False


class BridgeLoop:
    """The bridge port's listeners, served by one task."""

    def __init__(self, intake: BridgeIntake, limits: ConnectionLimits, log: Any) -> None:
        self.intake = intake
        self.config: BridgeConfig = intake.config
        self.counters: Counters = intake.counters
        self.limits = limits
        self.log = log
        self._epoll = select.epoll()
        self._listeners: dict[int, socket.socket] = {}
        self._conns: dict[int, _Bridge] = {}
        self._accept_paused_until = 0.0
        config = self.config
        shortest = min(
            config.idle_timeout, config.hello_timeout, config.garbage_timeout, config.send_timeout
        )
        self._sweep_every = max(0.01, min(1.0, shortest / 4))
        self._next_sweep = 0.0

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def serve(self, listeners: Sequence[socket.socket]) -> None:
        """Serve until cancelled, then close every socket (the sockets become the loop's)."""
        try:
            for sock in listeners:
                sock.setblocking(False)
                self._listeners[sock.fileno()] = sock
                self._epoll.register(sock.fileno(), _IN)
            await self._run()
        finally:
            self._close_everything()

    async def _run(self) -> None:
        epoll = self._epoll
        self._next_sweep = trio.current_time() + self._sweep_every
        while True:
            with trio.move_on_at(self._next_sweep):
                await trio.lowlevel.wait_readable(epoll)
            now = trio.current_time()
            if now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + self._sweep_every
            reads: list[tuple[_Bridge, bytes]] = []
            for fd, mask in epoll.poll(0):
                conn = self._conns.get(fd)
                if conn is not None:
                    if mask & select.EPOLLOUT or (conn.writing and mask & _GONE):
                        self._flush(conn)  # a peer gone makes the send fail: closed
                        if conn.writing and mask & _GONE and not conn.closed:
                            self._close(conn, lost=True)
                    if mask & ~select.EPOLLOUT and not (conn.eof or conn.closed or conn.writing):
                        data = self._receive(conn)
                        if data:
                            reads.append((conn, data))
                elif fd in self._listeners and now >= self._accept_paused_until:
                    self._accept(self._listeners[fd], now)
            if not reads:
                continue
            if any(c.codec.state is not BridgeState.OPEN or _HELLO_HEADER in d for c, d in reads):
                await self.intake.refresh_registry()
            batch: list[Prepared] = []
            answered: list[tuple[_Bridge, list[Prepared]]] = []
            for conn, data in reads:
                frames = self._frames_guarded(conn, data, now)
                if frames:
                    batch += frames
                    answered.append((conn, frames))
            if not batch:
                continue
            # Shielded: a batch being stored still gets its replies during shutdown.
            with trio.CancelScope(shield=True):
                stored = await self.intake.store(batch, self.log)
                waits = await self.intake.wait_states(batch, stored)
            for conn, frames in answered:
                if conn.closed:
                    continue
                conn.out += b"".join(self.intake.replies(conn.codec, frames, stored, waits))
                self._flush(conn)

    # -- connections ----------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, now: float) -> None:
        """Accept every connection waiting (a reconnect storm must not wait a pass each)."""
        while True:
            try:
                sock, address = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in _RESOURCE_ERRORS:
                    raise
                self.log.error("accept_failed", error=os.strerror(exc.errno or 0))
                self._accept_paused_until = now + 0.1
                return
            host, port = address[0], address[1]
            peer = f"{host}:{port}"
            if not try_admit(self.limits, host):
                self.counters.inc("bridge_connections_refused")
                refusals = self.limits.refusals
                refusals.sweep()
                refusals.for_peer(host).warning(
                    "connection_refused", reason="connection limit", peer=peer
                )
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            log = self.log.bind(conn_id=next_conn_id(), peer=peer)
            conn = _Bridge(sock, host=host, peer=peer, config=self.config, log=log, now=now)
            self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _IN)
            self.counters.inc("bridge_connections")

    def _receive(self, conn: _Bridge) -> bytes:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            self._close(conn, lost=True)
            return b""
        if not data:
            conn.eof = True
            if not conn.out:
                self._close(conn)
        return data

    def _frames_guarded(self, conn: _Bridge, data: bytes, now: float) -> list[Prepared]:
        """``_frames``, but a bug that one peer's bytes trigger costs that connection only."""
        try:
            return self._frames(conn, data, now)
        except Exception as exc:  # no input may end the loop
            self.counters.inc("bridge_connections_crashed")
            conn.log.error(
                "connection_crashed",
                error_type=type(exc).__name__,
                error=str(exc),
                where=crash_site(exc),
            )
            self._close(conn)
            return []

    def _frames(self, conn: _Bridge, data: bytes, now: float) -> list[Prepared]:
        """Feed one read to the connection's codec: what each complete frame calls for."""
        codec, intake = conn.codec, self.intake
        codec.receive_data(data)
        frames: list[Prepared] = []
        framed = False
        while not conn.closing:
            event = codec.next_event()
            if event is NEED_DATA:
                break
            if isinstance(event, RemoteProtocolError):
                framed = framed or not isinstance(event, FramingError)
                frames.append(intake.refuse(codec, event, conn.rejections))
                continue
            assert isinstance(event, Envelope)
            framed = True
            if isinstance(event.body, Hello):
                prepared = intake.hello(codec, event, conn.session, conn.peer, conn.rejections)
                if prepared.serial is not None:
                    conn.log = conn.log.bind(serial=prepared.serial)
                    conn.rejections = conn.rejections.bind(serial=prepared.serial)
                conn.closing = prepared.close_after
                frames.append(prepared)
            else:
                frames.append(intake.prepare(event, conn.session, conn.peer, codec))
        if framed:
            conn.last_frame, conn.garbage_since = now, None
        elif conn.garbage_since is None:
            conn.garbage_since = now
        return frames

    def _flush(self, conn: _Bridge) -> None:
        """Write what waits. While replies wait the connection is not read (EPOLLOUT only)."""
        out = conn.out
        sent = 0
        if out:
            try:
                sent = conn.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn, lost=True)
                return
            del out[:sent]
        if out:
            if sent or conn.stalled_since is None:
                conn.stalled_since = trio.current_time()
            if not conn.writing:
                self._epoll.modify(conn.fd, select.EPOLLOUT)
                conn.writing = True
            return
        conn.stalled_since = None
        if conn.eof or conn.closing:
            self._close(conn)
        elif conn.writing:
            self._epoll.modify(conn.fd, _IN)
            conn.writing = False

    def _sweep(self, now: float) -> None:
        """Close connections past a deadline; the reason is the deadline that came first."""
        config = self.config
        expired: list[tuple[_Bridge, str]] = []
        for conn in self._conns.values():
            if conn.codec.state is BridgeState.OPEN:
                deadline, reason = conn.last_frame + config.idle_timeout, "idle"
            else:
                deadline, reason = conn.opened + config.hello_timeout, "no_hello"
            if conn.garbage_since is not None:
                due = conn.garbage_since + config.garbage_timeout
                if due < deadline:
                    deadline, reason = due, "garbage"
            if conn.stalled_since is not None:
                due = conn.stalled_since + config.send_timeout
                if due < deadline:
                    deadline, reason = due, "send_timeout"
            if now >= deadline:
                expired.append((conn, reason))
        for conn, reason in expired:
            self._timed_out(conn, reason)

    def _timed_out(self, conn: _Bridge, reason: str) -> None:
        self.counters.inc(f"bridge_connections_closed_{reason}")
        conn.log.info("connection_timeout", reason=reason)
        self._close(conn)

    def _close(self, conn: _Bridge, *, lost: bool = False) -> None:
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        if lost:
            conn.log.info("connection_lost")
        with contextlib.suppress(OSError):
            self._epoll.unregister(conn.fd)
        conn.sock.close()
        conn.rejections.close()
        release(self.limits, conn.host)

    def _close_everything(self) -> None:
        """Shutdown: one last non-blocking write of what is committed, then close, never wait."""
        for conn in list(self._conns.values()):
            if conn.out:
                with contextlib.suppress(OSError):
                    del conn.out[: conn.sock.send(conn.out)]
            if conn.out:
                self._timed_out(conn, "send_timeout")  # shutdown is its write's deadline
            else:
                self._close(conn)
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()
        self._epoll.close()
