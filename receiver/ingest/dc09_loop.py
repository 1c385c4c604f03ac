"""The batched DC-09 ingest loop: one trio task serves every TCP connection and the UDP socket.

The skeleton (one task, epoll, accept and limits, the reply backlog, the sweep, shutdown) is
``socket_loop.SocketLoop``'s, with its rules; this module is the DC-09 part: each read feeds
the connection's receiving engine, every accepted frame of the wakeup goes to ONE journal
append (``Dc09Intake.commit``), and each connection's replies go out in frame order. The
per-frame code stays here, in ``_frames``.

Rules (DC-09's, on top of ``SocketLoop``'s):
- ACK only after the append returned; rejected frames are answered in their place in the
  frame order, whatever the commit did.
- The reply backlog is ``reply_backlog_bytes`` per connection
  (``connections_closed_replies_unread`` past it).
- Timeouts (each counted as ``connections_closed_<reason>``): ``idle``: no complete frame
  (accepted or rejected; bytes the splitter discarded are garbage and no activity) for
  ``idle_timeout``; ``slow_frame``: the oldest incomplete frame is ``frame_timeout`` old (its
  clock starts with the read that brought its first bytes after the last frame completed, so a
  panel pipelining frames across reads is never cut off); ``garbage``: ``garbage_timeout``
  since the first bytes discarded after the last frame; ``send_timeout``.
- Every rejection is counted; its log line goes through a ``RejectionLog`` per connection (per
  UDP source address), so a flood logs a few lines and a count.
- A bug that one frame triggers costs that frame (``Crashed``: DUH, ``frame_crashed``); a bug
  in the loop's handling of one connection's bytes costs that connection
  (``connection_crashed``, ``connections_crashed``): its frames staged by then are stored,
  never ACKed (the panel retries and the dedupe key absorbs the retry); a datagram's, that
  datagram. Never the loop.
- UDP: one datagram is one frame; at most ``_UDP_PER_WAKEUP`` datagrams a wakeup, so TCP
  peers are served in between; their ACKs, too, only once committed.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Sequence
from typing import Any, ClassVar

from protocols.dc09_engine import Accepted, Crashed, Dc09Engine
from protocols.stream import NEED_DATA
from receiver.config import Dc09Config
from receiver.connection_limits import ConnectionLimits
from receiver.ingest.intake import Dc09Intake, Staged
from receiver.ingest.socket_loop import READ_SIZE, Connection, SocketLoop
from receiver.logs import PeerRejectionLogs, crash_site, raw_text
from receiver.registry_index import ResolvedAccount

_UDP_PER_WAKEUP = 512  # datagrams read per wakeup, so TCP peers are served in between


class _Panel(Connection):
    """One panel's TCP connection: its receiving engine and this wakeup's replies."""

    __slots__ = ("engine", "pending_since", "slots")

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
        super().__init__(sock, host=host, peer=peer, log=log, now=now)
        self.engine = engine
        # This wakeup's replies in frame order: bytes (send as is) or a Staged (its ACK, if
        # the commit holds it).
        self.slots: list[bytes | Staged] = []
        self.pending_since: float | None = None  # the oldest incomplete frame's first read


class Dc09Loop(SocketLoop[_Panel, bool]):
    """TCP listeners and the UDP socket of one DC-09 port, served by one task."""

    log_fields: ClassVar[dict[str, str]] = {"transport": "tcp"}

    def __init__(self, intake: Dc09Intake, limits: ConnectionLimits, log: Any) -> None:
        config: Dc09Config = intake.config
        super().__init__(
            config,
            first_timeout=config.frame_timeout,
            counters=intake.counters,
            limits=limits,
            log=log,
            backlog_limit=config.reply_backlog_bytes,
        )
        self.intake = intake
        self.config = config
        self._idle_timeout = config.idle_timeout
        self._frame_timeout = config.frame_timeout
        self._staged: list[Staged] = []  # this wakeup's accepted frames, TCP and UDP
        self._udp: socket.socket | None = None
        self._udp_fd = -1
        self._udp_engine = intake.engine()
        self._udp_log = log.bind(transport="udp")
        # Rejections are rate-limited per source address, whatever its port.
        self._udp_rejections = PeerRejectionLogs(self._udp_log)
        self._udp_replies: list[tuple[bytes | Staged, Any, str]] = []

    async def serve(
        self, listeners: Sequence[socket.socket], udp: socket.socket | None = None
    ) -> None:
        """Serve until cancelled, then close every socket (the sockets become the loop's)."""
        self._udp = udp
        await super().serve(listeners)

    # -- TCP ------------------------------------------------------------------------------------

    def _connection(
        self, sock: socket.socket, *, host: str, peer: str, log: Any, now: float
    ) -> _Panel:
        return _Panel(sock, host=host, peer=peer, engine=self.intake.engine(), log=log, now=now)

    def _frames(self, conn: _Panel, data: bytes, now: float) -> bool:
        engine = conn.engine
        engine.receive_data(data)
        completed = False  # a frame or discarded bytes: the front of the buffer moved
        slots = conn.slots
        staged = self._staged
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
        if not engine.pending_bytes:
            conn.pending_since = None
        elif completed or conn.pending_since is None:
            conn.pending_since = now  # the bytes left begin a frame that began now
        return bool(slots)

    def _crashed(self, conn: _Panel, exc: Exception) -> None:
        # Frames of it already staged are stored, never ACKed: the panel retries and the
        # dedupe key absorbs the retry.
        conn.slots.clear()
        super()._crashed(conn, exc)

    async def _commit(self) -> bool:
        staged = self._staged
        if not staged:
            return True
        self._staged = []
        return await self.intake.commit(staged, self.log)

    def _answer(self, conn: _Panel, outcome: bool) -> None:
        """Queue this wakeup's replies in frame order (ACKs only if committed)."""
        out = conn.out
        for slot in conn.slots:
            if isinstance(slot, Staged):
                if outcome:
                    out += slot.reply
            else:
                out += slot
        conn.slots.clear()

    def _answered(self, outcome: bool) -> None:
        if self._udp_replies:
            replies, self._udp_replies = self._udp_replies, []
            self._answer_udp(replies, outcome)
        self.intake.log_committed()

    def _deadline(self, conn: _Panel) -> tuple[float, str]:
        deadline = conn.last_frame + self._idle_timeout
        if conn.pending_since is not None:
            due = conn.pending_since + self._frame_timeout
            if due < deadline:
                return due, "slow_frame"
        return deadline, "idle"

    def _close_everything(self) -> None:
        super()._close_everything()
        if self._udp is not None:
            self._udp.close()
        self._udp_rejections.close()

    # -- UDP: one datagram is one frame ---------------------------------------------------------

    def _register(self) -> None:
        if self._udp is not None:
            self._udp.setblocking(False)
            self._udp_fd = self._udp.fileno()
            self._epoll.register(self._udp_fd, select.EPOLLIN)

    def _ready(self, fd: int, now: float) -> bool:
        if fd != self._udp_fd or self._udp is None:
            return False
        self._read_udp(self._udp)
        return bool(self._udp_replies)

    def _read_udp(self, sock: socket.socket) -> None:
        staged, replies = self._staged, self._udp_replies
        engine = self._udp_engine
        intake = self.intake
        self._udp_rejections.sweep()
        for _ in range(_UDP_PER_WAKEUP):
            try:
                data, address = sock.recvfrom(READ_SIZE)
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
