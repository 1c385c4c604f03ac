"""The DC-09 receiving engine: one per TCP connection (one per UDP socket), shaped like h11.

Rules:
- Sans-IO: bytes in (``receive_data``), events out (``next_event``): ``Accepted``, ``Rejected``
  or ``NEED_DATA``. A UDP datagram is one frame (``receive_datagram``). The clock and the pad
  randomness are parameters; nothing here does I/O or logs.
- The engine does everything a frame needs before it is stored: it splits the stream, checks
  the CRC, reads the header, asks the ``lookup`` it was handed for the account's policy (key,
  timestamp window, whether plaintext is refused), decrypts, applies the window, parses the
  events and builds the reply. A driver talks to it once per event and never picks a protocol
  reply: ``Accepted.reply`` is the ACK to send once the frame's signals are committed (never
  before), ``Rejected.reply`` the NAK or DUH to send at once (None: send nothing).
- A rejection's reply is the one its error names (``Rejected.error.reply``); the station's
  policies (``ReceiverRules``: bad CRC answered or not, unknown accounts accepted, DUH'd or
  NAK'd) are applied here, when the error is made, never rewritten afterwards.
- Bytes that make no frame come out as a ``Rejected`` carrying a ``FramingError`` and no reply
  (``Rejected.framing``); a good frame after them, or sharing their read, still comes out.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from attrs import field, frozen

from protocols import dc09
from protocols.dc09 import Dc09Frame, Dc09Header, FrameSplitter, TimestampWindow
from protocols.drafts import draft_of
from protocols.errors import (
    ChecksumError,
    FramingError,
    LocalProtocolError,
    PlaintextRefusedError,
    RemoteProtocolError,
    Reply,
    UnknownAccountError,
)
from protocols.payload import Event, parse_events
from protocols.stream import NEED_DATA, NeedData

__all__ = [
    "NEED_DATA",
    "Accepted",
    "AccountPolicy",
    "Crashed",
    "Dc09Engine",
    "Lookup",
    "ReceiverRules",
    "Rejected",
]

R = TypeVar("R")


@frozen
class AccountPolicy(Generic[R]):
    """What the engine must know about one account; ``record`` is the lookup's own view of it
    (the registry account), handed back untouched in ``Accepted.account``."""

    record: R
    key: bytes | None = None
    window: TimestampWindow | None = None  # None: the receiver's window
    refuse_plaintext: bool = True  # only with a key: plaintext from a keyed account -> DUH
    # Key rotation: the key before the current one (None: plaintext) is still accepted until
    # ``grace_until`` (epoch seconds); the ACK goes out under the key that decrypted.
    previous_key: bytes | None = None
    grace_until: float | None = None

    def keys_in_grace(self, now: datetime) -> tuple[bytes | None, ...]:
        """The previous key while its grace lasts (None in it: plaintext), else nothing."""
        if self.grace_until is None or now.timestamp() >= self.grace_until:
            return ()
        return (self.previous_key,)


Lookup = Callable[[Dc09Header], "AccountPolicy[R] | None"]
"""The account a header names, or None when the registry does not know it."""


def _reply_to_crc(_: object, __: object, value: Reply) -> None:
    if value not in (Reply.NONE, Reply.NAK):
        raise LocalProtocolError(f"a bad CRC is answered with nothing or NAK, not {value.value}")


def _reply_to_unknown(_: object, __: object, value: Reply) -> None:
    if value not in (Reply.ACK, Reply.DUH, Reply.NAK):
        raise LocalProtocolError(f"an unknown account gets ACK, DUH or NAK, not {value.value}")


@frozen
class ReceiverRules:
    """The station's receiver-wide policies (from ``[dc09]`` in the configuration)."""

    window: TimestampWindow = field(factory=TimestampWindow)
    bad_crc_reply: Reply = field(default=Reply.NONE, validator=_reply_to_crc)
    # ACK: accept and store (the signal is flagged unknown_account); DUH or NAK: refuse.
    unknown_account: Reply = field(default=Reply.ACK, validator=_reply_to_unknown)
    ack_pipe: bool = True  # encrypted ACK "<pad>|]_ts" (standard) or "<pad>]_ts"
    max_frame: int = 4096


