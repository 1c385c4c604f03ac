"""The batched bridge loop: one trio task serves every video bridge connection of the port.

The skeleton (one task, epoll, accept and limits, the reply backlog, the sweep, shutdown) is
``socket_loop.SocketLoop``'s, with its rules; this module is the bridge part: each read feeds
the connection's ``BridgeConnection``, every frame of the wakeup is stored in ONE journal
append (``BridgeIntake.store``), then each connection's replies go out in frame order.

Rules (the same guarantees as the task-per-connection ``BridgeServer._converse``, on top of
``SocketLoop``'s):
- ACK only after the append returned (and, for a heartbeat that changed the stored arming
  state or firmware, after that row is written); a batch whose outcome is unknown is answered
  NAK ``busy``.
- A HELLO is decided on the registry as of now: a wakeup that may hold one (a connection not
  yet open, or the bytes of a HELLO header) refreshes the registry once before deciding. A
  refused HELLO closes the connection once its NAK is written.
- Timeouts (counted as ``bridge_connections_closed_<reason>``): ``no_hello``: no accepted
  HELLO within ``hello_timeout`` of the opening; ``idle``: ``idle_timeout`` since the last
  complete frame, accepted or rejected; ``garbage``: ``garbage_timeout`` since the first read
  after the last frame that completed no frame; ``send_timeout``.
- What waits for a bridge that does not read its replies is bounded by ``reply_backlog_bytes``
  (``bridge_connections_closed_replies_unread`` past it); it is not read meanwhile.
- A bug one frame triggers costs that frame (``BridgeIntake.prepare``/``hello`` answer NAK
  ``malformed``); a bug in the handling of one connection's bytes costs that connection
  (``connection_crashed``, ``bridge_connections_crashed``): its frames of that read are
  neither stored nor ACKed. Never the loop.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Final

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
from receiver.connection_limits import ConnectionLimits
from receiver.ingest.socket_loop import Connection, SocketLoop

_HELLO_HEADER: Final = MAGIC + bytes([VERSION, MessageType.HELLO])


class _Bridge(Connection):
    """One bridge's TCP connection: its codec, its session and this wakeup's frames."""

    __slots__ = ("codec", "frames", "opened", "session")

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
        super().__init__(sock, host=host, peer=peer, log=log, now=now)
        self.codec = BridgeConnection("receiver", max_body=config.max_body)
        self.session = Session()
        self.opened = now
        self.frames: list[Prepared] = []  # this wakeup's, answered once the batch is stored


class BridgeLoop(SocketLoop[_Bridge, tuple[bool, dict[int, bool]]]):
    """The bridge port's listeners, served by one task."""

    def __init__(self, intake: BridgeIntake, limits: ConnectionLimits, log: Any) -> None:
        config: BridgeConfig = intake.config
        super().__init__(
            config,
            first_timeout=config.hello_timeout,
            counters=intake.counters,
            limits=limits,
            log=log,
            backlog_limit=config.reply_backlog_bytes,
            counter_prefix="bridge_",
        )
        self.intake = intake
        self.config = config
        self._batch: list[Prepared] = []  # this wakeup's frames, of every connection

    def _connection(
        self, sock: socket.socket, *, host: str, peer: str, log: Any, now: float
    ) -> _Bridge:
        return _Bridge(sock, host=host, peer=peer, config=self.config, log=log, now=now)

    async def _before_frames(self, reads: Sequence[tuple[_Bridge, bytes]]) -> None:
        if any(c.codec.state is not BridgeState.OPEN or _HELLO_HEADER in d for c, d in reads):
            await self.intake.refresh_registry()

    def _frames(self, conn: _Bridge, data: bytes, now: float) -> bool:
        """Feed one read to the connection's codec: what each complete frame calls for (kept
        only if the whole read went through: a crash stores and answers none of it)."""
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
        if not frames:
            return False
        conn.frames = frames
        self._batch += frames
        return True

    async def _commit(self) -> tuple[bool, dict[int, bool]]:
        batch, self._batch = self._batch, []
        stored = await self.intake.store(batch, self.log)
        return stored, await self.intake.wait_states(batch, stored)

    def _answer(self, conn: _Bridge, outcome: tuple[bool, dict[int, bool]]) -> None:
        frames, conn.frames = conn.frames, []
        stored, waits = outcome
        conn.out += b"".join(self.intake.replies(conn.codec, frames, stored, waits))

    def _deadline(self, conn: _Bridge) -> tuple[float, str]:
        if conn.codec.state is BridgeState.OPEN:
            return conn.last_frame + self.config.idle_timeout, "idle"
        return conn.opened + self.config.hello_timeout, "no_hello"
