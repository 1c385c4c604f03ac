"""One trio task serving every TCP connection of a port: what the batched intake loops share.

Why one task: trio's scheduler costs a few microseconds per pass and yields on every socket
call, so a task per connection pays that (and a journal append) per frame. Here one task owns
all sockets through an ``epoll`` object (``trio.lowlevel.wait_readable`` on its fd). Per
wakeup it accepts what waits, writes to the connections now writable, reads every ready
connection once (non-blocking) and hands the reads to the protocol part, which stages them
into the next batch. Every frame of a batch is committed in ONE call, then each connection's
replies of the batch go out in frame order in one send.

``SocketLoop`` is that skeleton: accept and limits, the guarded read, the reply backlog and
the switch to EPOLLOUT, the sweep of idle, slow and stalled connections, closing, shutdown.
A protocol (``dc09_loop.Dc09Loop``, ``bridge_loop.BridgeLoop``) subclasses it and gives the
per-frame part: ``_frames`` (one read's bytes into staged frames, the connection's replies
noted on it), ``_take`` (seal what was staged, and those replies, into the next batch),
``_commit`` (store a batch) and ``_answer`` (queue a batch's replies, given the commit's
outcome), plus its first deadline (``_deadline``).

The commit overlaps the next reads: a second task (``_commit_batches``) commits one batch at a
time while the reading task keeps reading and staging the next one; as soon as a commit
returns, its replies are queued and written, and the batch staged meanwhile goes to the
journal. At most one commit is in flight per loop. So the main thread's decoding and the
commit thread's SQLite work run at the same time, and a panel answered by batch N can land
in N+1 while N+1's first frames are already staged.

Rules (every protocol's):
- ACK only after the commit that holds the frame returned: ``_answer`` is handed the outcome of
  the batch's own commit. A commit whose outcome is unknown costs the ACKs of its batch only.
- Replies per connection in frame order, across batches: batches are committed and answered
  one after the other, in the order they were staged, and a connection's replies of a batch
  (ACKs and rejections in their place) are queued only after those of the batch before.
- A commit in progress is shielded: shutdown lets it finish and queues its replies, then makes
  one last non-blocking write and closes every connection without waiting for any peer
  (replies still unwritten then count as ``send_timeout``). A batch staged but not yet handed
  to the journal is dropped at shutdown: nothing of it is stored or answered (the peer
  retries).
- While a connection's replies wait in its send backlog it is not read (EPOLLOUT only): a
  peer that does not read its ACKs is not read either, and the others are served meanwhile.
  It is closed when its backlog passes ``backlog_limit`` (``replies_unread``) or when no reply
  byte could be written for ``send_timeout``.
- Frames staged but not yet committed do not stop the reading (that is the overlap), but a
  connection (and the protocol's other sockets, e.g. UDP) read into the next batch while a
  commit is in flight is not read again until that batch goes to the journal (``held``, no
  epoll interest): what waits per connection is at most the batch in flight, one read staged
  and the send backlog.
- A connection that ends (EOF) or crashes while its frames are staged or in flight: after
  EOF its remaining batches are still answered, then it is closed once written; after a
  crash or a reset its frames staged by then are stored, never answered.
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
        "batches",
        "closed",
        "closing",
        "eof",
        "fd",
        "garbage_since",
        "held",
        "host",
        "last_frame",
        "log",
        "mask",
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
        self.held = False  # read into the next batch while a commit is in flight: not read
        self.batches = 0  # batches (staged or in flight) that hold replies for it
        self.mask = _IN  # its epoll interest
        self.closing = False  # close once the replies are written
        self.eof = False
        self.closed = False


C = TypeVar("C", bound=Connection)
Batch = TypeVar("Batch")  # what ``_take`` seals: the staged frames and their replies
Outcome = TypeVar("Outcome")  # what a commit returns, handed to ``_answer``


class SocketLoop(Generic[C, Batch, Outcome]):
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
        # The next batch: connections with replies in it (in the order they were read), and
        # whether the protocol's other sockets staged replies; the committer's wake-up.
        self._pending: dict[C, None] = {}
        self._others_pending = False
        self._held_others: list[int] = []
        self._in_flight = False
        self._wake = trio.Event()

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
        that wait for the next batch's commit (``_answered`` sends them)."""
        del fd, now
        return False

    async def _before_frames(self, reads: Sequence[tuple[C, bytes]]) -> None:
        """Called once per wakeup with reads, before ``_frames`` (e.g. a registry refresh)."""

    def _frames(self, conn: C, data: bytes, now: float) -> bool:
        """Feed one read to the connection's codec: stage what to store, note the replies on
        the connection (after those noted before: a connection may be read twice before its
        batch is taken), keep ``last_frame``/``garbage_since``. True: replies wait for the
        next batch. A raise costs this connection only."""
        raise NotImplementedError

    def _take(self, conns: Sequence[C]) -> Batch:
        """Seal the next batch: everything staged since the last one, and the replies noted on
        ``conns`` (moved off them, in frame order), and the other sockets' replies."""
        raise NotImplementedError

    async def _commit(self, batch: Batch) -> Outcome:
        """Store a batch (runs shielded)."""
        raise NotImplementedError

    def _answer(self, batch: Batch, outcome: Outcome) -> None:
        """Queue the batch's replies on each connection's ``out`` that is still open, in frame
        order (the loop then writes them)."""
        raise NotImplementedError

    def _answered(self, batch: Batch, outcome: Outcome) -> None:
        """After every connection of the batch was written (e.g. the other sockets' replies)."""

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
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._commit_batches)
            await self._read()

    async def _read(self) -> None:
        """The reading task: wait, sweep, accept, write, read and stage into the next batch."""
        epoll, conns, listeners = self._epoll, self._conns, self._listeners
        pending = self._pending
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
                    if conn.closed or conn.writing:
                        continue
                    if conn.held or conn.eof:
                        if mask & _GONE:  # reset while its replies are staged or in flight
                            self._close(conn, "connection_lost")
                    elif mask & ~_OUT:
                        data = self._receive(conn)
                        if data:
                            reads.append((conn, data))
                elif fd in listeners:
                    if now >= self._accept_paused_until:
                        self._accept(listeners[fd], now)
                elif self._ready(fd, now):
                    others = True
                    if self._in_flight:
                        epoll.modify(fd, 0)  # read once per batch while a commit runs
                        self._held_others.append(fd)
            if reads:
                await self._before_frames(reads)
                in_flight = self._in_flight
                for conn, data in reads:
                    if conn.closed:  # while the registry was refreshed
                        continue
                    try:
                        if self._frames(conn, data, now) and conn not in pending:
                            pending[conn] = None
                            conn.batches += 1
                            if in_flight and not conn.closed:
                                conn.held = True
                                self._interest(conn)
                    except Exception as exc:  # no input may end the loop
                        self._crashed(conn, exc)
            if others:
                self._others_pending = True
            if pending or self._others_pending:
                self._wake.set()

    async def _commit_batches(self) -> None:
        """The committing task: one batch at a time, in the order staged, each answered as
        soon as its commit returns; the next batch was read meanwhile."""
        epoll = self._epoll
        while True:
            await self._wake.wait()  # a checkpoint: cancelled here, a staged batch is dropped
            self._wake = trio.Event()
            conns = [conn for conn in self._pending if not conn.closed]
            self._pending.clear()
            self._others_pending = False
            for conn in conns:
                if conn.held:
                    conn.held = False
                    self._interest(conn)
            for fd in self._held_others:
                epoll.modify(fd, _IN)
            self._held_others.clear()
            batch = self._take(conns)
            self._in_flight = True
            try:
                # Shielded: a batch being stored still gets its replies during shutdown.
                with trio.CancelScope(shield=True):
                    outcome = await self._commit(batch)
            finally:
                self._in_flight = False
            for conn in conns:
                conn.batches -= 1
            self._answer(batch, outcome)
            for conn in conns:
                if not conn.closed:
                    self._flush(conn)
            self._answered(batch, outcome)

    def _interest(self, conn: C) -> None:
        """Set the connection's epoll interest from its state: EPOLLOUT while replies wait in
        its backlog, nothing while held or ended with replies to come, else EPOLLIN."""
        if conn.writing:
            mask = _OUT
        elif conn.held or conn.eof:
            mask = 0
        else:
            mask = _IN
        if mask != conn.mask:
            self._epoll.modify(conn.fd, mask)
            conn.mask = mask

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
                conn.writing = True
                self._interest(conn)
            elif conn.batches:
                self._interest(conn)  # its staged frames are answered first, then it closes
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
                conn.writing = True
                self._interest(conn)
            return
        conn.stalled_since = None
        if (conn.eof or conn.closing) and not conn.batches:
            self._close(conn, None)
        elif conn.writing:
            conn.writing = False
            self._interest(conn)

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
        """Shutdown: one last non-blocking write of what is committed, then close, never wait."""
        for conn in list(self._conns.values()):
            if conn.out:
                with contextlib.suppress(OSError):
                    del conn.out[: conn.sock.send(conn.out)]
            if conn.out:
                self._timed_out(conn, "send_timeout")  # shutdown is its write's deadline
            else:
                self._close(conn, None)
        for sock in self._listeners.values():
            sock.close()
        self._listeners.clear()
        self._epoll.close()
