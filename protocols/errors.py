"""The project's one error tree.

Every concrete error also subclasses a builtin (``ValueError`` or ``LookupError``) so callers that
do not know the tree still catch it. A *remote* error means the peer sent something we cannot
accept; it carries the reply the protocol calls for (``reply``), a short machine-readable
``reason`` for counters and logs, and the raw bytes, so a connection driver never decides a
protocol reply itself (h11's ``error_status_hint``).
"""

from __future__ import annotations

import enum


class Reply(enum.Enum):
    """What the receiver answers to a frame."""

    ACK = "ACK"
    NAK = "NAK"
    DUH = "DUH"
    NONE = "NONE"


class ReceiverError(Exception):
    """Root of every error this project raises on purpose."""


class LocalProtocolError(ReceiverError, ValueError):
    """We were asked to build something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ReceiverError, ValueError):
    """The peer sent something we cannot accept; ``reply`` says what to answer."""

    default_reply: Reply = Reply.NONE
    default_reason: str = "malformed"

    def __init__(
        self,
        message: str,
        *,
        raw: bytes = b"",
        reply: Reply | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.raw = raw
        self.reply = reply if reply is not None else self.default_reply
        self.reason = reason if reason is not None else self.default_reason


class FramingError(RemoteProtocolError):
    """The byte stream does not hold a frame: garbage, oversized, truncated."""

    default_reason = "framing"


class ChecksumError(RemoteProtocolError):
    """CRC or checksum mismatch. No reply by default: the sender retries."""

    default_reason = "bad_crc"


class LengthError(RemoteProtocolError):
    """The length field disagrees with the frame and cannot be tolerated."""

    default_reason = "bad_length"


class MalformedFrameError(RemoteProtocolError):
    """The frame's header or body does not follow the grammar."""

    default_reason = "malformed"


class UnsupportedError(RemoteProtocolError):
    """A correctly received message the receiver cannot process (DC-09: DUH)."""

    default_reply = Reply.DUH
    default_reason = "unsupported"


class DecryptionError(RemoteProtocolError):
    """Ciphertext that does not decrypt to a valid message: wrong key or garbage (NAK)."""

    default_reply = Reply.NAK
    default_reason = "wrong_key"


class StaleTimestampError(RemoteProtocolError):
    """Timestamp outside the accepted window (NAK carrying the receiver's time)."""

    default_reply = Reply.NAK
    default_reason = "stale"


class PayloadError(RemoteProtocolError):
    """The event payload (Contact ID, SIA DC-03, bridge body) cannot be parsed."""

    default_reply = Reply.DUH
    default_reason = "bad_payload"


class RegistryError(ReceiverError):
    """A registry operation was refused."""


class NotFoundError(RegistryError, LookupError):
    """A station, line, dealer, site, account or bridge does not exist."""


class CollisionError(RegistryError, ValueError):
    """An account number or zone number is already held; ``holder`` names who holds it."""

    def __init__(self, message: str, *, holder: str = "") -> None:
        super().__init__(message)
        self.holder = holder


class InvalidInputError(ReceiverError, ValueError):
    """A value given by a person (CLI, config, CSV) is not acceptable."""


class StartupError(ReceiverError, RuntimeError):
    """The receiver (or a command) cannot start: a port in use, an address that cannot be
    bound, a store that cannot be opened or that another receiver holds. The message is one
    line naming what and where; the CLI prints it and exits 1."""


class UnknownAccountError(RemoteProtocolError):
    """A good frame from an account the registry does not know, refused by policy.

    The reply is the station's choice (DUH or NAK); accepting such frames is not an error.
    """

    default_reply = Reply.DUH
    default_reason = "unknown_account"


class PlaintextRefusedError(RemoteProtocolError):
    """A plaintext frame for an account that has a key: it must be encrypted (DUH)."""

    default_reply = Reply.DUH
    default_reason = "plaintext_refused"
