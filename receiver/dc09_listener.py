"""Where a DC-09 frame enters: TCP and UDP on one port.

Rules:
- A frame's reply comes from the codec (``protocols.dc09``): a remote error carries its reply;
  this module never invents one. The only choices made here are the configured policies
  (unknown account, bad CRC reply, a keyed account sending plaintext).
- ACK only after the journal committed the frame's signals (``Journal.append`` returned). When
  the commit fails nothing is sent: the panel retries and the dedupe key absorbs the retry.
- Every bad input is counted and logged with its raw bytes, through a ``RejectionLog`` per TCP
  connection and per UDP source address: the first few per reason in each minute in full, the
  rest in one ``rejections_suppressed`` count line. A bad frame never costs the good frames
  that shared its TCP read.
- Garbage is no activity: a connection stays open on complete frames only (see ``_converse``
  for the timeouts), and the write of its replies has a deadline.
- All frames that arrived in one TCP read are committed in one journal append, and their
  replies go out in order in one write.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog
import trio

from protocols import dc09
from protocols.errors import RemoteProtocolError, Reply
from protocols.payload import parse_events
from protocols.signal import Flag, Signal, Source, new_signal_id
from receiver import tcp_accept
from receiver.config import Dc09Config
from receiver.connection_limits import ConnectionLimits, serve_connection
from receiver.journal import Journal, JournalError, to_us
from receiver.logs import PeerRejectionLogs, RejectionLog, crash_site, log_signals, raw_text
from receiver.metrics import Counters
from receiver.registry_index import RegistryIndex, ResolvedAccount
from receiver.supervisor import Supervisor


@attrs.define
class Prepared:
    """One frame, decoded: what to store, and the reply once stored (or right away)."""

    signals: list[Signal] = attrs.field(factory=list)
    keys: list[str | None] = attrs.field(factory=list)
    link: str | None = None
    reply_after_commit: bytes | None = None
    reply_now: bytes | None = None


def account_link(account: ResolvedAccount) -> str:
    return f"account:{account.account_id}"


class Dc09Intake:
    """Decode, resolve, store and answer DC-09 frames; shared by TCP and UDP."""

    def __init__(
        self,
        config: Dc09Config,
        *,
        journal: Journal,
        registry: Callable[[], RegistryIndex],
        supervisor: Supervisor | None = None,
        counters: Counters | None = None,
        log_signals: bool = True,
    ) -> None:
        self.config = config
        self.journal = journal
        self.registry = registry
        self.supervisor = supervisor
        self.counters = counters or Counters()
        self.log_signals = log_signals
        self.station = config.station or None
        self.window = dc09.TimestampWindow(
            past=config.window_past,
            future=config.window_future,
            policy=config.window_policy,  # type: ignore[arg-type]
            check_plain=config.check_plain_timestamps,
        )
        self.log = structlog.get_logger("receiver.dc09")

    # -- replies ------------------------------------------------------------------------

    def _refuse(
        self,
        exc: RemoteProtocolError,
        header: dc09.Dc09Header | None,
        raw: bytes,
        now: datetime,
        log: Any,
    ) -> Prepared:
        self.counters.inc(f"frames_{exc.reason}")
        if exc.reason == "bad_crc" and self.config.bad_crc_reply == "nak":
            exc.reply = Reply.NAK
        reply = dc09.reply_for_error(exc, header, now=now)
        log.warning(
            "frame_rejected",
            reason=exc.reason,
            error=exc.message,
            reply=exc.reply.value,
            raw=raw_text(raw),
        )
        if reply:
            self.counters.inc(f"replies_{exc.reply.value.lower()}")
        return Prepared(reply_now=reply)

    # -- one frame ------------------------------------------------------------------------

    def _header_or_none(self, raw: bytes) -> dc09.Dc09Header | None:
        try:
            return dc09.read_header(raw)
        except RemoteProtocolError:
            return None

    def _window_for(self, account: ResolvedAccount | None) -> dc09.TimestampWindow:
        window = self.window
        if account is None or (
            account.window_past is None
            and account.window_future is None
            and account.window_policy is None
        ):
            return window
        return attrs.evolve(
            window,
            past=account.window_past if account.window_past is not None else window.past,
            future=account.window_future if account.window_future is not None else window.future,
            policy=account.window_policy or window.policy,  # type: ignore[arg-type]
        )

    def prepare(self, raw: bytes, peer: str, log: Any) -> Prepared:
        """Decode one raw frame into signals and its ACK (sent only after the commit).

        A bug in decoding (any exception outside the project's error tree) costs this frame
        only: it is logged as ``frame_crashed`` with its raw bytes and the exception type,
        counted as ``frames_internal_error`` and answered DUH ("correctly received, cannot
        process": the CRC held, the fault is ours), or not at all when not even its header
        can be read (a DUH must echo the header). Never the connection, never the process.
        """
        try:
            return self._prepare(raw, peer, log)
        except Exception as exc:  # a codec bug must cost one frame, no more
            return self._crashed(exc, raw, log)

    def _crashed(self, exc: Exception, raw: bytes, log: Any) -> Prepared:
        self.counters.inc("frames_internal_error")
        try:
            header: dc09.Dc09Header | None = dc09.read_header(raw)
        except Exception:  # the header read may be what failed
            header = None
        reply = dc09.duh(header) if header is not None else None
        log.error(
            "frame_crashed",
            error_type=type(exc).__name__,
            error=str(exc),
            where=crash_site(exc),
            reply=Reply.DUH.value if reply is not None else Reply.NONE.value,
            raw=raw_text(raw),
        )
        if reply is not None:
            self.counters.inc("replies_duh")
        return Prepared(reply_now=reply)

    def _prepare(self, raw: bytes, peer: str, log: Any) -> Prepared:
        now = datetime.now(UTC)
        frame: dc09.Dc09Frame | None = None
        try:
            if b'"*' in raw[:16]:
                # Encrypted: the key depends on the account named in the clear header.
                header = dc09.read_header(raw)
            else:
                # Plaintext needs no key: decode once (the hot path), resolve afterwards.
                frame = dc09.decode_frame(raw, key=None, now=now, window=self.window)
                header = frame.header
        except RemoteProtocolError as exc:
            return self._refuse(exc, self._header_or_none(raw), raw, now, log)
        account = self.registry().resolve(self.station, header.line, header.account)
        flags: set[str] = set()
        if account is None:
            policy = self.config.unknown_account
            self.counters.inc("frames_unknown_account")
            if policy != "accept":
                log.warning(
                    "unknown_account", account=header.account, policy=policy, raw=raw_text(raw)
                )
                reply = (
                    dc09.duh(header) if policy == "duh" else dc09.nak(now, crc_form=header.crc_form)
                )
                self.counters.inc(f"replies_{policy}")
                return Prepared(reply_now=reply)
            flags.add(Flag.UNKNOWN_ACCOUNT)
        key = account.key if account is not None else None
        # Key rotation: the previous key (None: plaintext) is still accepted in its grace.
        in_grace = account.keys_in_grace(now.timestamp()) if account is not None else ()
        if key is not None and not header.encrypted and None not in in_grace:
            refused = RemoteProtocolError(
                "plaintext frame for an account that has a key",
                raw=raw,
                reply=Reply.DUH,
                reason="plaintext_refused",
            )
            return self._refuse(refused, header, raw, now, log)
        window = self._window_for(account)
        try:
            if frame is None or (window is not self.window and window.check_plain):
                frame, key = _decode_rotating(raw, key, in_grace, now, window)
            events = parse_events(frame.header.token, frame.data)
        except RemoteProtocolError as exc:
            return self._refuse(exc, header, raw, now, log)

        ack = dc09.ack(
            header, key=key if header.encrypted else None, now=now, pipe=self.config.ack_pipe
        )
        link = (
            account_link(account)
            if account is not None and account.supervision is not None
            else None
        )
        prepared = Prepared(reply_after_commit=ack, link=link)
        self.counters.inc("frames_ok")
        if not events:
            # NULL, or SIA-DCS with an empty data block: a link test, ACKed, nothing stored.
            self.counters.inc("frames_link_test")
        if frame.quirks:
            flags.update(f"quirk:{q}" for q in frame.quirks)
            if "late" in frame.quirks:
                flags.add(Flag.LATE)
        if header.encrypted:
            flags.add(Flag.ENCRYPTED)
        effective = account.effective if account is not None else header.account.upper()
        for index, event in enumerate(events):
            signal = Signal(
                id=new_signal_id(now),
                received_at=now,
                source=Source.DC09,
                peer=peer,
                account=header.account,
                station=account.station if account is not None else self.station,
                receiver_no=header.receiver,
                line=header.line,
                account_id=account.account_id if account is not None else None,
                effective_account=effective,
                site_id=account.site_id if account is not None else None,
                site_name=account.site_name if account is not None else None,
                token=header.token,
                sequence=header.sequence,
                device_time=frame.timestamp,
                cid=event.cid,
                sia=event.sia,
                name=event.name,
                category=event.category,
                extended=frame.extended,
                flags=frozenset(flags | event.flags),
                raw=raw,
            )
            prepared.signals.append(signal)
            prepared.keys.append(
                f"{effective}|{header.token}|{header.sequence}|{header.receiver}|"
                f"{header.line}|{frame.data}|{index}"
            )
        return prepared

    async def commit(self, batch: list[Prepared], log: Any) -> list[bytes]:
        """Store the batch's signals in one append; return the replies, in frame order."""
        return [reply for reply in await self.commit_each(batch, log) if reply is not None]

    async def commit_each(self, batch: list[Prepared], log: Any) -> list[bytes | None]:
        """Store the batch's signals in one append; return each frame's reply (None: none)."""
        started = trio.current_time()
        signals = [s for p in batch for s in p.signals]
        keys = [k for p in batch for k in p.keys]
        links = {p.link for p in batch if p.link is not None}
        needs_commit = bool(signals or links)
        if needs_commit:
            now_us = to_us(datetime.now(UTC))
            try:
                result = await self.journal.append(
                    signals, keys=keys, links=[(link, now_us) for link in links]
                )
            except JournalError as exc:
                # Outcome unknown: send no ACK for anything in this batch.
                self.counters.inc("frames_not_committed", len(batch))
                log.error("journal_failed", error=str(exc), frames=len(batch))
                return [p.reply_now for p in batch]
            if result.duplicates:
                self.counters.inc("frames_duplicate", len(result.duplicates))
            if self.log_signals:
                log_signals(log, signals, result.duplicates)
            if self.supervisor is not None:
                for link in links:
                    self.supervisor.seen(link)
        replies: list[bytes | None] = []
        for p in batch:
            if p.reply_now is not None:
                replies.append(p.reply_now)
            elif p.reply_after_commit is not None:
                replies.append(p.reply_after_commit)
                self.counters.inc("replies_ack")
            else:
                replies.append(None)
        acked = sum(1 for p in batch if p.reply_now is None and p.reply_after_commit is not None)
        if acked:
            # Decoded frame to ACK ready: waiting for the writer and for the commit.
            self.counters.observe("ack_seconds", trio.current_time() - started, acked)
        return replies


# UDP intake: workers committing concurrently, datagrams per commit, datagrams queued in memory.
_UDP_WORKERS = 8
_UDP_BATCH = 256
_UDP_QUEUE = 4096


class Dc09Server:
    """TCP and UDP on one port, with connection limits and timeouts."""

    def __init__(self, intake: Dc09Intake, *, reuse_port: bool = False) -> None:
        self.intake = intake
        self.reuse_port = reuse_port  # share the port with the other ingest workers
        self.config = intake.config
        self.counters = intake.counters
        self.log = intake.log
        self.limits = ConnectionLimits(
            self.config.max_connections, self.config.max_connections_per_peer, log=self.log
        )
        self.handlers: trio.Nursery | None = None

    async def _bind(self) -> tuple[list[trio.SocketListener], trio.socket.SocketType | None]:
        """TCP listeners and the UDP socket on the same port.

        With port 0 the kernel picks a free TCP port that may be taken for UDP: try again.
        """
        host, port = self.config.address
        for _ in range(20):
            listeners = await tcp_accept.open_tcp_listeners(
                port, host=host, reuse_port=self.reuse_port
            )
            if not self.config.udp:
                return listeners, None
            bound = listeners[0].socket.getsockname()[1]
            family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
            sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
            # A burst from many panels must queue in the kernel, not be dropped there: ask
            # for a large receive buffer (the kernel caps it at net.core.rmem_max).
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4 << 20)
            if self.reuse_port:
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            try:
                await sock.bind((host, bound))
            except OSError:
                sock.close()
                for listener in listeners:
                    await listener.aclose()
                if port != 0:
                    raise
                continue
            return listeners, sock
        raise OSError(f"no port free for both TCP and UDP on {host}")

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on TCP (and UDP on the same port); report the bound port to ``started``."""
        listeners, udp = await self._bind()
        host = self.config.address[0]
        bound = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            if udp is not None:
                nursery.start_soon(self.serve_udp, udp)
            self.log.info("dc09_listening", host=host, port=bound, udp=udp is not None)
            task_status.started(bound)
            await tcp_accept.serve_listeners(self.handle_stream, listeners)

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        await serve_connection(
            stream,
            self._converse,
            limits=self.limits,
            counters=self.counters,
            counter="connections",
            log=self.log,
            transport="tcp",
        )

    async def _converse(self, stream: trio.SocketStream, peer: str, log: Any) -> None:
        """One TCP connection: split, prepare, commit, answer, until EOF or a timeout.

        Timeouts (all counted as ``connections_closed_<reason>``):
        - ``idle``: ``idle_timeout`` since the last complete frame (or the opening). A frame is
          what the splitter delivered, LF to CR, whatever its reply (ACK, NAK, DUH or none for a
          bad CRC); bytes it discarded are garbage and no activity.
        - ``slow_frame``: the oldest incomplete frame is ``frame_timeout`` old. Its clock starts
          with the read that brought its first bytes (after the last frame completed) and
          stops when it completes, so a panel pipelining frames across reads is never cut off.
        - ``garbage``: ``garbage_timeout`` since the first bytes discarded after the last frame.
        - ``send_timeout``: a reply could not be written for ``send_timeout`` (the panel does
          not read its ACKs); shutdown waits at most that long for it.
        """
        config = self.config
        splitter = dc09.FrameSplitter(max_frame=config.max_frame_bytes)
        rejections = RejectionLog(log)
        now = trio.current_time()
        last_frame = now  # the last complete frame (or the opening)
        pending_since: float | None = None  # the oldest incomplete frame's first read
        garbage_since: float | None = None  # the first discarded bytes since the last frame
        # Re-arming the deadline is coarse (it costs on the hot path): the scope may fire up to
        # ``slack`` early or late; the reason is the timeout whose deadline comes first.
        slack = min(
            1.0, 0.1 * min(config.idle_timeout, config.frame_timeout, config.garbage_timeout)
        )
        reason = "idle"
        # One cancel scope for the whole connection, re-armed per read: cheaper than a
        # scope per read on the hot path. While a batch is committed it is shielded with no
        # deadline, so a frame already being stored still gets its ACK during shutdown; the
        # write of the replies has its own deadline, send_timeout.
        scope = trio.CancelScope()
        try:
            with scope:
                while True:
                    deadline, reason = last_frame + config.idle_timeout, "idle"
                    if pending_since is not None:
                        due = pending_since + config.frame_timeout
                        if due < deadline:
                            deadline, reason = due, "slow_frame"
                    if garbage_since is not None:
                        due = garbage_since + config.garbage_timeout
                        if due < deadline:
                            deadline, reason = due, "garbage"
                    if abs(scope.deadline - deadline) > slack:
                        scope.deadline = deadline
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    now = trio.current_time()
                    splitter.receive_data(data)
                    batch: list[Prepared] = []
                    completed = False  # a frame or discarded bytes: the front of the buffer moved
                    while True:
                        event = splitter.next_event()
                        if event is dc09.NEED_DATA:
                            break
                        completed = True
                        if isinstance(event, RemoteProtocolError):
                            self.counters.inc(f"frames_{event.reason}")
                            rejections.warning(
                                "garbage_discarded", reason=event.reason, raw=raw_text(event.raw)
                            )
                            if garbage_since is None:
                                garbage_since = now
                            continue
                        assert isinstance(event, bytes)
                        last_frame, garbage_since = now, None
                        batch.append(self.intake.prepare(event, peer, rejections))
                    if not splitter.pending_bytes:
                        pending_since = None
                    elif completed or pending_since is None:
                        pending_since = now  # the bytes left begin a frame that began now
                    if batch:
                        scope.deadline = math.inf
                        scope.shield = True
                        replies = await self.intake.commit(batch, rejections)
                        if replies and not await self._send(stream, b"".join(replies)):
                            reason = "send_timeout"
                            break
                        scope.shield = False
        finally:
            rejections.close()
        if scope.cancelled_caught or reason == "send_timeout":
            self.counters.inc(f"connections_closed_{reason}")
            log.info("connection_timeout", reason=reason)

    async def _send(self, stream: trio.SocketStream, data: bytes) -> bool:
        """Write replies within ``send_timeout`` (even during shutdown); False if it ran out."""
        with trio.CancelScope(shield=True) as send:
            send.deadline = trio.current_time() + self.config.send_timeout
            await stream.send_all(data)
        return not send.cancelled_caught

    async def serve_udp(self, sock: trio.socket.SocketType) -> None:
        """One frame per datagram. Datagrams that arrive together are decoded and committed
        together, like the frames of one TCP read: a few workers each take what has queued
        up (at most ``_UDP_BATCH``) and send every datagram its own reply to its own address
        once the batch is committed. The queue is bounded: a flood waits in the kernel's
        receive buffer, not in memory."""
        log = self.log.bind(transport="udp")
        rejections = PeerRejectionLogs(log)
        send, receive = trio.open_memory_channel[tuple[bytes, Any]](_UDP_QUEUE)
        try:
            with sock:
                async with trio.open_nursery() as nursery:
                    for _ in range(_UDP_WORKERS):
                        nursery.start_soon(self._udp_worker, sock, receive.clone(), log, rejections)
                    while True:
                        datagram = await sock.recvfrom(65536)
                        await send.send(datagram)
        finally:
            rejections.close()

    async def _udp_worker(
        self,
        sock: trio.socket.SocketType,
        receive: trio.MemoryReceiveChannel[tuple[bytes, Any]],
        log: Any,
        rejections: PeerRejectionLogs,
    ) -> None:
        async for first in receive:
            datagrams = [first]
            while len(datagrams) < _UDP_BATCH:
                try:
                    datagrams.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            rejections.sweep()
            batch: list[Prepared] = []
            addresses: list[tuple[Any, str, RejectionLog]] = []
            for data, address in datagrams:
                peer = f"{address[0]}:{address[1]}"
                # Rejections are rate-limited per source address, whatever its port.
                peer_log = rejections.for_peer(address[0])
                raw = data.rstrip(b"\x00")
                if len(raw) > self.config.max_frame_bytes:
                    self.counters.inc("frames_oversized")
                    peer_log.warning(
                        "datagram_oversized", reason="oversized", peer=peer, raw=raw_text(raw)
                    )
                    continue
                batch.append(self.intake.prepare(raw, peer, peer_log))
                addresses.append((address, peer, peer_log))
            if not batch:
                continue
            # Shielded: a batch being committed still gets its replies during shutdown.
            with trio.CancelScope(shield=True):
                replies = await self.intake.commit_each(batch, log)
                for reply, (address, peer, peer_log) in zip(replies, addresses, strict=True):
                    if reply is None:
                        continue
                    try:
                        await sock.sendto(reply, address)
                    except OSError as exc:
                        peer_log.warning(
                            "udp_send_failed", reason="send_failed", peer=peer, error=str(exc)
                        )


def _decode_rotating(
    raw: bytes,
    key: bytes | None,
    in_grace: tuple[bytes | None, ...],
    now: datetime,
    window: dc09.TimestampWindow,
) -> tuple[dc09.Dc09Frame, bytes | None]:
    """Decode under the account's key, then under a previous key still in its grace; the
    frame and the key it decrypted under (the ACK is encrypted with it). The first error is
    the one reported."""
    try:
        return dc09.decode_frame(raw, key=key, now=now, window=window), key
    except RemoteProtocolError:
        for old in in_grace:
            if old is None or old == key:
                continue
            try:
                return dc09.decode_frame(raw, key=old, now=now, window=window), old
            except RemoteProtocolError:
                continue
        raise