@frozen(weakref_slot=False)
class Accepted(Generic[R]):
    """A frame that passed every check: store its events, then send ``reply`` (the ACK)."""

    frame: Dc09Frame
    events: tuple[Event, ...]
    account: AccountPolicy[R] | None  # None: not in the registry, accepted by policy
    reply: bytes
    received_at: datetime

    @property
    def header(self) -> Dc09Header:
        return self.frame.header

    @property
    def raw(self) -> bytes:
        return self.frame.raw


@frozen
class Crashed:
    """A frame that hit a bug (an exception outside the error tree) while it was judged: it
    costs this frame only. ``reply`` is DUH ("received, cannot process": the CRC held, the fault
    is the receiver's) when the header reads, else None (a DUH must echo the header)."""

    exception: Exception
    reply: bytes | None
    raw: bytes


@frozen
class Rejected:
    """Bytes that are not an acceptable frame: send ``reply`` now (None: nothing)."""

    error: RemoteProtocolError
    reply: bytes | None
    header: Dc09Header | None  # None when the frame's header could not be read
    raw: bytes

    @property
    def reason(self) -> str:
        return self.error.reason

    @property
    def framing(self) -> bool:
        """Bytes that made no frame at all (garbage, cut short, oversized)."""
        return isinstance(self.error, FramingError)


_utc_now: Callable[[], datetime] = functools.partial(datetime.now, UTC)  # no Python frame


# An accepted frame is filled as a draft (``protocols.drafts``; a property test holds it equal
# to the constructor's).
_new = object.__new__
_AcceptedDraft = draft_of(Accepted)


def _header_or_none(raw: bytes) -> Dc09Header | None:
    try:
        return dc09.read_header(raw)
    except RemoteProtocolError:
        return None


