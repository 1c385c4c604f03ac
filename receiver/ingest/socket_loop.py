"""One trio task serving every TCP connection of a port: what the batched intake loops share.

Why one task: trio's scheduler costs a few microseconds per pass and yields on every socket
call, so a task per connection pays that (and a journal append) per frame. Here one task owns
all sockets through an ``epoll`` object (``trio.lowlevel.wait_readable`` on its fd). Per
wakeup it accepts what waits, writes to the connections now writable, reads every ready
connection once (non-blocking), hands the reads to the protocol part, commits every frame of
the wakeup in ONE call, then writes each connection's replies in frame order in one send.

``SocketLoop`` is that skeleton: accept and limits, the guarded read, the reply backlog and
the switch to EPOLLOUT, the sweep of idle, slow and stalled connections, closing, shutdown.
A protocol (``dc09_loop.Dc09Loop``, ``bridge_loop.BridgeLoop``) subclasses it and gives the
per-frame part: ``_frames`` (one read's bytes into staged frames, the connection's replies
noted on it), ``_commit`` (store what the wakeup staged) and ``_answer`` (the replies of one
connection, given the commit's outcome), plus its first deadline (``_deadline``).

Rules (every protocol's):
- ACK only after the commit returned: ``_answer`` is handed the commit's outcome. A commit in
  progress is shielded: shutdown lets it finish and queues its replies, then makes one last
  non-blocking write and closes every connection without waiting for any peer (replies still
  unwritten then count as ``send_timeout``).
- While a connection's replies wait it is not read (EPOLLOUT only): a peer that does not read
  its ACKs is not read either, and the others are served meanwhile. It is closed when its
  backlog passes ``backlog_limit`` (``replies_unread``; no bound when None: one read's
  replies at most then) or when no reply byte could be written for ``send_timeout``.
- The commit does not overlap the next reads: while a batch commits nothing is read. An
  overlapping shape (a committing task beside the reading one, at most one commit in flight)
  was built and measured A/B in session 4 and gained nothing measurable on this machine
  (see the branch ``pipeline`` history), so the loop stays serial.
- Timeouts (each counted as ``<prefix>connections_closed_<reason>``): the protocol's first
  deadline (``idle``, ``slow_frame``, ``no_hello``), ``garbage`` (``garbage_timeout`` since
  ``garbage_since``, which the protocol sets), ``send_timeout``; the one that came first.
- Connection limits in total and per peer refuse the newcomer at accept time
  (``<prefix>connections_refused``, the log line rate-limited per host).
- A bug in the handling of one connection's bytes costs that connection
  (``connection_crashed``, ``<prefix>connections_crashed``). Never the loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final, Generic, Protocol, TypeVar

import trio

from receiver.connection_limits import ConnectionLimits, next_conn_id, release, try_admit
from receiver.logs import RejectionLog, crash_site
from receiver.metrics import Counters

READ_SIZE: Final = 65536
# Replies are small: a fixed kernel send buffer (no autotuning up to megabytes) keeps memory
# per connection bounded and makes the reply backlog bound what it says.
_SEND_BUFFER: Final = 65536
# Running out of descriptors or memory: wait instead of spinning.
_RESOURCE_ERRORS: Final = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
# Reads of unread input discarded per connection at shutdown (see ``_close_everything``).
_UNREAD_AT_SHUTDOWN: Final = 16
_IN: Final = select.EPOLLIN
_OUT: Final = select.EPOLLOUT
_GONE: Final = select.EPOLLHUP | select.EPOLLERR


class Timeouts(Protocol):
    """The timeouts every port has (``Dc09Config``, ``BridgeConfig``), in seconds."""

    @property
    def idle_timeout(self) -> float: ...
    @property
    def garbage_timeout(self) -> float: ...
    @property
    def send_timeout(self) -> float: ...


class Connection:
    """One peer's TCP connection, as the loop keeps it (a protocol adds its own state)."""

    __slots__ = (
        "closed",
        "closing",
        "eof",
        "fd",
        "garbage_since",
        "host",
        "last_frame",
        "log",
        "out",
        "peer",
        "rejections",
        "sock",
        "stalled_since",
        "writing",
    )

    def __init__(self, sock: socket.socket, *, host: str, peer: str, log: Any, now: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.host = host
        self.peer = peer
        self.log = log
        self.rejections = RejectionLog(log)
        self.out = bytearray()  # replies not yet taken by the kernel
        self.last_frame = now  # the last complete frame (or the opening)
        self.garbage_since: float | None = None  # the protocol's: bytes that framed nothing
        self.stalled_since: float | None = None  # replies waiting, no byte written since
        self.writing = False  # waiting for EPOLLOUT (and not reading) while replies wait
        self.closing = False  # close once the replies are written
        self.eof = False
        self.closed = False


C = TypeVar("C", bound=Connection)
Outcome = TypeVar("Outcome")  # what a commit returns, handed to ``_answer``


class SocketLoop(Generic[C, Outcome]):
    """The listeners of one port and their connections, served by one task."""

    #: Bound to every connection's log and its refusal line (e.g. ``transport="tcp"``).
    log_fields: ClassVar[Mapping[str, str]] = {}

    def __init__(
        self,
        config: Timeouts,
        *,
        first_timeout: float,
        counters: Counters,
        limits: ConnectionLimits,
        log: Any,
        backlog_limit: int | None,
        counter_prefix: str = "",
    ) -> None:
        """``first_timeout``: the protocol's own timeout besides ``config``'s (``_deadline``
        enforces it; the sweep runs often enough for the shortest)."""
        self.counters = counters
        self.limits = limits
        self.log = log
        self.garbage_timeout = config.garbage_timeout
        self.send_timeout = config.send_timeout
        self.backlog_limit = backlog_limit
        self._prefix = counter_prefix
        timeouts = (config.idle_timeout, first_timeout, config.garbage_timeout, config.send_timeout)
        self._sweep_every = max(0.01, min(1.0, min(timeouts) / 4))
        self._epoll = select.epoll()
        self._listeners: dict[int, socket.socket] = {}
        self._conns: dict[int, C] = {}
        self._accept_paused_until = 0.0
        self._next_sweep = 0.0

    @property
    def connections(self) -> int:
        return len(self._conns)

    # -- the protocol's part ----------------------------------------------------------------

    def _connection(self, sock: socket.socket, *, host: str, peer: str, log: Any, now: float) -> C:
        """A new connection's state."""
        raise NotImplementedError

    def _register(self) -> None:
        """Register the protocol's other sockets with ``_epoll`` (see ``_ready``)."""

    def _ready(self, fd: int, now: float) -> bool:
        """``fd``, neither a listener nor a connection, is ready: True if it staged replies
        that wait for this wakeup's commit (``_answered`` sends them)."""
        del fd, now
        return False

    async def _before_frames(self, reads: Sequence[tuple[C, bytes]]) -> None:
        """Called once per wakeup with reads, before ``_frames`` (e.g. a registry refresh)."""

    def _frames(self, conn: C, data: bytes, now: float) -> bool:
        """Feed one read to the connection's codec: stage what to store for ``_commit``, note
        the replies on the connection, keep ``last_frame``/``garbage_since``. True: replies
        wait for ``_answer``. A raise costs this connection only."""
        raise NotImplementedError

    async def _commit(self) -> Outcome:
        """Store what this wakeup staged (runs shielded)."""
        raise NotImplementedError

    def _answer(self, conn: C, outcome: Outcome) -> None:
        """Queue the connection's replies of this wakeup on ``conn.out``, in frame order."""
        raise NotImplementedError

    def _answered(self, outcome: Outcome) -> None:
        """After every connection was answered (e.g. the protocol's other sockets)."""

    def _deadline(self, conn: C) -> tuple[float, str]:
        """The protocol's first deadline of a connection and its reason."""
        raise NotImplementedError

    # -- the loop ---------------------------------------------------------------------------

    async def serve(self, listeners: Sequence[socket.socket]) -> None:
        """Serve until cancelled, then close every socket (the sockets become the loop's)."""
        try:
            for sock in listeners:
                sock.setblocking(False)
                self._listeners[sock.fileno()] = sock
                self._epoll.register(sock.fileno(), _IN)
            self._register()
            await self._run()
        finally:
            self._close_everything()

    async def _run(self) -> None:
        epoll, conns, listeners = self._epoll, self._conns, self._listeners
        self._next_sweep = trio.current_time() + self._sweep_every
        while True:
            with trio.move_on_at(self._next_sweep):
                await trio.lowlevel.wait_readable(epoll)
            now = trio.current_time()
            if now >= self._next_sweep:
                self._sweep(now)
                self._next_sweep = now + self._sweep_every
            reads: list[tuple[C, bytes]] = []
            others = False
            for fd, mask in epoll.poll(0):
                conn = conns.get(fd)
                if conn is not None:
                    if mask & _OUT or (conn.writing and mask & _GONE):
                        self._flush(conn)  # a peer gone makes the send fail: closed
                        if conn.writing and mask & _GONE and not conn.closed:
                            self._close(conn, "connection_lost")
                    if mask & ~_OUT and not (conn.eof or conn.closed or conn.writing):
                        data = self._receive(conn)
                        if data:
                            reads.append((conn, data))
                elif fd in listeners:
                    if now >= self._accept_paused_until:
                        self._accept(listeners[fd], now)
                elif self._ready(fd, now):
                    others = True
            touched: list[C] = []
            if reads:
                await self._before_frames(reads)
                for conn, data in reads:
                    try:
                        if self._frames(conn, data, now):
                            touched.append(conn)
                    except Exception as exc:  # no input may end the loop
                        self._crashed(conn, exc)
            if not (touched or others):
                continue
            # Shielded: a batch being stored still gets its replies during shutdown.
            with trio.CancelScope(shield=True):
                outcome = await self._commit()
            for conn in touched:
                if not conn.closed:
                    self._answer(conn, outcome)
                    self._flush(conn)
            self._answered(outcome)

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
                self.counters.inc(f"{self._prefix}connections_refused")
                refusals = self.limits.refusals
                refusals.sweep()
                refusals.for_peer(host).warning(
                    "connection_refused", reason="connection limit", peer=peer, **self.log_fields
                )
                sock.close()
                continue
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            except OSError:  # gone before it was set up (reset in the backlog): nothing to serve
                release(self.limits, host)
                sock.close()
                continue
            log = self.log.bind(conn_id=next_conn_id(), peer=peer, **self.log_fields)
            conn = self._connection(sock, host=host, peer=peer, log=log, now=now)
            self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _IN)
            self.counters.inc(f"{self._prefix}connections")

    def _receive(self, conn: C) -> bytes:
        """One non-blocking read; b"" when there is nothing (or the connection ended)."""
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            self._close(conn, "connection_lost")
            return b""
        if not data:
            conn.eof = True
            if conn.out:
                # Written replies still wait for the kernel: close once they are taken.
                self._epoll.modify(conn.fd, _OUT)
                conn.writing = True
            else:
                self._close(conn, None)
        return data

    def _crashed(self, conn: C, exc: Exception) -> None:
        """A bug that one peer's bytes triggered: logged, counted, that connection closed (what
        the protocol staged of it may be stored, never answered: the peer retries)."""
        self.counters.inc(f"{self._prefix}connections_crashed")
        conn.log.error(
            "connection_crashed",
            error_type=type(exc).__name__,
            error=str(exc),
            where=crash_site(exc),
        )
        self._close(conn, None)

    def _flush(self, conn: C) -> None:
        """Write what waits. While replies wait the connection is not read (EPOLLOUT only):
        a peer not reading its replies is not read either, and its backlog stays bounded."""
        out = conn.out
        sent = 0
        if out:
            try:
                sent = conn.sock.send(out)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(conn, "connection_lost")
                return
            del out[:sent]
        if out:
            limit = self.backlog_limit
            if limit is not None and len(out) > limit:
                self._close(conn, "replies_unread")
                return
            if sent or conn.stalled_since is None:
                conn.stalled_since = trio.current_time()
            if not conn.writing:
                self._epoll.modify(conn.fd, _OUT)
                conn.writing = True
            return
        conn.stalled_since = None
        if conn.eof or conn.closing:
            self._close(conn, None)
        elif conn.writing:
            self._epoll.modify(conn.fd, _IN)
            conn.writing = False

    def _sweep(self, now: float) -> None:
        """Close connections past a deadline; the reason is the deadline that came first."""
        garbage_timeout, send_timeout = self.garbage_timeout, self.send_timeout
        first_deadline = self._deadline
        expired: list[tuple[C, str]] = []
        for conn in self._conns.values():
            deadline, reason = first_deadline(conn)
            if conn.garbage_since is not None:
                due = conn.garbage_since + garbage_timeout
                if due < deadline:
                    deadline, reason = due, "garbage"
            if conn.stalled_since is not None:
                due = conn.stalled_since + send_timeout
                if due < deadline:
                    deadline, reason = due, "send_timeout"
            if now >= deadline:
                expired.append((conn, reason))
        for conn, reason in expired:
            self._timed_out(conn, reason)

    def _timed_out(self, conn: C, reason: str) -> None:
        self.counters.inc(f"{self._prefix}connections_closed_{reason}")
        conn.log.info("connection_timeout", reason=reason)
        self._close(conn, None)

    def _close(self, conn: C, reason: str | None) -> None:
        """Forget and close a connection; ``reason`` is counted and logged when given."""
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        if reason is not None:
            self.counters.inc(f"{self._prefix}connections_closed_{reason}")
            conn.log.info(reason, unsent_bytes=len(conn.out) or None)
        with contextlib.suppress(OSError):
            self._epoll.unregister(conn.fd)
        conn.sock.close()
        conn.rejections.close()
        release(self.limits, conn.host)

    def _close_everything(self) -> None:
        """Shutdown: one last non-blocking write of what is committed, then close, never wait.

        Bytes the peer sent that were never read are discarded first (a bounded number of
        non-blocking reads): closing a socket with unread input sends a reset, and a reset
        makes the peer's kernel drop the ACKs just written before the panel reads them."""
        for conn in list(self._conns.values()):
            if conn.out:
                with contextlib.suppress(OSError):
                    del conn.out[: conn.sock.send(conn.out)]
            with contextlib.suppress(OSError):  # BlockingIOError once nothing is left
                for _ in range(_UNREAD_AT_SHUTDOWN):
                    if not conn.sock.recv(READ_SIZE):
                        break
            if conn.out:
                self._timed_out(conn, "send_timeout")  # shutdown is its write's deadline
            else:
                self._close(conn, None)
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()
        self._epoll.close()
