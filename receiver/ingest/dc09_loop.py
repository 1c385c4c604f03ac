"""The batched DC-09 ingest loop: one trio task serves every TCP connection and the UDP socket.

Why one task: trio's scheduler costs a few microseconds per pass and yields on every socket
call, so a task per connection pays that per frame. Here one task owns all sockets through an
``epoll`` object (``trio.lowlevel.wait_readable`` on its fd): per wakeup it accepts what waits,
reads every ready socket once (non-blocking), feeds each connection's receiving engine,
commits every accepted frame of the wakeup in ONE journal append, then writes each connection's
replies in order in one send.

Rules:
- ACK only after the append returned. A commit in progress is shielded: shutdown lets it finish
  and queues its ACKs, then closes every connection without waiting for any peer.
- Replies that a peer does not read are kept (``reply_backlog_bytes`` at most, per connection)
  and written when the socket is writable again; meanwhile that connection is not read (its
  panel waits, the others do not). It is closed when its backlog passes the bound
  (``connections_closed_replies_unread``) or when no reply byte could be written for
  ``send_timeout`` (``connections_closed_send_timeout``): a panel that does not read its ACKs
  never stalls the others. Shutdown makes one last non-blocking write and waits for no peer:
  replies still unwritten then count as ``send_timeout`` too.
- Timeouts (each counted as ``connections_closed_<reason>``): ``idle``: no complete frame
  (accepted or rejected; bytes the splitter discarded are garbage and no activity) for
  ``idle_timeout``; ``slow_frame``: the oldest incomplete frame is ``frame_timeout`` old (its
  clock starts with the read that brought its first bytes after the last frame completed, so a
  panel pipelining frames across reads is never cut off); ``garbage``: ``garbage_timeout``
  since the first bytes discarded after the last frame.
- Connection limits in total and per peer address refuse the newcomer at accept time
  (``connections_refused``, the log line rate-limited per host).
- Every rejection is counted; its log line goes through a ``RejectionLog`` per connection (per
  UDP source address), so a flood logs a few lines and a count.
- A bug that one frame triggers costs that frame (``Crashed``: DUH, ``frame_crashed``); a bug
  in the loop's handling of one connection's bytes costs that connection
  (``connection_crashed``, ``connections_crashed``); a datagram's, that datagram. Never the loop.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from collections.abc import Sequence
from typing import Any

import trio

from protocols.dc09_engine import Accepted, Crashed, Dc09Engine
from protocols.stream import NEED_DATA
from receiver.config import Dc09Config
from receiver.connection_limits import ConnectionLimits, next_conn_id, release, try_admit
from receiver.ingest.intake import Dc09Intake, Staged
from receiver.logs import PeerRejectionLogs, RejectionLog, crash_site, raw_text
from receiver.metrics import Counters
from receiver.registry_index import ResolvedAccount

_READ_SIZE = 65536
# A panel's replies are small: a fixed kernel send buffer (no autotuning up to megabytes)
# keeps memory per connection bounded and makes the reply backlog bound what it says.
_SEND_BUFFER = 65536
_UDP_PER_WAKEUP = 512  # datagrams read per wakeup, so TCP peers are served in between
# Running out of descriptors or memory: wait instead of spinning.
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_IN = select.EPOLLIN


class _Connection:
    """One panel's TCP connection, as the loop keeps it."""

    __slots__ = (
        "closed",
        "engine",
        "eof",
        "fd",
        "garbage_since",
        "host",
        "last_frame",
        "log",
        "out",
        "peer",
        "pending_since",
        "rejections",
        "slots",
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
        engine: Dc09Engine[ResolvedAccount],
        log: Any,
        now: float,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.host = host
        self.peer = peer
        self.engine = engine
        self.log = log
        self.out = bytearray()  # replies not yet taken by the kernel
        # This wakeup's replies in frame order: bytes (send as is) or a Staged (its ACK, if
        # the commit holds it).
        self.slots: list[bytes | Staged] = []
        self.last_frame = now  # the last complete frame (or the opening)
        self.pending_since: float | None = None  # the oldest incomplete frame's first read
        self.garbage_since: float | None = None  # the first discarded bytes since the last frame
        self.stalled_since: float | None = None  # replies waiting, no byte written since
        self.rejections = RejectionLog(log)
        self.writing = False  # waiting for EPOLLOUT (and not reading) while replies wait
        self.eof = False
        self.closed = False


class Dc09Loop:
    """TCP listeners and the UDP socket of one DC-09 port, served by one task."""

    def __init__(self, intake: Dc09Intake, limits: ConnectionLimits, log: Any) -> None:
        self.intake = intake
        self.config: Dc09Config = intake.config
        self.counters: Counters = intake.counters
        self.limits = limits
        self.log = log
        self.backlog_limit = self.config.reply_backlog_bytes
        self._epoll = select.epoll()
        self._listeners: dict[int, socket.socket] = {}
        self._udp: socket.socket | None = None
        self._udp_engine = intake.engine()
        self._udp_log = log.bind(transport="udp")
        # Rejections are rate-limited per source address, whatever its port.
        self._udp_rejections = PeerRejectionLogs(self._udp_log)
        self._conns: dict[int, _Connection] = {}
        self._accept_paused_until = 0.0
        config = self.config
        shortest = min(
            config.idle_timeout, config.frame_timeout, config.garbage_timeout, config.send_timeout
        )
        self._sweep_every = max(0.01, min(1.0, shortest / 4))
        self._next_sweep = 0.0

    @property
    def connections(self) -> int:
        return len(self._conns)

    async def serve(self, listeners: Sequence[socket.socket], udp: socket.socket | None) -> None:
        """Serve until cancelled, then close every socket (the sockets become the loop's)."""
        try:
            for sock in listeners:
                sock.setblocking(False)
                self._listeners[sock.fileno()] = sock
                self._epoll.register(sock.fileno(), _IN)
            if udp is not None:
                udp.setblocking(False)
                self._udp = udp
                self._epoll.register(udp.fileno(), _IN)
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
            staged: list[Staged] = []
            touched: list[_Connection] = []
            udp_replies: list[tuple[bytes | Staged, Any, str]] = []
            for fd, mask in epoll.poll(0):
                conn = self._conns.get(fd)
                if conn is not None:
                    if mask & select.EPOLLOUT:
                        self._flush(conn)
                    if mask & ~select.EPOLLOUT and not (conn.eof or conn.closed):
                        self._read_guarded(conn, now, staged, touched)
                elif fd in self._listeners:
                    if now >= self._accept_paused_until:
                        self._accept(self._listeners[fd], now)
                elif self._udp is not None and fd == self._udp.fileno():
                    self._read_udp(self._udp, staged, udp_replies)
            committed = True
            if staged:
                # Shielded: a batch being stored still gets its ACKs during shutdown.
                with trio.CancelScope(shield=True):
                    committed = await self.intake.commit(staged, self.log)
            for conn in touched:
                self._answer(conn, committed)
            if udp_replies:
                self._answer_udp(udp_replies, committed)
            self.intake.log_committed()

    # -- TCP ------------------------------------------------------------------------------------

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
            log = self.log.bind(conn_id=next_conn_id(), peer=peer, transport="tcp")
            if not try_admit(self.limits, host):
                self.counters.inc("connections_refused")
                refusals = self.limits.refusals
                refusals.sweep()
                refusals.for_peer(host).warning(
                    "connection_refused", reason="connection limit", peer=peer, transport="tcp"
                )
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
            conn = _Connection(
                sock, host=host, peer=peer, engine=self.intake.engine(), log=log, now=now
            )
            self._conns[conn.fd] = conn
            self._epoll.register(conn.fd, _IN)
            self.counters.inc("connections")

    def _read_guarded(
        self, conn: _Connection, now: float, staged: list[Staged], touched: list[_Connection]
    ) -> None:
        """``_read``, but a bug that one peer's bytes trigger costs that connection only: it is
        logged and closed (frames of it already staged are stored, never ACKed: the panel
        retries and the dedupe key absorbs the retry)."""
        try:
            self._read(conn, now, staged, touched)
        except Exception as exc:  # no input may end the loop
            self.counters.inc("connections_crashed")
            conn.log.error(
                "connection_crashed",
                error_type=type(exc).__name__,
                error=str(exc),
                where=crash_site(exc),
            )
            # Frames of it already staged are stored, never ACKed: the panel retries and the
            # dedupe key absorbs the retry.
            conn.slots.clear()
            self._close(conn, None)

    def _read(
        self, conn: _Connection, now: float, staged: list[Staged], touched: list[_Connection]
    ) -> None:
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn, "connection_lost")
            return
        if not data:
            conn.eof = True
            if conn.out:
                # Written replies still wait for the kernel: close once they are taken.
                self._epoll.modify(conn.fd, select.EPOLLOUT)
                conn.writing = True
            else:
                self._close(conn, None)
            return
        engine = conn.engine
        engine.receive_data(data)
        completed = False  # a frame or discarded bytes: the front of the buffer moved
        slots = conn.slots
        had_slots = bool(slots)
        intake = self.intake
        while True:
            event = engine.next_event()
            if event is NEED_DATA:
                break
            completed = True
            if isinstance(event, Accepted):
                frame = intake.stage(event, conn.peer)
                staged.append(frame)
                slots.append(frame)
                conn.last_frame, conn.garbage_since = now, None
                continue
            if isinstance(event, Crashed):
                intake.crashed(event, conn.rejections)
                conn.last_frame, conn.garbage_since = now, None
            else:
                intake.rejected(event, conn.rejections)
                if not event.framing:
                    conn.last_frame, conn.garbage_since = now, None
                elif conn.garbage_since is None:
                    conn.garbage_since = now
            if event.reply is not None:
                slots.append(event.reply)
        if slots and not had_slots:
            touched.append(conn)
        if not engine.pending_bytes:
            conn.pending_since = None
        elif completed or conn.pending_since is None:
            conn.pending_since = now  # the bytes left begin a frame that began now

    def _answer(self, conn: _Connection, committed: bool) -> None:
        """Queue this wakeup's replies in frame order (ACKs only if committed) and send."""
        out = conn.out
        for slot in conn.slots:
            if isinstance(slot, Staged):
                if committed:
                    out += slot.reply
            else:
                out += slot
        conn.slots.clear()
        if not conn.closed:
            self._flush(conn)

    def _flush(self, conn: _Connection) -> None:
        """Write what waits. While replies wait the connection is not read (EPOLLOUT only):
        a panel not reading its ACKs is not read either, and its backlog stays bounded."""
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
            if len(out) > self.backlog_limit:
                self._close(conn, "replies_unread")
                return
            if sent or conn.stalled_since is None:
                conn.stalled_since = trio.current_time()
            if not conn.writing:
                self._epoll.modify(conn.fd, select.EPOLLOUT)
                conn.writing = True
            return
        conn.stalled_since = None
        if conn.eof:
            self._close(conn, None)
        elif conn.writing:
            self._epoll.modify(conn.fd, _IN)
            conn.writing = False

    def _sweep(self, now: float) -> None:
        """Close connections past a deadline; the reason is the deadline that came first."""
        config = self.config
        expired: list[tuple[_Connection, str]] = []
        for conn in self._conns.values():
            deadline, reason = conn.last_frame + config.idle_timeout, "idle"
            if conn.pending_since is not None:
                due = conn.pending_since + config.frame_timeout
                if due < deadline:
                    deadline, reason = due, "slow_frame"
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

    def _timed_out(self, conn: _Connection, reason: str) -> None:
        self.counters.inc(f"connections_closed_{reason}")
        conn.log.info("connection_timeout", reason=reason)
        self._close(conn, None)

    def _close(self, conn: _Connection, reason: str | None) -> None:
        """Forget and close a connection; ``reason`` is counted and logged when given."""
        if conn.closed:
            return
        conn.closed = True
        del self._conns[conn.fd]
        if reason is not None:
            self.counters.inc(f"connections_closed_{reason}")
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
        if self._udp is not None:
            self._udp.close()
        self._udp_rejections.close()
        self._epoll.close()

    # -- UDP: one datagram is one frame ---------------------------------------------------------

    def _read_udp(
        self,
        sock: socket.socket,
        staged: list[Staged],
        replies: list[tuple[bytes | Staged, Any, str]],
    ) -> None:
        engine = self._udp_engine
        intake = self.intake
        self._udp_rejections.sweep()
        for _ in range(_UDP_PER_WAKEUP):
            try:
                data, address = sock.recvfrom(_READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # An ICMP error from an earlier reply surfaces here; the socket is fine.
                self._udp_log.info("udp_receive_failed", error=str(exc))
                continue
            peer = f"{address[0]}:{address[1]}"
            try:
                event = engine.receive_datagram(data)
                if isinstance(event, Accepted):
                    frame = intake.stage(event, peer)
                    staged.append(frame)
                    replies.append((frame, address, peer))
                    continue
                rejections = self._udp_rejections.for_peer(address[0])
                if isinstance(event, Crashed):
                    intake.crashed(event, rejections)
                elif event.framing and event.reason == "oversized":
                    self.counters.inc("frames_oversized")
                    rejections.warning(
                        "datagram_oversized", reason="oversized", raw=raw_text(event.raw)
                    )
                    continue
                else:
                    intake.rejected(event, rejections)
            except Exception as exc:  # no datagram may end the loop
                self.counters.inc("datagrams_crashed")
                self._udp_log.error(
                    "datagram_crashed",
                    peer=peer,
                    error_type=type(exc).__name__,
                    error=str(exc),
                    where=crash_site(exc),
                )
                continue
            if event.reply is not None:
                replies.append((event.reply, address, peer))

    def _answer_udp(self, replies: list[tuple[bytes | Staged, Any, str]], committed: bool) -> None:
        sock = self._udp
        if sock is None:
            return
        for slot, address, peer in replies:
            if isinstance(slot, Staged):
                if not committed:
                    continue
                reply = slot.reply
            else:
                reply = slot
            try:
                sock.sendto(reply, address)
            except OSError as exc:
                self._udp_log.warning("udp_send_failed", peer=peer, error=str(exc))
