"""Where a video bridge's frames enter: the bridge TCP port.

Rules:
- Replies come from the codec (``protocols.bridge``): a remote error carries its NAK; this
  module only decides HELLO (known bridge and right token, or NAK ``unknown_bridge`` /
  ``bad_token``) and answers NAK ``busy`` when the journal cannot store (the bridge resends).
- ACK only after the journal committed the frame's signals and link updates; a heartbeat that
  changed the stored arming state or firmware is ACKed only after that row is written too.
- Each event becomes one Signal. Alarm inputs and analytics take their Contact ID code from the
  effective alarm library (channel > site > dealer > built-in) for the channel's zone type. A
  zone type switched off, and a disarmed bridge's alarm on a zone that is not 24-hour, are
  stored flagged ``suppressed`` (and ``disarmed``) and never sent to automation; the restore of
  a suppressed alarm is suppressed too. A bridge whose arming state is not known yet counts as
  armed: when in doubt, an alarm goes out.
- A repeated (bridge, sequence, frame) is ACKed again and stored once (journal dedupe key).
- An unknown bridge or a bad token is refused, logged with the raw frame (its token masked, as
  everywhere raw bytes are logged or journaled: ``redact_token``), and written as one
  receiver trouble per serial per ``refused_trouble_interval``: a misconfigured bridge retrying
  cannot flood the journal.
- All frames of one TCP read are committed in one journal append; replies go out in order.
- Rejections are logged through a ``RejectionLog`` per connection (the first few per reason
  each minute in full, then a count line); the counters count every one. Bytes that make no
  frame are no activity: see ``BridgeServer._converse`` for the timeouts.

The event -> Contact ID mapping and the suppression rules are ``protocols.bridge_mapping``
(pure, tested without sockets); Signals come from ``Signal.from_bridge``. The offline trouble
(missed heartbeats, E/R ``[bridge] offline_code``) is the supervisor's.
"""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import structlog
import trio

from protocols.bridge import (
    NEED_DATA,
    Ack,
    BridgeConnection,
    BridgeState,
    Envelope,
    Event,
    Heartbeat,
    Hello,
    Nak,
    NakReason,
    encode_frame,
    redact_token,
)
from protocols.bridge_mapping import BridgeSubject, map_event, map_refusal
from protocols.errors import FramingError, RemoteProtocolError
from protocols.signal import Signal
from receiver import tcp_accept
from receiver.alarm_library import LibraryEntry
from receiver.bridge_state import BridgeStateStore, bridge_link, trouble_link
from receiver.config import BridgeConfig
from receiver.connection_limits import ConnectionLimits, serve_connection
from receiver.journal import Journal, JournalError, to_us
from receiver.logs import RejectionLog, crash_site, log_signals, raw_text
from receiver.metrics import Counters
from receiver.registry_index import BridgeInfo, RegistryIndex
from receiver.supervisor import Supervisor

# At most this many serials remembered for the refused-HELLO trouble limit.
MAX_REFUSED_TRACKED: Final = 10_000


def bridge_subject(info: BridgeInfo) -> dict[str, Any]:
    """Signal fields naming a bridge's account and site (also the supervisor's subject).

    A bridge whose site has no account yet reports under its serial, with no station: the
    automation still gets the site's name, and the signal is flagged unknown_account."""
    account = info.account
    return {
        "account": account.number if account else info.serial,
        "account_id": account.account_id if account else None,
        "effective_account": account.effective if account else info.serial,
        "station": account.station if account else None,
        "line": account.line if account else None,
        "site_id": info.site_id,
        "site_name": info.site_name,
        "device": info.serial,
    }


def subject_of(info: BridgeInfo) -> BridgeSubject:
    """``bridge_subject`` as the value ``Signal.from_bridge`` takes."""
    return BridgeSubject(**bridge_subject(info))


def watch_bridge(
    supervisor: Supervisor, config: BridgeConfig, info: BridgeInfo, *, trouble_open: bool = False
) -> None:
    """Supervise a bridge's heartbeats: offline after interval x heartbeat_grace of silence."""
    # The supervisor multiplies by its own grace factor; scale so the bridge's grace applies.
    interval = config.heartbeat_interval * config.heartbeat_grace / supervisor.grace
    supervisor.watch(
        bridge_link(info.serial),
        interval,
        bridge_subject(info),
        trouble_open=trouble_open,
        code=config.offline_code,
    )


