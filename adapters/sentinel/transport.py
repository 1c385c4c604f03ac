"""The Sentinel TCP exchange, sans-IO: framing and messages shared by the client and the sink.

Rules:
- Every message is ``STX body ETX`` (0x02, 0x03). XML 1.0 cannot contain either byte, so a
  package never needs escaping and a frame boundary is never ambiguous.
- A body starting with ``<`` is a package (one XML document); any other body is an ASCII
  control message: ``AUTH <passkey>``, ``AUTHOK``, ``AUTHNAK <reason>``, ``ACK <package-id>``,
  ``NAK <package-id> <reason>``, ``HB``.
- The client opens with ``AUTH``; the far side answers ``AUTHOK`` or ``AUTHNAK`` and closes.
  Each package is answered by ``ACK``/``NAK`` naming its package id; the client sends ``HB`` when
  idle and the far side answers ``HB``. The far side never speaks unasked.
- Whitespace between frames is ignored (a person with telnet); other bytes outside a frame, a
  frame cut by a new STX, or a frame over ``max_frame`` bytes give a :class:`FramingError` event
  and the reader carries on with the next frame. Valid streams read the same however they are
  chunked; how many errors a stretch of garbage gives may depend on the chunking.
"""

from __future__ import annotations

import re
from typing import Final

from attrs import field, frozen, validators

from protocols.errors import FramingError, LocalProtocolError, MalformedFrameError, Reply
from protocols.stream import NEED_DATA as NEED_DATA  # noqa: PLC0414 - re-exported
from protocols.stream import NeedData as NeedData  # noqa: PLC0414 - re-exported

STX: Final = b"\x02"
ETX: Final = b"\x03"
MAX_FRAME: Final = 64 * 1024

_PASSKEY = re.compile(r"^[!-~]{0,128}$")
_REASON = re.compile(r"^[ -~]{0,200}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_BLANK = b" \t\r\n"


@frozen
class Auth:
    """Client → far side, first thing on a connection."""

    passkey: str = field(validator=validators.matches_re(_PASSKEY))


@frozen
class AuthAccepted:
    """Far side → client: the passkey is good."""


@frozen
class AuthRefused:
    """Far side → client: the passkey is refused; the far side closes the connection."""

    reason: str = field(validator=validators.matches_re(_REASON))


@frozen
class PackageFrame:
    """Client → far side: one XML package."""

    xml: bytes = field()

    @xml.validator
    def _check(self, _: object, value: bytes) -> None:
        if not value.startswith(b"<") or STX in value or ETX in value:
            raise ValueError("a package must start with '<' and hold no STX or ETX")


@frozen
class Ack:
    """Far side → client: the package with this id is stored."""

    package_id: str = field(validator=validators.matches_re(_ID))


@frozen
class Nak:
    """Far side → client: the package with this id is refused; the client will resend it."""

    package_id: str = field(validator=validators.matches_re(_ID))
    reason: str = field(validator=validators.matches_re(_REASON))

    @classmethod
    def because(cls, package_id: str, reason: str) -> Nak:
        """A NAK whose reason is cut to printable ASCII (error messages may quote anything)."""
        text = "".join(c if " " <= c <= "~" else "?" for c in reason)[:200]
        return cls(package_id, text)


@frozen
class Heartbeat:
    """Client → far side when idle, and the far side's answer."""


Message = Auth | AuthAccepted | AuthRefused | PackageFrame | Ack | Nak | Heartbeat


def encode(message: Message) -> bytes:
    """The frame for one message."""
    match message:
        case PackageFrame(xml=xml):
            body = xml
        case Auth(passkey=passkey):
            body = f"AUTH {passkey}".encode("ascii")
        case AuthAccepted():
            body = b"AUTHOK"
        case AuthRefused(reason=reason):
            body = f"AUTHNAK {reason}".encode("ascii")
        case Ack(package_id=package_id):
            body = f"ACK {package_id}".encode("ascii")
        case Nak(package_id=package_id, reason=reason):
            body = f"NAK {package_id} {reason}".encode("ascii")
        case Heartbeat():
            body = b"HB"
        case _:
            raise LocalProtocolError(f"not a Sentinel transport message: {message!r}")
    return STX + body + ETX


def decode_body(body: bytes) -> Message:
    """One frame's body to a message; :class:`MalformedFrameError` when it is none."""
    if body.startswith(b"<"):
        return PackageFrame(body)
    try:
        text = body.decode("ascii")
        verb, _, rest = text.partition(" ")
        if verb == "AUTH":
            return Auth(rest)
        if verb == "AUTHOK" and not rest:
            return AuthAccepted()
        if verb == "AUTHNAK":
            return AuthRefused(rest)
        if verb == "ACK":
            return Ack(rest)
        if verb == "NAK":
            package_id, _, reason = rest.partition(" ")
            return Nak(package_id, reason)
        if verb == "HB" and not rest:
            return Heartbeat()
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise MalformedFrameError(f"bad control message: {exc}", raw=body, reply=Reply.NAK) from exc
    raise MalformedFrameError("unknown control message", raw=body, reply=Reply.NAK)


class FrameReader:
    """Bytes in, messages (or one error per bad stretch of bytes) out."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> Message | FramingError | MalformedFrameError | NeedData:
        buf = self._buffer
        start = buf.find(STX)
        if start < 0:
            # No frame begun: whitespace is dropped, anything else is reported at once (an
            # HTTP client on the wrong port is told off now, not after 64 KiB).
            raw = bytes(buf)
            buf.clear()
            if raw.strip(_BLANK):
                return FramingError("bytes outside a frame", raw=raw[:256])
            return NEED_DATA
        if start > 0:
            junk = bytes(buf[:start])
            del buf[:start]
            if junk.strip(_BLANK):
                return FramingError("bytes outside a frame", raw=junk[:256])
        end = buf.find(ETX, 1)
        cut = buf.find(STX, 1)
        if cut >= 0 and (end < 0 or cut < end):
            raw = bytes(buf[:cut])
            del buf[:cut]
            return FramingError("frame cut short by a new STX", raw=raw[:256])
        if end < 0:
            if len(buf) > self._max + 1:
                raw = bytes(buf)
                buf.clear()
                return FramingError(
                    f"frame longer than {self._max} bytes", raw=raw[:256], reason="oversized"
                )
            return NEED_DATA
        body = bytes(buf[1:end])
        del buf[: end + 1]
        if len(body) > self._max:
            return FramingError(
                f"frame longer than {self._max} bytes", raw=body[:256], reason="oversized"
            )
        try:
            return decode_body(body)
        except MalformedFrameError as exc:
            return exc
