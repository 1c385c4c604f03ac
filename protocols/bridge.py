"""The video bridge protocol: a binary, length-prefixed, CRC-32-checked frame over TCP.

Rules of this module:

- The wire format is written once, declaratively, with construct (``HEADER``, ``FRAME``,
  ``BODIES``). That definition is the specification and the test oracle; the hot path
  (``encode_frame``/``decode_frame``) uses ``struct`` for the header and the EVENT, HEARTBEAT and
  ACK bodies, and is tested byte for byte against the construct definition.
- ``BridgeConnection`` is sans-IO (h11 style): bytes in through ``receive_data``, events out of
  ``next_event``; events in through ``send``, bytes out. It never raises for what the peer sent:
  garbage, a bad CRC, an unknown version or type, a malformed body, a message before HELLO all
  come out of ``next_event`` as ``RemoteProtocolError`` events carrying ``raw`` and the reply the
  protocol calls for, and a good frame after garbage still comes out.
- Nothing here reads the clock: every outgoing frame's device time is given by the caller.
- ``docs/bridge-protocol.md`` is the document a firmware engineer implements from; its hex dumps
  are checked against this module by the tests.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeAlias

import attrs
import construct as cs
from attrs import field, frozen, validators

from protocols.errors import (
    ChecksumError,
    FramingError,
    LengthError,
    LocalProtocolError,
    MalformedFrameError,
    PayloadError,
    RemoteProtocolError,
    Reply,
    UnsupportedError,
)
from protocols.stream import NEED_DATA as NEED_DATA  # noqa: PLC0414 - re-exported
from protocols.stream import NeedData as NeedData  # noqa: PLC0414 - re-exported

MAGIC: Final = b"VB"
VERSION: Final = 1
HEADER_SIZE: Final = 24
CRC_SIZE: Final = 4
DEFAULT_MAX_BODY: Final = 1024
# Garbage is reported once per run of junk, or every this many bytes so memory stays bounded.
MAX_GARBAGE_REPORT: Final = 4096
SEQUENCE_MAX: Final = 0xFFFF_FFFF
NO_USER: Final = 0xFFFF
CHANNEL_COUNTS: Final = (4, 8, 12, 16)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MessageType(enum.IntEnum):
    """The header's message type byte."""

    HELLO = 0x01
    EVENT = 0x02
    HEARTBEAT = 0x03
    ACK = 0x04
    NAK = 0x05


class EventKind(enum.IntEnum):
    """What happened at the bridge; the byte value is the wire code."""

    INPUT_ALARM = 0x01
    INPUT_RESTORE = 0x02
    ANALYTICS = 0x03
    CAMERA_LOST = 0x04
    CAMERA_RESTORED = 0x05
    TAMPER = 0x06
    TAMPER_RESTORE = 0x07
    ARM = 0x10
    DISARM = 0x11
    PARTIAL_ARM = 0x12
    POWER_LOST = 0x20
    POWER_RESTORED = 0x21
    PERIODIC_TEST = 0x30
    PRIVACY_ON = 0x31
    PRIVACY_OFF = 0x32
    PROGRAMMING_CHANGE = 0x33


class ArmState(enum.IntEnum):
    """The bridge's arming state as reported in HEARTBEAT."""

    DISARMED = 0
    ARMED = 1
    PARTIAL = 2


class NakReason(enum.IntEnum):
    """Why the receiver refused a message; the byte value is the wire code."""

    BAD_CRC = 0x01
    UNKNOWN_BRIDGE = 0x02
    BAD_TOKEN = 0x03
    NOT_AUTHENTICATED = 0x04
    MALFORMED = 0x05
    BUSY = 0x06
    UNSUPPORTED_VERSION = 0x07
    UNSUPPORTED = 0x08
    BAD_CHANNEL = 0x09

    @property
    def reason(self) -> str:
        """The snake_case name used as ``RemoteProtocolError.reason`` and in logs."""
        return self.name.lower()


# Kinds about one channel (camera + input): channel 1..16. Kinds about the bridge itself:
# channel 0. Tamper may be either (the enclosure, or one camera).
CHANNEL_KINDS: Final = frozenset(
    {
        EventKind.INPUT_ALARM,
        EventKind.INPUT_RESTORE,
        EventKind.ANALYTICS,
        EventKind.CAMERA_LOST,
        EventKind.CAMERA_RESTORED,
    }
)
EITHER_KINDS: Final = frozenset({EventKind.TAMPER, EventKind.TAMPER_RESTORE})
# Kinds a person causes; only these may name a user.
USER_KINDS: Final = frozenset(
    {
        EventKind.ARM,
        EventKind.DISARM,
        EventKind.PARTIAL_ARM,
        EventKind.PRIVACY_ON,
        EventKind.PRIVACY_OFF,
        EventKind.PROGRAMMING_CHANGE,
    }
)

# --------------------------------------------------------------------------------------------
# The wire format, declaratively. This is the specification.
# --------------------------------------------------------------------------------------------

