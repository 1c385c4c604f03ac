"""Sur-Gard "SG" automation output: the receiver-to-automation format (reference §4), sans-IO.

Rules:
- Every message is ASCII and ends in DC4 (0x14). The automation answers each one, heartbeats
  included, with a single byte: ACK 0x06, or NAK 0x15 to ask for a resend.
- The header after the protocol id is the receiver number (2 digits) and the line number
  (``header_digits - 2`` digits): ``RRLLL`` by default, ``RRL`` on older MLR2 units.
- Contact ID is protocol ``5`` (``5RRLLL 18AAAAQXYZGGCCC``) when the account fits in 4 digits and
  ``Q`` (``QRRLLL 58`` + 10-digit account) up to 10; SIA DC-03 is protocol ``S``
  (``SRRLLL[#ACCT|N...]``); the heartbeat is ``1`` + header + 11 spaces + ``@`` + 4 spaces.
- There is no checksum and no message id: delivery is at-least-once, a resend is a repeat.
- The reader is for the automation side (our sink): bytes in, messages out. Other protocol ids
  (``0`` status, ``1`` basic, ``3``) are passed through as :class:`OtherMessage`, never dropped.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from attrs import field, frozen, validators

from protocols.errors import FramingError, LocalProtocolError, MalformedFrameError, Reply
from protocols.signal import ContactIdView, SiaView
from protocols.stream import NEED_DATA as NEED_DATA  # noqa: PLC0414 - re-exported
from protocols.stream import NeedData as NeedData  # noqa: PLC0414 - re-exported

DC4: Final = b"\x14"
ACK: Final = b"\x06"
NAK: Final = b"\x15"
# The SG document allows about 66 data bytes in an S block; 256 leaves room for any header.
MAX_MESSAGE: Final = 256

_CID_ACCOUNT = re.compile(r"^[0-9B-F]{1,10}$")
# An SIA account (DC-03: up to 16 hex characters; panels send letters too).
_SIA_ACCOUNT = re.compile(r"^[0-9A-Za-z]{1,16}$")
# Characters that would end the block or the message early.
_SIA_FORBIDDEN = re.compile(r"[\[\]|^\x00-\x1f\x7f-\U0010ffff]")
_HEADER = re.compile(r"^[0-9]{3,9}\Z")


def _header_digits(_: object, __: object, value: int) -> None:
    if not 3 <= value <= 9:
        raise ValueError(f"header_digits must be 3 to 9, got {value}")


@frozen
class Header:
    """Receiver and line numbers as they appear after the protocol id (``RRLLL``)."""

    receiver: int = field(validator=validators.and_(validators.ge(0), validators.le(99)))
    line: int = field(validator=validators.ge(0))
    digits: int = field(default=5, validator=_header_digits)

    def __attrs_post_init__(self) -> None:
        if self.line >= 10 ** (self.digits - 2):
            raise ValueError(f"line {self.line} does not fit in {self.digits - 2} digits")

    def encode(self) -> str:
        return f"{self.receiver:02d}{self.line:0{self.digits - 2}d}"

    @classmethod
    def parse(cls, text: str) -> Header:
        if not _HEADER.match(text):
            raise ValueError(f"header must be 3 to 9 digits, got {text!r}")
        return cls(int(text[:2]), int(text[2:]), len(text))


@frozen
class ContactIdMessage:
    """Contact ID (protocol ``5``, or ``Q`` with format ``58`` for accounts of 5 to 10 digits)."""

    header: Header
    account: str = field(validator=validators.matches_re(_CID_ACCOUNT))
    cid: ContactIdView

    def encode(self) -> bytes:
        c = self.cid
        event = f"{c.qualifier}{c.code}{c.group}{c.zone}"
        if len(self.account) <= 4:
            text = f"5{self.header.encode()} 18{self.account.zfill(4)}{event}"
        else:
            text = f"Q{self.header.encode()} 58{self.account.zfill(10)}{event}"
        return text.encode("ascii") + DC4


@frozen
class SiaMessage:
    """SIA DC-03 (protocol ``S``): ``SRRLLL[#ACCT|N<modifiers>/<code><address>]``."""

    header: Header
    account: str = field(validator=validators.matches_re(_SIA_ACCOUNT))
    block: str = field()

    @block.validator
    def _check_block(self, _: object, value: str) -> None:
        if not value or _SIA_FORBIDDEN.search(value):
            raise ValueError(f"SIA block must be non-empty printable ASCII without []|^: {value!r}")

    @classmethod
    def from_view(cls, header: Header, account: str, sia: SiaView) -> SiaMessage:
        """The block a DC-03 panel would send: ``N`` + modifiers + ``/`` + code and address.

        Free text is left out: it does not fit the 66-byte block reliably and the automation
        has the code, zone and partition.
        """
        parts = [f"{key}{value}" for key, value in sia.modifiers]
        parts.append(f"{sia.code}{sia.address}")
        try:
            return cls(header, account, "N" + "/".join(parts))
        except ValueError as exc:
            raise LocalProtocolError(f"SIA event cannot be sent as SG S: {exc}") from exc

    def encode(self) -> bytes:
        return f"S{self.header.encode()}[#{self.account}|{self.block}]".encode("ascii") + DC4


@frozen
class Heartbeat:
    """Supervision heartbeat: ``1`` + header + 11 spaces + ``@`` + 4 spaces.

    ``1RR000`` (System III/5) is a header whose line is 0; MLR2-DG's ``1011`` is ``RRL`` 01/1.
    """

    header: Header

    def encode(self) -> bytes:
        return f"1{self.header.encode()}{' ' * 11}@{' ' * 4}".encode("ascii") + DC4


@frozen
class OtherMessage:
    """A message of a protocol id this codec does not decode (status ``0``, basic ``1``...)."""

    text: str = field(validator=validators.matches_re(r"^[ -~]+$"))

    def encode(self) -> bytes:
        return self.text.encode("ascii") + DC4


SurGardMessage = ContactIdMessage | SiaMessage | Heartbeat | OtherMessage


_EVENT = r"([ERP])([0-9A-F]{3})([0-9A-F]{2})([0-9A-F]{3})\Z"
_CID4 = re.compile(r"^5([0-9]{3,9}) 18([0-9B-F]{4})" + _EVENT)
_CID10 = re.compile(r"^Q([0-9]{3,9}) 58([0-9B-F]{10})" + _EVENT)
_SIA = re.compile(r"^S([0-9]{3,9})\[#([0-9A-Za-z]{1,16})\|([^\[\]|^]+)\]\Z")
_HEARTBEAT = re.compile(r"^1([0-9]{3,9}) {11}@ {4}\Z")


def parse_message(raw: bytes) -> SurGardMessage:
    """Parse one message without its DC4. Raises :class:`MalformedFrameError` (reply NAK)."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedFrameError("SG message is not ASCII", raw=raw, reply=Reply.NAK) from None
    if not text or not text.isprintable():
        raise MalformedFrameError("SG message is empty or not printable", raw=raw, reply=Reply.NAK)
    try:
        if m := (_CID4.match(text) or _CID10.match(text)):
            header, account, q, code, group, zone = m.groups()
            return ContactIdMessage(
                Header.parse(header), account, ContactIdView(q, code, group, zone)
            )
        if m := _SIA.match(text):
            return SiaMessage(Header.parse(m[1]), m[2], m[3])
        if m := _HEARTBEAT.match(text):
            return Heartbeat(Header.parse(m[1]))
    except ValueError as exc:
        raise MalformedFrameError(f"SG message: {exc}", raw=raw, reply=Reply.NAK) from exc
    if text[0] in "5QS":
        # A protocol we decode, but not in its grammar: ask for a resend rather than guess.
        raise MalformedFrameError("SG message does not follow its layout", raw=raw, reply=Reply.NAK)
    return OtherMessage(text)


class MessageReader:
    """Automation side: splits a byte stream on DC4 and parses each message.

    ``next_event`` returns a message, a :class:`MalformedFrameError` / :class:`FramingError`
    for one bad message (the stream goes on after it), or ``NEED_DATA``.
    """

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._max = max_message

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> SurGardMessage | MalformedFrameError | FramingError | NeedData:
        end = self._buffer.find(DC4)
        if end < 0:
            if len(self._buffer) > self._max:
                raw = bytes(self._buffer)
                self._buffer.clear()
                return FramingError(
                    f"no DC4 within {self._max} bytes", raw=raw, reply=Reply.NAK, reason="oversized"
                )
            return NEED_DATA
        raw = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        if len(raw) > self._max:
            return FramingError(
                f"message longer than {self._max} bytes",
                raw=raw,
                reply=Reply.NAK,
                reason="oversized",
            )
        try:
            return parse_message(raw)
        except MalformedFrameError as exc:
            return exc


class Handshake(enum.Enum):
    """The automation's answer to one message."""

    ACK = "ack"
    NAK = "nak"


class HandshakeReader:
    """Receiver side: finds the first ACK or NAK byte in what the automation sent.

    Any other byte (a command, line noise, our own echo on ``loop://``) is skipped and counted;
    a stale answer must be discarded by the driver before it sends (flush the input).
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self.skipped = 0

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def next_event(self) -> Handshake | NeedData:
        for index, byte in enumerate(self._buffer):
            if byte in (0x06, 0x15):
                self.skipped += index
                del self._buffer[: index + 1]
                return Handshake.ACK if byte == 0x06 else Handshake.NAK
        self.skipped += len(self._buffer)
        self._buffer.clear()
        return NEED_DATA