@attrs.define
class Session:
    """One connection's bridge, once its HELLO was accepted."""

    info: BridgeInfo | None = None
    hello: Hello | None = None


@attrs.define
class Prepared:
    """One frame: what to store, and how to answer once stored."""

    envelope: Envelope | None = None
    signals: list[Signal] = attrs.field(factory=list)
    keys: list[str | None] = attrs.field(factory=list)
    troubles: list[tuple[str, int, bool]] = attrs.field(factory=list)
    link: str | None = None
    state: dict[str, Any] | None = None  # bridge_state changes to apply after the commit
    wait_state: bool = False  # the ACK waits for those changes to be written
    reply_now: bytes | None = None  # already built: a NAK, or the answer to a HELLO
    ack_after_commit: bool = False
    close_after: bool = False
    serial: str | None = None


class BridgeIntake:
    """Authenticate bridges, map their events to Signals, store them and build the replies."""

    def __init__(
        self,
        config: BridgeConfig,
        *,
        journal: Journal,
        registry: Callable[[], RegistryIndex],
        state: BridgeStateStore,
        supervisor: Supervisor | None = None,
        counters: Counters | None = None,
        log_signals: bool = True,
        refresh: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.config = config
        self.journal = journal
        self.registry = registry
        self.refresh = refresh
        self.state = state
        self.supervisor = supervisor
        self.counters = counters or Counters()
        self.log_signals = log_signals
        self._refused: dict[str, float] = {}
        self.log = structlog.get_logger("receiver.bridge")

    # -- errors and HELLO -----------------------------------------------------------------

    async def refresh_registry(self) -> None:
        """See ``before_hello``: the batched loop asks once per wakeup that may hold a HELLO."""
        if self.refresh is not None:
            await self.refresh()

    async def before_hello(self, hello: Hello) -> None:
        """Decide a HELLO on the registry as of now: a bridge added a moment ago (``receiver
        bridges add`` just before it connects) is let in, a token rotated without grace a
        moment ago no longer is. One SELECT of the store's counter (a reload only when it
        moved); ``refresh`` coalesces concurrent HELLOs into one read."""
        del hello  # every HELLO asks: a stale index could also let a revoked token in
        if self.refresh is not None:
            await self.refresh()

    def refuse(self, conn: BridgeConnection, error: RemoteProtocolError, log: Any) -> Prepared:
        """A frame the codec refused: log it with its raw bytes, count it, NAK it if due."""
        self.counters.inc(f"bridge_frames_{error.reason}")
        reply = conn.reply_to(error, now=datetime.now(UTC))
        log.warning(
            "bridge_frame_rejected",
            reason=error.reason,
            error=error.message,
            reply="NAK" if reply else None,
            raw=raw_text(redact_token(error.raw)),
        )
        if reply:
            self.counters.inc("bridge_replies_nak")
        return Prepared(reply_now=reply)

    def crashed(
        self,
        exc: Exception,
        conn: BridgeConnection,
        envelope: Envelope,
        log: Any,
        *,
        close: bool = False,
    ) -> Prepared:
        """A bug while handling a frame costs that frame only: logged as ``frame_crashed``
        with its raw bytes and the exception type, counted (``bridge_frames_internal_error``)
        and answered NAK ``malformed`` (the protocol's "cannot process this message", not
        resent unchanged). A HELLO that crashed is refused that way and the connection closed.
        """
        self.counters.inc("bridge_frames_internal_error")
        log.error(
            "frame_crashed",
            error_type=type(exc).__name__,
            error=str(exc),
            where=crash_site(exc),
            reply="NAK",
            raw=raw_text(envelope.raw),
        )
        now = datetime.now(UTC)
        if close:
            return Prepared(
                reply_now=conn.nak(envelope, NakReason.MALFORMED, now=now), close_after=True
            )
        nak = Nak(envelope.sequence, NakReason.MALFORMED)
        self.counters.inc("bridge_replies_nak")
        return Prepared(
            reply_now=encode_frame(conn.envelope(nak, now=now, bridge_id=envelope.bridge_id))
        )

    def hello(
        self, conn: BridgeConnection, envelope: Envelope, session: Session, peer: str, log: Any
    ) -> Prepared:
        """Accept or refuse a HELLO; the answer is built now (the codec needs it to read on)."""
        try:
            return self._hello(conn, envelope, session, peer, log)
        except Exception as exc:  # a bug must cost one frame, not the process
            return self.crashed(exc, conn, envelope, log, close=True)

    def _hello(
        self, conn: BridgeConnection, envelope: Envelope, session: Session, peer: str, log: Any
    ) -> Prepared:
        hello = envelope.body
        assert isinstance(hello, Hello)
        now = datetime.now(UTC)
        info = self.registry().bridge(hello.serial)
        reason: NakReason | None = None
        if info is None:
            reason = NakReason.UNKNOWN_BRIDGE
        elif not info.accepts_token(hello.token, now.timestamp()):
            reason = NakReason.BAD_TOKEN
        elif session.info is not None and session.info.serial != info.serial:
            # A second HELLO on an open connection must not switch to another bridge.
            reason = NakReason.UNKNOWN_BRIDGE
        if reason is not None:
            return self._refuse_hello(
                conn=conn, envelope=envelope, info=info, reason=reason, peer=peer, now=now, log=log
            )
        assert info is not None
        session.info, session.hello = info, hello
        if hello.channels != info.channels:
            log.warning(
                "bridge_channel_count_differs",
                serial=info.serial,
                reported=hello.channels,
                registered=info.channels,
            )
        if self.supervisor is not None:
            watch_bridge(self.supervisor, self.config, info)
        self.counters.inc("bridge_hello_accepted")
        log.info(
            "bridge_connected",
            serial=info.serial,
            account=info.account.effective if info.account else None,
            model=hello.model,
            firmware=hello.firmware,
            channels=hello.channels,
        )
        return Prepared(
            envelope=envelope,
            link=bridge_link(info.serial),
            reply_now=conn.ack(envelope, now=now),
            serial=info.serial,
            state={
                "model": hello.model,
                "channels": hello.channels,
                "firmware": hello.firmware,
                "peer": peer,
                "connected_us": to_us(now),
            },
        )

    def _refuse_hello(
        self,
        *,
        conn: BridgeConnection,
        envelope: Envelope,
        info: BridgeInfo | None,
        reason: NakReason,
        peer: str,
        now: datetime,
        log: Any,
    ) -> Prepared:
        hello = envelope.body
        assert isinstance(hello, Hello)
        serial = hello.serial.strip().upper()
        self.counters.inc(f"bridge_hello_{reason.reason}")
        log.warning(
            "bridge_refused",
            reason=reason.reason,
            serial=serial,
            bridge_id=envelope.bridge_mac,
            raw=raw_text(redact_token(envelope.raw)),
        )
        prepared = Prepared(reply_now=conn.nak(envelope, reason, now=now), close_after=True)
        if self._trouble_due(serial):
            subject = (
                subject_of(info)
                if info is not None
                else BridgeSubject(account=serial, device=serial)
            )
            mapped = map_refusal(
                self.config.refused_trouble_code, reason.reason, envelope.bridge_mac
            )
            prepared.signals.append(
                Signal.from_bridge(
                    envelope, mapped, subject=subject, received_at=now, peer=peer, refused=True
                )
            )
            prepared.keys.append(None)
        else:
            self.counters.inc("bridge_refused_troubles_skipped")
        return prepared

    def _trouble_due(self, serial: str) -> bool:
        """True at most once per serial per ``refused_trouble_interval``."""
        now = trio.current_time()
        interval = self.config.refused_trouble_interval
        last = self._refused.get(serial)
        if last is not None and now - last < interval:
            return False
        if last is None and len(self._refused) >= MAX_REFUSED_TRACKED:
            for key in [k for k, t in self._refused.items() if now - t >= interval]:
                del self._refused[key]
            if len(self._refused) >= MAX_REFUSED_TRACKED:
                return False  # a flood of serials: refuse without writing more troubles
        self._refused[serial] = now
        return True

    # -- events and heartbeats --------------------------------------------------------------

    def prepare(
        self, envelope: Envelope, session: Session, peer: str, conn: BridgeConnection
    ) -> Prepared:
        """An EVENT or HEARTBEAT of the authenticated bridge: its Signal and link updates.

        A bug while handling it costs this frame only (see ``crashed``).
        """
        try:
            return self._prepare(envelope, session, peer)
        except Exception as exc:  # a bug must cost one frame, not the process
            serial = session.info.serial if session.info is not None else None
            return self.crashed(exc, conn, envelope, self.log.bind(peer=peer, serial=serial))

    def _prepare(self, envelope: Envelope, session: Session, peer: str) -> Prepared:
        info = session.info
        assert info is not None
        # A registry change (zone, zone type, library) applies from the next frame on.
        info = self.registry().bridge(info.serial) or info
        serial = info.serial
        link = bridge_link(serial)
        body = envelope.body
        if isinstance(body, Heartbeat):
            self.counters.inc("bridge_heartbeats")
            status = self.state.get(serial)
            changes: dict[str, Any] = {}
            if status.armed != body.armed:
                changes.update(armed=body.armed, armed_us=to_us(datetime.now(UTC)))
            if status.firmware != body.firmware:
                changes["firmware"] = body.firmware
            return Prepared(
                envelope=envelope,
                link=link,
                ack_after_commit=True,
                serial=serial,
                state=changes or None,
                wait_state=bool(changes),
            )
        assert isinstance(body, Event)
        self.counters.inc("bridge_events")
        now = datetime.now(UTC)
        signal, trouble, state = self._signal(envelope, body, info, peer, now)
        prepared = Prepared(
            envelope=envelope,
            signals=[signal],
            keys=[f"bridge|{serial}|{envelope.sequence}|{envelope.raw[-4:].hex()}"],
            link=link,
            ack_after_commit=True,
            serial=serial,
            state=state,
        )
        if trouble is not None:
            prepared.troubles.append(trouble)
        return prepared

    def _signal(
        self, envelope: Envelope, event: Event, info: BridgeInfo, peer: str, now: datetime
    ) -> tuple[Signal, tuple[str, int, bool] | None, dict[str, Any] | None]:
        """The event's Signal (``protocols.bridge_mapping`` decides code and suppression), the
        trouble it opens or closes, and the arming change to store. The bridge's arming state
        and suppressed channels in memory are updated at once: the next frame sees them."""
        serial = info.serial
        status = self.state.get(serial)
        index = self.registry()

        def library(zone_type: str) -> LibraryEntry:
            return index.library_entry(
                info.site_id, zone_type, serial=serial, channel=event.channel
            )

        mapped = map_event(
            event,
            channels=info.channel_map,
            library=library,
            armed=status.armed,
            suppressed_alarms=status.suppressed_alarms,
            known_account=info.account is not None,
        )
        status.suppressed_alarms = set(mapped.suppressed_alarms)
        state: dict[str, Any] | None = None
        if mapped.armed is not None:
            status.armed = mapped.armed
            state = {"armed": status.armed, "armed_us": to_us(now)}
        trouble: tuple[str, int, bool] | None = None
        if mapped.trouble is not None:
            change = mapped.trouble
            trouble = (trouble_link(serial, change.what, change.channel), to_us(now), change.opened)
        signal = Signal.from_bridge(
            envelope, mapped, subject=subject_of(info), received_at=now, peer=peer
        )
        return signal, trouble, state

    # -- commit and replies -----------------------------------------------------------------

    async def commit(self, conn: BridgeConnection, batch: list[Prepared], log: Any) -> list[bytes]:
        """Store the batch in one append; return the replies in frame order."""
        stored = await self.store(batch, log)
        waits = await self.wait_states(batch, stored)
        return self.replies(conn, batch, stored, waits)

    async def store(self, batch: Sequence[Prepared], log: Any) -> bool:
        """Store the signals, troubles and link updates of a batch (of one connection, or of
        every connection one wakeup read) in ONE journal append. False: the outcome is unknown
        and nothing of the batch is ACKed (NAK ``busy``: the bridge resends, the dedupe key
        absorbs it)."""
        signals = [s for p in batch for s in p.signals]
        keys = [k for p in batch for k in p.keys]
        troubles = [t for p in batch for t in p.troubles]
        links = {p.link for p in batch if p.link is not None}
        if not (signals or links or troubles):
            return True
        now_us = to_us(datetime.now(UTC))
        try:
            result = await self.journal.append(
                signals,
                keys=keys,
                links=[(link, now_us) for link in sorted(links)],
                troubles=troubles,
            )
        except JournalError as exc:
            self.counters.inc("bridge_frames_not_committed", len(batch))
            log.error("journal_failed", error=str(exc), frames=len(batch))
            return False
        if result.duplicates:
            self.counters.inc("bridge_frames_duplicate", len(result.duplicates))
        if self.log_signals:
            log_signals(log, signals, result.duplicates)
        if self.supervisor is not None:
            for link in links:
                self.supervisor.seen(link)
        return True

    async def wait_states(self, batch: Sequence[Prepared], stored: bool) -> dict[int, bool]:
        """Apply the stored batch's bridge-state changes; for each frame whose ACK waits for
        its change to be written (by ``id`` of its Prepared), whether that write succeeded."""
        if not stored:
            return {}
        tickets: dict[int, int] = {}
        for p in batch:
            if p.state and p.serial is not None:
                ticket = self.state.update(p.serial, **p.state)
                if ticket is not None and p.wait_state:
                    tickets[id(p)] = ticket
        return {key: await self.state.wait_written(t) for key, t in tickets.items()}

    def replies(
        self,
        conn: BridgeConnection,
        batch: Sequence[Prepared],
        stored: bool,
        waits: Mapping[int, bool],
    ) -> list[bytes]:
        """The replies to one connection's frames, in frame order: what was answered at once,
        then ACK for what is stored (and its state written), NAK ``busy`` for the rest."""
        replies: list[bytes] = []
        now = datetime.now(UTC)
        for p in batch:
            if p.reply_now is not None:
                replies.append(p.reply_now)
                continue
            if not p.ack_after_commit or p.envelope is None:
                continue
            ok = stored and waits.get(id(p), True)
            body = Ack(p.envelope.sequence) if ok else Nak(p.envelope.sequence, NakReason.BUSY)
            # Built without the codec's state check: a refused second HELLO later in this
            # batch may have closed the connection, and these frames still get their answer.
            replies.append(
                encode_frame(conn.envelope(body, now=now, bridge_id=p.envelope.bridge_id))
            )
            self.counters.inc("bridge_replies_ack" if ok else "bridge_replies_busy")
        return replies


class BridgeServer:
    """The bridge TCP port: connection limits, HELLO and idle timeouts, shielded commits."""

    def __init__(self, intake: BridgeIntake, *, reuse_port: bool = False) -> None:
        self.intake = intake
        self.reuse_port = reuse_port  # share the port with the other ingest workers
        self.config = intake.config
        self.counters = intake.counters
        self.log = intake.log
        self.limits = ConnectionLimits(
            self.config.max_connections, self.config.max_connections_per_peer, log=self.log
        )
        self.held = tcp_accept.HeldSockets()  # the TCP sockets, until they listen

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Load bridge states, bind, report the bound port to ``started``, serve once the port
        listens: at once, or with ``reuse_port`` (an ingest worker) once ``held.listen`` is
        called, as the DC-09 port (``receiver.ingest.dc09_server``). With ``[bridge] batched`` (the
        default) one task serves every connection (``BridgeLoop``), else a task per connection
        (``_converse``); both keep the same rules."""
        host, port = self.config.address
        async with trio.open_nursery() as nursery:
            await nursery.start(self.intake.state.run)
            if self.reuse_port:
                plain = await tcp_accept.bind_shared(port, host=host)
            else:
                listeners = await tcp_accept.open_tcp_listeners(port, host=host)
                plain = [socket.socket(fileno=os.dup(ln.socket.fileno())) for ln in listeners]
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            self.held.hold(plain, listening=not self.reuse_port)
            bound = plain[0].getsockname()[1]
            try:
                task_status.started(bound)
                await self.held.wait()
            except BaseException:
                for sock in plain:
                    sock.close()
                raise
            self.log.info("bridge_listening", host=host, port=bound, batched=self.config.batched)
            if not self.config.batched:
                await tcp_accept.serve_listeners(
                    self.handle_stream,
                    [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in plain],
                )
                return
            # One task for every connection (receiver.ingest.bridge_loop), on plain sockets.
            from receiver.ingest.bridge_loop import BridgeLoop  # noqa: PLC0415 - import cycle

            await BridgeLoop(self.intake, self.limits, self.log).serve(plain)

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        await serve_connection(
            stream,
            self._converse,
            limits=self.limits,
            counters=self.counters,
            counter="bridge_connections",
            log=self.log,
        )

    async def _converse(self, stream: trio.SocketStream, peer: str, log: Any) -> None:
        """One bridge connection, until EOF, a refused HELLO or a timeout.

        Timeouts (counted as ``bridge_connections_closed_<reason>``):
        - ``no_hello``: no accepted HELLO within ``hello_timeout`` of the opening.
        - ``idle``: ``idle_timeout`` since the last complete frame, accepted or rejected (a bad
          CRC, a frame before HELLO); bytes that make no frame are no activity.
        - ``garbage``: ``garbage_timeout`` since the first read after the last frame that
          completed no frame (garbage, or a frame trickling in).
        - ``send_timeout``: replies could not be written for ``send_timeout``.
        """
        config = self.config
        conn = BridgeConnection("receiver", max_body=config.max_body)
        session = Session()
        rejections = RejectionLog(log)
        opened = last_frame = trio.current_time()
        garbage_since: float | None = None
        slack = min(
            1.0, 0.1 * min(config.idle_timeout, config.hello_timeout, config.garbage_timeout)
        )
        reason = "no_hello"
        # One cancel scope re-armed per read (coarsely: it may fire up to ``slack`` off). While
        # a batch is committed it is shielded, so a frame being stored still gets its ACK at
        # shutdown; the write of the replies has its own deadline, send_timeout.
        scope = trio.CancelScope()
        try:
            with scope:
                while True:
                    if conn.state is BridgeState.OPEN:
                        deadline, reason = last_frame + config.idle_timeout, "idle"
                    else:
                        deadline, reason = opened + config.hello_timeout, "no_hello"
                    if garbage_since is not None:
                        due = garbage_since + config.garbage_timeout
                        if due < deadline:
                            deadline, reason = due, "garbage"
                    if abs(scope.deadline - deadline) > slack:
                        scope.deadline = deadline
                    data = await stream.receive_some(65536)
                    now = trio.current_time()
                    conn.receive_data(data)
                    batch: list[Prepared] = []
                    closing = False
                    framed = False
                    while not closing:
                        event = conn.next_event()
                        if event is NEED_DATA:
                            break
                        if isinstance(event, RemoteProtocolError):
                            framed = framed or not isinstance(event, FramingError)
                            batch.append(self.intake.refuse(conn, event, rejections))
                            continue
                        assert isinstance(event, Envelope)
                        framed = True
                        if isinstance(event.body, Hello):
                            await self.intake.before_hello(event.body)
                            prepared = self.intake.hello(conn, event, session, peer, rejections)
                            if prepared.serial is not None:
                                log = log.bind(serial=prepared.serial)
                                rejections = rejections.bind(serial=prepared.serial)
                            closing = prepared.close_after
                            batch.append(prepared)
                        else:
                            batch.append(self.intake.prepare(event, session, peer, conn))
                    if framed:
                        last_frame, garbage_since = now, None
                    elif data and garbage_since is None:
                        garbage_since = now
                    if batch:
                        scope.deadline = math.inf
                        scope.shield = True
                        replies = await self.intake.commit(conn, batch, rejections)
                        if replies and not await self._send(stream, b"".join(replies)):
                            reason = "send_timeout"
                            break
                        scope.shield = False
                    if closing or not data:
                        return
        finally:
            rejections.close()
        if scope.cancelled_caught or reason == "send_timeout":
            self.counters.inc(f"bridge_connections_closed_{reason}")
            log.info("connection_timeout", reason=reason)

    async def _send(self, stream: trio.SocketStream, data: bytes) -> bool:
        """Write replies within ``send_timeout`` (even during shutdown); False if it ran out."""
        with trio.CancelScope(shield=True) as send:
            send.deadline = trio.current_time() + self.config.send_timeout
            await stream.send_all(data)
        return not send.cancelled_caught