HEADER = cs.Struct(
    "magic" / cs.Const(MAGIC),
    "version" / cs.Int8ub,
    "type" / cs.Int8ub,
    "length" / cs.Int16ub,
    "bridge_id" / cs.Bytes(6),
    "sequence" / cs.Int32ub,
    "device_time_ms" / cs.Int64ub,
)

FRAME = cs.Struct(
    "signed"
    / cs.RawCopy(
        cs.Struct(
            "header" / HEADER,
            "body" / cs.Bytes(cs.this.header.length),
        )
    ),
    "crc" / cs.Checksum(cs.Int32ub, zlib.crc32, cs.this.signed.data),
    cs.Terminated,
)

_Text = cs.PascalString(cs.Int8ub, "utf8")

BODIES: Final[dict[MessageType, cs.Construct]] = {
    MessageType.HELLO: cs.Struct(
        "serial" / _Text,
        "model" / _Text,
        "channels" / cs.Int8ub,
        "firmware" / _Text,
        "token" / _Text,
        cs.Terminated,
    ),
    MessageType.EVENT: cs.Struct(
        "channel" / cs.Int8ub,
        "kind" / cs.Int8ub,
        "user" / cs.Int16ub,  # 0xFFFF: no user
        "text" / _Text,  # empty: no text
        cs.Terminated,
    ),
    MessageType.HEARTBEAT: cs.Struct(
        "armed" / cs.Int8ub,
        "firmware" / _Text,
        cs.Terminated,
    ),
    MessageType.ACK: cs.Struct(
        "acked_sequence" / cs.Int32ub,
        cs.Terminated,
    ),
    MessageType.NAK: cs.Struct(
        "nacked_sequence" / cs.Int32ub,
        "reason" / cs.Int8ub,
        cs.Terminated,
    ),
}

# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _text(
    max_bytes: int, *, empty: bool = False
) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, str):
            raise TypeError(f"{attribute.name} must be str, got {value!r}")
        size = len(value.encode("utf-8"))
        if size > max_bytes or (size == 0 and not empty):
            raise ValueError(f"{attribute.name} must be 1..{max_bytes} UTF-8 bytes, got {value!r}")
        if any(ch in value for ch in "\x00\r\n"):
            raise ValueError(f"{attribute.name} must not hold NUL or line breaks: {value!r}")

    return check