class Dc09Engine(Generic[R]):
    """One connection's (or one UDP socket's) receiving side."""

    def __init__(
        self,
        lookup: Lookup[R],
        rules: ReceiverRules = ReceiverRules(),
        *,
        clock: Callable[[], datetime] = _utc_now,
        rand: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.lookup = lookup
        self.rules = rules
        self.clock = clock
        self.rand = rand
        self._splitter = FrameSplitter(max_frame=rules.max_frame)

    # -- a stream (TCP) -------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes as they arrived; frames may be split across calls or share one."""
        self._splitter.receive_data(data)

    @property
    def pending_bytes(self) -> int:
        """Bytes held that do not make a frame yet (a driver times a slow frame out on it)."""
        return self._splitter.pending_bytes

    def next_event(self) -> Accepted[R] | Rejected | Crashed | NeedData:
        chunk = self._splitter.next_event()
        if chunk is NEED_DATA:
            return NEED_DATA
        if isinstance(chunk, FramingError):
            return Rejected(chunk, None, None, chunk.raw)
        return self.judge(chunk)

    # -- a datagram (UDP) -----------------------------------------------------------------------

    def receive_datagram(self, data: bytes) -> Accepted[R] | Rejected | Crashed:
        """One datagram is one frame (trailing NULs dropped, as some panels pad datagrams)."""
        raw = data.rstrip(b"\x00")
        if len(raw) > self.rules.max_frame:
            error = FramingError(
                f"datagram of {len(raw)} bytes is longer than {self.rules.max_frame}",
                raw=raw,
                reason="oversized",
            )
            return Rejected(error, None, None, raw)
        return self.judge(raw)

    # -- one frame ------------------------------------------------------------------------------

    def judge(self, raw: bytes) -> Accepted[R] | Rejected | Crashed:
        """Check, decrypt and decode one whole frame; pick its reply. A bug while doing so
        (any exception outside the error tree) comes out as ``Crashed``: it costs this frame,
        never the connection or the frames after it."""
        try:
            return self._judge(raw)
        except Exception as exc:  # a codec bug must cost one frame, no more
            try:
                header: Dc09Header | None = dc09.read_header(raw)
            except Exception:  # the header read may be what failed
                header = None
            return Crashed(exc, dc09.duh(header) if header is not None else None, raw)

    def _judge(self, raw: bytes) -> Accepted[R] | Rejected:
        now = self.clock()
        rules = self.rules
        frame: Dc09Frame | None = None
        envelope: dc09.Envelope | None = None
        try:
            if raw.find(b'"*', 0, 16) >= 0:
                # Encrypted: the key depends on the account named in the clear header (read
                # once: the decode below goes on from this envelope).
                envelope = dc09.read_envelope(raw)
                header = envelope.header
            else:
                # Plaintext needs no key: decode once (the hot path), look up afterwards; the
                # common frame in one match when no window applies to plaintext.
                if not rules.window.check_plain:
                    frame = dc09.decode_common(raw)
                if frame is None:
                    frame = dc09.decode_frame(raw, key=None, now=now, window=rules.window)
                header = frame.header
        except ChecksumError as exc:
            if rules.bad_crc_reply is Reply.NAK:
                exc = ChecksumError(exc.message, raw=raw, reply=Reply.NAK, reason=exc.reason)
            return self._reject(exc, None, raw, now)
        except RemoteProtocolError as exc:
            header_known = _header_or_none(raw) if exc.reply is not Reply.NONE else None
            return self._reject(exc, header_known, raw, now)
        policy = self.lookup(header)
        if policy is None:
            if rules.unknown_account is not Reply.ACK:
                refused = UnknownAccountError(
                    f"account {header.account} is not in the registry",
                    raw=raw,
                    reply=rules.unknown_account,
                )
                return self._reject(refused, header, raw, now)
            key = None
            window = rules.window
            in_grace: tuple[bytes | None, ...] = ()
        else:
            key = policy.key
            window = policy.window or rules.window
            in_grace = policy.keys_in_grace(now)
            if (
                key is not None
                and not header.encrypted
                and policy.refuse_plaintext
                and None not in in_grace
            ):
                refused_plain = PlaintextRefusedError(
                    "plaintext frame for an account that has a key", raw=raw
                )
                return self._reject(refused_plain, header, raw, now)
        try:
            if frame is None or (window is not rules.window and window.check_plain):
                frame, key = _decode_rotating(raw, key, in_grace, now, window, envelope=envelope)
            events = parse_events(frame.header.token, frame.data)
        except RemoteProtocolError as exc:
            return self._reject(exc, header, raw, now)
        if header.encrypted:
            reply = dc09.ack(header, key=key, now=now, pipe=rules.ack_pipe, rand=self.rand)
        else:
            reply = dc09.plain_ack(header)
        # Accepted(frame, events, policy, reply, now), filled as a draft.
        accepted: Any = _new(_AcceptedDraft)
        accepted.frame = frame
        accepted.events = events
        accepted.account = policy
        accepted.reply = reply
        accepted.received_at = now
        accepted.__class__ = Accepted
        built: Accepted[R] = accepted
        return built

    def _reject(
        self,
        error: RemoteProtocolError,
        header: Dc09Header | None,
        raw: bytes,
        now: datetime,
    ) -> Rejected:
        return Rejected(error, dc09.reply_for_error(error, header, now=now), header, raw)


def _decode_rotating(
    raw: bytes,
    key: bytes | None,
    in_grace: tuple[bytes | None, ...],
    now: datetime,
    window: TimestampWindow,
    *,
    envelope: dc09.Envelope | None = None,
) -> tuple[Dc09Frame, bytes | None]:
    """Decode under the account's key, then under a previous key still in its grace; the
    frame and the key it decrypted under (the ACK is encrypted with it). The first error is
    the one reported."""
    try:
        return dc09.decode_frame(raw, key=key, now=now, window=window, envelope=envelope), key
    except RemoteProtocolError:
        for old in in_grace:
            if old is None or old == key:
                continue
            try:
                frame = dc09.decode_frame(raw, key=old, now=now, window=window, envelope=envelope)
                return frame, old
            except RemoteProtocolError:
                continue
        raise