def _sequence(_: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= SEQUENCE_MAX:
        raise ValueError(f"{attribute.name} must fit in 32 bits, got {value}")


@frozen
class Hello:
    """First message of a connection: who the bridge is and its auth token."""

    serial: str = field(validator=_text(64))
    model: str = field(validator=_text(32))
    channels: int = field(validator=validators.in_(CHANNEL_COUNTS))
    firmware: str = field(validator=_text(32))
    token: str = field(validator=_text(128), repr=False)


@frozen(kw_only=True)
class Event:
    """Something happened on a channel (1..16) or on the bridge itself (channel 0)."""

    channel: int = field(validator=[validators.instance_of(int), validators.in_(range(17))])
    kind: EventKind = field(converter=EventKind)
    user: int | None = field(default=None)
    text: str | None = field(default=None, validator=validators.optional(_text(255)))

    @user.validator
    def _check_user(self, _: attrs.Attribute[int | None], value: int | None) -> None:
        if value is None:
            return
        if self.kind not in USER_KINDS:
            raise ValueError(f"{self.kind.name} does not carry a user")
        if not 0 <= value < NO_USER:
            raise ValueError(f"user must be 0..{NO_USER - 1}, got {value}")

    def __attrs_post_init__(self) -> None:
        if self.kind in CHANNEL_KINDS and self.channel == 0:
            raise ValueError(f"{self.kind.name} needs a channel 1..16")
        if self.kind not in CHANNEL_KINDS | EITHER_KINDS and self.channel != 0:
            raise ValueError(f"{self.kind.name} is about the bridge: channel must be 0")


@frozen
class Heartbeat:
    """Periodic sign of life with the arming state and firmware version."""

    armed: ArmState = field(converter=ArmState)
    firmware: str = field(validator=_text(32))


@frozen
class Ack:
    """The receiver stored the message with this sequence."""

    acked_sequence: int = field(validator=_sequence)


@frozen
class Nak:
    """The receiver refused the message with this sequence."""

    nacked_sequence: int = field(validator=_sequence)
    reason: NakReason = field(converter=NakReason)


BridgeMessage: TypeAlias = Hello | Event | Heartbeat | Ack | Nak

MESSAGE_TYPES: Final[dict[type[Any], MessageType]] = {
    Hello: MessageType.HELLO,
    Event: MessageType.EVENT,
    Heartbeat: MessageType.HEARTBEAT,
    Ack: MessageType.ACK,
    Nak: MessageType.NAK,
}


def _bridge_id(_: Any, attribute: attrs.Attribute[bytes], value: bytes) -> None:
    if not isinstance(value, bytes) or len(value) != 6:
        raise ValueError(f"{attribute.name} must be 6 bytes (a MAC), got {value!r}")


def _device_time(value: datetime | None) -> datetime | None:
    # The wire carries milliseconds; normalizing here makes decode(encode(x)) == x.
    if value is None:
        return None
    if value.utcoffset() is None:
        raise ValueError(f"device_time must be timezone-aware, got {value!r}")
    value = value.astimezone(UTC)
    value = value.replace(microsecond=value.microsecond // 1000 * 1000)
    if value <= _EPOCH:
        raise ValueError(f"device_time must be after 1970-01-01, got {value!r}")
    return value


@frozen(kw_only=True)
class Envelope:
    """One frame: the header fields the receiver needs and the message body.

    ``device_time`` None means the bridge does not know the time (0 on the wire). ``raw`` is
    the whole frame as received, for audit; it takes no part in equality.
    """

    bridge_id: bytes = field(validator=_bridge_id)
    sequence: int = field(validator=_sequence)
    device_time: datetime | None = field(converter=_device_time)
    body: BridgeMessage = field(validator=validators.instance_of(tuple(MESSAGE_TYPES)))
    raw: bytes = field(default=b"", eq=False, repr=False)

    @property
    def type(self) -> MessageType:
        """The header's message type for this body."""
        return MESSAGE_TYPES[type(self.body)]

    @property
    def bridge_mac(self) -> str:
        """The bridge id as a MAC address, for logs."""
        return self.bridge_id.hex(":").upper()


def _time_to_ms(value: datetime | None) -> int:
    if value is None:
        return 0
    return (value - _EPOCH) // timedelta(milliseconds=1)


def _ms_to_time(ms: int) -> datetime | None:
    if ms == 0:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


# --------------------------------------------------------------------------------------------
# Encoding and decoding through the construct definition (the oracle)
# --------------------------------------------------------------------------------------------


def _body_fields(body: BridgeMessage) -> dict[str, Any]:
    if isinstance(body, Hello):
        return attrs.asdict(body)
    if isinstance(body, Event):
        return {
            "channel": body.channel,
            "kind": int(body.kind),
            "user": NO_USER if body.user is None else body.user,
            "text": body.text or "",
        }
    if isinstance(body, Heartbeat):
        return {"armed": int(body.armed), "firmware": body.firmware}
    if isinstance(body, Ack):
        return {"acked_sequence": body.acked_sequence}
    return {"nacked_sequence": body.nacked_sequence, "reason": int(body.reason)}


def _body_from_fields(kind: MessageType, values: dict[str, Any]) -> BridgeMessage:
    if kind is MessageType.HELLO:
        return Hello(
            values["serial"],
            values["model"],
            values["channels"],
            values["firmware"],
            values["token"],
        )
    if kind is MessageType.EVENT:
        return Event(
            channel=values["channel"],
            kind=values["kind"],
            user=None if values["user"] == NO_USER else values["user"],
            text=values["text"] or None,
        )
    if kind is MessageType.HEARTBEAT:
        return Heartbeat(values["armed"], values["firmware"])
    if kind is MessageType.ACK:
        return Ack(values["acked_sequence"])
    return Nak(values["nacked_sequence"], values["reason"])


def encode_frame_spec(envelope: Envelope) -> bytes:
    """Build a frame with the construct definition (the oracle for ``encode_frame``)."""
    body = BODIES[envelope.type].build(_body_fields(envelope.body))
    header = {
        "version": VERSION,
        "type": int(envelope.type),
        "length": len(body),
        "bridge_id": envelope.bridge_id,
        "sequence": envelope.sequence,
        "device_time_ms": _time_to_ms(envelope.device_time),
    }
    return bytes(FRAME.build({"signed": {"value": {"header": header, "body": body}}}))


def decode_frame_spec(frame: bytes) -> Envelope:
    """Parse one whole frame with the construct definition (the oracle for ``decode_frame``)."""
    try:
        parsed = FRAME.parse(frame)
    except cs.ChecksumError as exc:
        raise ChecksumError("bridge frame CRC-32 mismatch", raw=frame, reply=Reply.NAK) from exc
    except cs.ConstructError as exc:
        raise FramingError(f"not a bridge frame: {exc}", raw=frame) from exc
    header = parsed.signed.value.header
    body = parsed.signed.value.body
    kind = _check_header(header.version, header.type, frame)
    try:
        values = dict(BODIES[kind].parse(body))
        values.pop("_io", None)
        message = _body_from_fields(kind, values)
        return Envelope(
            bridge_id=header.bridge_id,
            sequence=header.sequence,
            device_time=_ms_to_time(header.device_time_ms),
            body=message,
            raw=frame,
        )
    except (cs.ConstructError, UnicodeDecodeError, ValueError, TypeError, OverflowError) as exc:
        raise _malformed(kind, frame, exc) from exc


def _check_header(version: int, type_code: int, frame: bytes) -> MessageType:
    if version != VERSION:
        raise UnsupportedError(
            f"bridge protocol version {version} is not supported",
            raw=frame,
            reply=Reply.NAK,
            reason=NakReason.UNSUPPORTED_VERSION.reason,
        )
    try:
        return MessageType(type_code)
    except ValueError:
        raise UnsupportedError(
            f"unknown bridge message type 0x{type_code:02X}",
            raw=frame,
            reply=Reply.NAK,
            reason=NakReason.UNSUPPORTED.reason,
        ) from None


def _malformed(kind: MessageType, frame: bytes, exc: Exception) -> PayloadError:
    return PayloadError(
        f"malformed {kind.name} body: {exc}",
        raw=frame,
        reply=Reply.NAK,
        reason=NakReason.MALFORMED.reason,
    )


# --------------------------------------------------------------------------------------------
# The fast path: struct for the header and the hot bodies
# --------------------------------------------------------------------------------------------

_HEADER = struct.Struct(">2sBBH6sIQ")
_CRC = struct.Struct(">I")
_EVENT = struct.Struct(">BBHB")
_HEARTBEAT = struct.Struct(">BB")
_ACK = struct.Struct(">I")
assert _HEADER.size == HEADER_SIZE


def _short_text(value: str) -> bytes:
    data = value.encode("utf-8")
    return bytes((len(data),)) + data


def encode_frame(envelope: Envelope) -> bytes:
    """Build a frame; struct for EVENT, HEARTBEAT and ACK, the construct definition otherwise."""
    body_msg = envelope.body
    if isinstance(body_msg, Event):
        text = (body_msg.text or "").encode("utf-8")
        user = NO_USER if body_msg.user is None else body_msg.user
        body = _EVENT.pack(body_msg.channel, body_msg.kind, user, len(text)) + text
    elif isinstance(body_msg, Heartbeat):
        firmware = body_msg.firmware.encode("utf-8")
        body = _HEARTBEAT.pack(body_msg.armed, len(firmware)) + firmware
    elif isinstance(body_msg, Ack):
        body = _ACK.pack(body_msg.acked_sequence)
    else:
        return encode_frame_spec(envelope)
    signed = (
        _HEADER.pack(
            MAGIC,
            VERSION,
            envelope.type,
            len(body),
            envelope.bridge_id,
            envelope.sequence,
            _time_to_ms(envelope.device_time),
        )
        + body
    )
    return signed + _CRC.pack(zlib.crc32(signed))


def _decode_body_fast(kind: MessageType, frame: bytes, length: int) -> BridgeMessage:
    end = HEADER_SIZE + length
    if kind is MessageType.EVENT:
        channel, event_kind, user, text_len = _EVENT.unpack_from(frame, HEADER_SIZE)
        if _EVENT.size + text_len != length:
            raise ValueError("EVENT text length disagrees with the body length")
        return Event(
            channel=channel,
            kind=event_kind,
            user=None if user == NO_USER else user,
            text=frame[HEADER_SIZE + _EVENT.size : end].decode("utf-8") or None,
        )
    if kind is MessageType.HEARTBEAT:
        armed, fw_len = _HEARTBEAT.unpack_from(frame, HEADER_SIZE)
        if _HEARTBEAT.size + fw_len != length:
            raise ValueError("HEARTBEAT firmware length disagrees with the body length")
        return Heartbeat(armed, frame[HEADER_SIZE + _HEARTBEAT.size : end].decode("utf-8"))
    if kind is MessageType.ACK:
        if length != _ACK.size:
            raise ValueError(f"ACK body must be {_ACK.size} bytes, got {length}")
        return Ack(_ACK.unpack_from(frame, HEADER_SIZE)[0])
    values = dict(BODIES[kind].parse(frame[HEADER_SIZE:end]))
    values.pop("_io", None)
    return _body_from_fields(kind, values)


def decode_frame(frame: bytes) -> Envelope:
    """Parse one whole frame (header, body, CRC); struct for EVENT, HEARTBEAT and ACK.

    Raises a ``RemoteProtocolError`` (with ``raw`` and the reply to send) and nothing else.
    """
    if len(frame) < HEADER_SIZE + CRC_SIZE:
        raise FramingError("bridge frame shorter than header and CRC", raw=frame)
    magic, version, type_code, length, bridge_id, sequence, ms = _HEADER.unpack_from(frame)
    if magic != MAGIC:
        raise FramingError("bridge frame does not start with magic 'VB'", raw=frame)
    if len(frame) != HEADER_SIZE + length + CRC_SIZE:
        raise FramingError(
            f"bridge frame is {len(frame)} bytes, its header says "
            f"{HEADER_SIZE + length + CRC_SIZE}",
            raw=frame,
        )
    end = HEADER_SIZE + length
    if zlib.crc32(memoryview(frame)[:end]) != _CRC.unpack_from(frame, end)[0]:
        raise ChecksumError("bridge frame CRC-32 mismatch", raw=frame, reply=Reply.NAK)
    kind = _check_header(version, type_code, frame)
    try:
        body = _decode_body_fast(kind, frame, length)
        return Envelope(
            bridge_id=bridge_id,
            sequence=sequence,
            device_time=_ms_to_time(ms),
            body=body,
            raw=frame,
        )
    except (
        struct.error,
        cs.ConstructError,
        UnicodeDecodeError,
        ValueError,
        TypeError,
        OverflowError,
    ) as exc:
        raise _malformed(kind, frame, exc) from exc


def redact_token(raw: bytes) -> bytes:
    """``raw`` with a HELLO's token masked (each of its bytes ``*``), for logs and the journal.

    Only a HELLO carries a secret; any other bytes come back unchanged. The mask keeps every
    length, so the frame still reads as a HELLO (its CRC no longer matches). A HELLO whose body
    cannot be walked to its token (truncated, lengths that disagree) has its whole body masked:
    a malformed frame must not leak its token either.
    """
    if len(raw) < HEADER_SIZE or raw[:2] != MAGIC or raw[3] != MessageType.HELLO:
        return raw
    length = _HEADER.unpack_from(raw)[3]
    end = HEADER_SIZE + length
    masked = bytearray(raw)
    start = stop = -1
    if len(raw) == end + CRC_SIZE:
        position = HEADER_SIZE
        for field_size in (None, None, 1, None):  # serial, model, channels, firmware
            if position >= end:
                break
            position += field_size if field_size is not None else 1 + raw[position]
        else:
            if position < end:
                start, stop = position + 1, position + 1 + raw[position]
    if not HEADER_SIZE < start <= stop <= end:
        start, stop = HEADER_SIZE, len(raw)  # cannot tell where the token is: mask it all
    masked[start:stop] = b"*" * (stop - start)
    return bytes(masked)


# --------------------------------------------------------------------------------------------
# The sans-IO connection
# --------------------------------------------------------------------------------------------


_MESSAGE_TYPES: Final = frozenset(int(t) for t in MessageType)


class NotAuthenticatedError(RemoteProtocolError):
    """A well-formed message from a bridge that has not said HELLO (or is not the one that did).

    ``reason`` is ``not_authenticated`` (no HELLO yet) or ``unknown_bridge`` (another bridge id).
    """

    default_reply = Reply.NAK
    default_reason = NakReason.NOT_AUTHENTICATED.reason


class BridgeState(enum.Enum):
    """Where a connection is. Every transition is in ``TRANSITIONS``."""

    AWAIT_HELLO = "await_hello"  # receiver: nothing yet. bridge: HELLO not sent yet
    HELLO_PENDING = "hello_pending"  # HELLO received (receiver) or sent (bridge), not answered
    OPEN = "open"  # HELLO accepted: events and heartbeats flow
    CLOSED = "closed"  # HELLO refused, or EOF


Role: TypeAlias = Literal["receiver", "bridge"]
BridgeEvent: TypeAlias = Envelope | RemoteProtocolError | NeedData

_SENT_BY: Final[dict[Role, frozenset[type[Any]]]] = {
    "bridge": frozenset({Hello, Event, Heartbeat}),
    "receiver": frozenset({Ack, Nak}),
}


class BridgeStep(enum.Enum):
    """What moves a connection from one state to another (in either direction of travel)."""

    HELLO = "hello"  # a HELLO: received (receiver role) or sent (bridge role)
    HELLO_ACCEPTED = "hello_accepted"  # the ACK of that HELLO: sent (receiver) or received
    HELLO_REFUSED = "hello_refused"  # the NAK of that HELLO: sent (receiver) or received
    EOF = "eof"  # the peer closed and every byte it sent has been read


_S = BridgeState
# Every state change of a connection, in one place: (role, state, step) -> next state.
# A step not listed here leaves the state as it is (a HELLO answered twice, a late ACK).
TRANSITIONS: Final[dict[tuple[Role, BridgeState, BridgeStep], BridgeState]] = {
    ("receiver", _S.AWAIT_HELLO, BridgeStep.HELLO): _S.HELLO_PENDING,
    # A repeated HELLO (same bridge: checked before) is answered again, like the first.
    ("receiver", _S.OPEN, BridgeStep.HELLO): _S.HELLO_PENDING,
    ("receiver", _S.HELLO_PENDING, BridgeStep.HELLO_ACCEPTED): _S.OPEN,
    ("receiver", _S.HELLO_PENDING, BridgeStep.HELLO_REFUSED): _S.CLOSED,
    ("bridge", _S.AWAIT_HELLO, BridgeStep.HELLO): _S.HELLO_PENDING,
    ("bridge", _S.HELLO_PENDING, BridgeStep.HELLO): _S.HELLO_PENDING,
    ("bridge", _S.OPEN, BridgeStep.HELLO): _S.HELLO_PENDING,
    ("bridge", _S.HELLO_PENDING, BridgeStep.HELLO_ACCEPTED): _S.OPEN,
    ("bridge", _S.HELLO_PENDING, BridgeStep.HELLO_REFUSED): _S.CLOSED,
    **{(role, state, BridgeStep.EOF): _S.CLOSED for role in ("receiver", "bridge") for state in _S},
}


class BridgeConnection:
    """One TCP connection between a bridge and the receiver, in either role, without I/O.

    Receiver role: the first message must be HELLO. After ``next_event`` returns the HELLO, the
    receiver answers with ``ack`` (the connection is open, pinned to that bridge id and channel
    count) or ``nak`` (the connection is closed). A well-formed message before that comes out as
    a ``NotAuthenticatedError`` event; ``reply_to(error, now=...)`` builds the NAK to send for
    any error event (or None when the protocol says to stay silent).

    Bridge role: the first message sent must be HELLO; an ACK of it opens the connection, a NAK
    of it closes it. ACKs and NAKs that carry another bridge id are refused as events.
    """

    def __init__(
        self,
        role: Role,
        *,
        bridge_id: bytes | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        first_sequence: int = 1,
    ) -> None:
        if role not in _SENT_BY:
            raise LocalProtocolError(f"role must be 'receiver' or 'bridge', got {role!r}")
        if role == "bridge" and (bridge_id is None or len(bridge_id) != 6):
            raise LocalProtocolError("a bridge needs its 6-byte bridge id")
        if not 0 < first_sequence <= SEQUENCE_MAX:
            raise LocalProtocolError(f"first_sequence must be 1..{SEQUENCE_MAX}")
        if not 0 < max_body <= 0xFFFF:
            raise LocalProtocolError(f"max_body must be 1..65535, got {max_body}")
        self.role: Role = role
        self.bridge_id = bridge_id
        self.max_body = max_body
        self.state = BridgeState.AWAIT_HELLO
        self.hello: Hello | None = None
        self._hello_sequence: int | None = None
        self._next_sequence = first_sequence
        self._buffer = bytearray()
        self._garbage = bytearray()
        self._quiet = 0  # bytes of a frame already reported as a ChecksumError
        # Looking ahead while a header waits for its bytes (see ``_embedded_frame``).
        self._probe_from = 1
        self._probe_starts: list[int] = []
        self._eof = False

    # ---- receiving ----------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed bytes read from the peer; ``b""`` means the peer closed the connection."""
        if self._eof:
            if data:
                raise LocalProtocolError("data received after EOF")
            return
        if not data:
            self._eof = True
            return
        self._buffer += data

    def next_event(self) -> BridgeEvent:
        """The next message or error in the stream, or ``NEED_DATA``."""
        if self.state is BridgeState.CLOSED:
            return NEED_DATA
        if self.role == "receiver" and self.state is BridgeState.HELLO_PENDING:
            raise LocalProtocolError("answer the HELLO (ack or nak) before reading on")
        buf = self._buffer
        while True:
            start = buf.find(MAGIC)
            if start < 0:
                # Keep a trailing b"V": it may be the first half of the next magic.
                self._discard(len(buf) - (1 if buf.endswith(MAGIC[:1]) else 0))
            elif start:
                self._discard(start)
            if len(self._garbage) >= MAX_GARBAGE_REPORT or (
                self._garbage and buf.startswith(MAGIC)
            ):
                return self._report_garbage()
            if not buf.startswith(MAGIC) or len(buf) < HEADER_SIZE:
                return self._need_data()
            length = int.from_bytes(buf[4:6], "big")
            if length > self.max_body:
                # Not a frame we could ever accept: a false magic or a corrupted length field.
                # Refuse the header and rescan from the next byte.
                if self._quiet:
                    self._discard(1)  # inside bytes already reported
                    continue
                return self._bad_length(
                    HEADER_SIZE, f"bridge frame length {length} exceeds max_body {self.max_body}"
                )
            size = HEADER_SIZE + length + CRC_SIZE
            if len(buf) < size:
                # A complete, valid frame inside the bytes this header claims proves its
                # length field wrong: resynchronise there instead of waiting for them all.
                embedded = self._embedded_frame(len(buf))
                if embedded > 0:
                    if self._quiet:
                        self._discard(1)  # a false magic inside bytes already reported
                        continue
                    return self._bad_length(embedded, "bridge frame length runs into a frame")
                return self._need_data()
            frame = bytes(buf[:size])
            end = HEADER_SIZE + length
            if zlib.crc32(frame[:end]) != int.from_bytes(frame[end:], "big"):
                if self._quiet:
                    # A false magic inside a frame already reported (in its CRC, say): those
                    # bytes are not a second frame to refuse, and the sequence this header
                    # names is not one the bridge sent.
                    self._discard(1)
                    continue
                embedded = self._embedded_frame(size)
                if embedded > 0:
                    # The same report whether or not the rest had arrived (any chunking).
                    return self._bad_length(embedded, "bridge frame length runs into a frame")
                # Rescan from the next byte so that a good frame hidden behind a corrupted
                # length still comes out; the rest of this frame is not reported again.
                self._quiet = size
                self._discard(1)
                return ChecksumError("bridge frame CRC-32 mismatch", raw=frame, reply=Reply.NAK)
            del buf[:size]
            self._quiet = 0
            self._probe_reset()
            try:
                envelope = decode_frame(frame)
            except RemoteProtocolError as exc:
                return exc
            return self._accept(envelope)

    def _discard(self, count: int) -> None:
        """Move ``count`` leading bytes of the buffer to the garbage report."""
        quiet = min(count, self._quiet)
        self._quiet -= quiet
        self._garbage += self._buffer[quiet:count]
        del self._buffer[:count]
        self._probe_reset()

    def _bad_length(self, count: int, why: str) -> BridgeEvent:
        """Refuse the header at the start of the buffer (its ``count`` first bytes are the
        report) and rescan from the next byte. A header that looks like ours (version, type)
        is answered NAK(bad_crc): the frame could not be checked, so the bridge sends it again;
        a false magic in garbage is not answered."""
        buf = self._buffer
        plausible = buf[2] == VERSION and buf[3] in _MESSAGE_TYPES
        raw = bytes(buf[:count])
        self._quiet = max(self._quiet, count)
        self._discard(1)
        return LengthError(why, raw=raw, reply=Reply.NAK if plausible else Reply.NONE)

    def _probe_reset(self) -> None:
        self._probe_from = 1
        self._probe_starts.clear()

    def _embedded_frame(self, limit: int) -> int:
        """Where the first complete, CRC-valid frame after byte 0 that ends by ``limit`` starts,
        or -1. Incremental while the head frame waits for its bytes: each magic is found once
        and its CRC computed once, when its frame is complete, so a trickling stream costs
        linear time."""
        buf = self._buffer
        while (at := buf.find(MAGIC, self._probe_from, limit)) >= 0:
            self._probe_starts.append(at)
            self._probe_from = at + 1
        # A magic may straddle ``limit``: look at its last byte again next time.
        self._probe_from = max(self._probe_from, limit - 1)
        waiting: list[int] = []
        for at in self._probe_starts:
            if at + HEADER_SIZE > limit:
                waiting.append(at)
                continue
            length = int.from_bytes(buf[at + 4 : at + 6], "big")
            end = at + HEADER_SIZE + length
            if length > self.max_body:
                continue
            if end + CRC_SIZE > limit:
                waiting.append(at)
                continue
            if zlib.crc32(buf[at:end]) == int.from_bytes(buf[end : end + CRC_SIZE], "big"):
                return at  # the caller refuses the head, which resets the probe
        self._probe_starts[:] = waiting
        return -1

    def _report_garbage(self) -> FramingError:
        # Report at most MAX_GARBAGE_REPORT bytes at a time, so that the reports do not
        # depend on how the stream was chunked.
        raw = bytes(self._garbage[:MAX_GARBAGE_REPORT])
        del self._garbage[:MAX_GARBAGE_REPORT]
        return FramingError(f"{len(raw)} bytes that are not a bridge frame", raw=raw)

    def _step(self, step: BridgeStep) -> None:
        self.state = TRANSITIONS.get((self.role, self.state, step), self.state)

    def _need_data(self) -> BridgeEvent:
        if not self._eof:
            return NEED_DATA
        if self._buffer or self._garbage:
            raw = bytes(self._garbage + self._buffer)
            self._garbage.clear()
            self._buffer.clear()
            self._probe_reset()
            return FramingError(f"connection closed inside a frame ({len(raw)} bytes)", raw=raw)
        self._step(BridgeStep.EOF)
        return NEED_DATA

    def _accept(self, envelope: Envelope) -> BridgeEvent:
        body = envelope.body
        if type(body) in _SENT_BY[self.role]:
            return MalformedFrameError(
                f"{envelope.type.name} cannot be sent to a {self.role}",
                raw=envelope.raw,
                reason="wrong_direction",
            )
        if self.role == "bridge":
            return self._accept_at_bridge(envelope)
        if isinstance(body, Hello):
            if self.state is BridgeState.OPEN and envelope.bridge_id != self.bridge_id:
                return self._unknown_bridge(envelope)
            self._step(BridgeStep.HELLO)
            self.hello = body
            self.bridge_id = envelope.bridge_id
            self._hello_sequence = envelope.sequence
            return envelope
        if self.state is not BridgeState.OPEN:
            return NotAuthenticatedError(f"{envelope.type.name} before HELLO", raw=envelope.raw)
        if envelope.bridge_id != self.bridge_id:
            return self._unknown_bridge(envelope)
        assert self.hello is not None
        if isinstance(body, Event) and body.channel > self.hello.channels:
            return PayloadError(
                f"channel {body.channel} on a {self.hello.channels}-channel bridge",
                raw=envelope.raw,
                reply=Reply.NAK,
                reason=NakReason.BAD_CHANNEL.reason,
            )
        return envelope

    def _unknown_bridge(self, envelope: Envelope) -> NotAuthenticatedError:
        return NotAuthenticatedError(
            f"bridge {envelope.bridge_mac} on a connection authenticated as "
            f"{(self.bridge_id or b'').hex(':').upper()}",
            raw=envelope.raw,
            reason=NakReason.UNKNOWN_BRIDGE.reason,
        )

    def _accept_at_bridge(self, envelope: Envelope) -> BridgeEvent:
        if envelope.bridge_id != self.bridge_id:
            return MalformedFrameError(
                f"reply addressed to bridge {envelope.bridge_mac}",
                raw=envelope.raw,
                reason=NakReason.UNKNOWN_BRIDGE.reason,
            )
        step = self._answer_to_hello(envelope.body)
        if step is not None:
            self._step(step)
        return envelope

    # ---- sending ------------------------------------------------------------------------

    def envelope(
        self, body: BridgeMessage, *, now: datetime | None, bridge_id: bytes | None = None
    ) -> Envelope:
        """Wrap ``body`` with this side's next sequence number (1..2**32-1, then 1 again)."""
        sequence = self._next_sequence
        self._next_sequence = sequence + 1 if sequence < SEQUENCE_MAX else 1
        target = bridge_id if bridge_id is not None else self.bridge_id
        if target is None:
            raise LocalProtocolError("no bridge id yet: pass bridge_id")
        return Envelope(bridge_id=target, sequence=sequence, device_time=now, body=body)

    def send(self, envelope: Envelope) -> bytes:
        """The bytes for ``envelope``; checks that this role may send it now."""
        body = envelope.body
        if type(body) not in _SENT_BY[self.role]:
            raise LocalProtocolError(f"a {self.role} does not send {envelope.type.name}")
        if self.state is BridgeState.CLOSED:
            raise LocalProtocolError("connection is closed")
        if self.role == "bridge":
            if envelope.bridge_id != self.bridge_id:
                raise LocalProtocolError("a bridge sends under its own bridge id only")
            if isinstance(body, Hello):
                self._step(BridgeStep.HELLO)
                self._hello_sequence = envelope.sequence
                self.hello = body
            elif self.state is BridgeState.AWAIT_HELLO:
                raise LocalProtocolError("a bridge sends HELLO first")
        elif (step := self._answer_to_hello(body)) is not None:
            self._step(step)
        data = encode_frame(envelope)
        if len(data) - HEADER_SIZE - CRC_SIZE > self.max_body:
            raise LocalProtocolError(f"body longer than max_body={self.max_body}")
        return data

    def _answer_to_hello(self, body: BridgeMessage) -> BridgeStep | None:
        """HELLO_ACCEPTED or HELLO_REFUSED when ``body`` answers the pending HELLO."""
        if isinstance(body, Ack) and body.acked_sequence == self._hello_sequence:
            return BridgeStep.HELLO_ACCEPTED
        if isinstance(body, Nak) and body.nacked_sequence == self._hello_sequence:
            return BridgeStep.HELLO_REFUSED
        return None

    def ack(self, received: Envelope, *, now: datetime | None) -> bytes:
        """Receiver: the ACK frame for a received message (after it is stored)."""
        reply = self.envelope(Ack(received.sequence), now=now, bridge_id=received.bridge_id)
        return self.send(reply)

    def nak(self, received: Envelope, reason: NakReason, *, now: datetime | None) -> bytes:
        """Receiver: the NAK frame refusing a received message."""
        reply = self.envelope(Nak(received.sequence, reason), now=now, bridge_id=received.bridge_id)
        return self.send(reply)

    def reply_to(self, error: RemoteProtocolError, *, now: datetime | None) -> bytes | None:
        """Receiver: the NAK frame for an error event, or None when no reply is due.

        A NAK goes back only when the frame's header can be read (magic and full header in
        ``raw``), addressed to the bridge id and sequence in that header; the bridge ignores a
        NAK that matches nothing it sent, so a NAK built from a corrupted header is harmless.
        """
        if self.role != "receiver" or error.reply is Reply.NONE:
            return None
        raw = error.raw
        if len(raw) < HEADER_SIZE or raw[:2] != MAGIC:
            return None
        bridge_id = bytes(raw[6:12])
        sequence = int.from_bytes(raw[12:16], "big")
        try:
            reason = NakReason[error.reason.upper()]
        except KeyError:
            # A header whose length cannot be right: the frame could not be checked.
            reason = NakReason.BAD_CRC if isinstance(error, LengthError) else NakReason.MALFORMED
        reply = self.envelope(Nak(sequence, reason), now=now, bridge_id=bridge_id)
        return encode_frame(reply)
