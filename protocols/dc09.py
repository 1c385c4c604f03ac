"""SIA DC-09 frames: split a stream, check, decrypt, decode; build ACK, NAK, DUH and panel frames.

Rules:
- Lenient when receiving, strict when sending. A frame whose CRC fails is never accepted. A good
  CRC with a wrong or decimal length is accepted and flagged; every tolerated deviation shows up
  in ``Dc09Frame.quirks`` so it can be counted and audited.
- Every rejection is a ``RemoteProtocolError`` subclass carrying the reply it calls for: bad CRC
  -> nothing; unknown token or unusable body -> DUH; no key, wrong key or stale timestamp -> NAK.
  A frame whose header cannot be read gets no reply (a DUH must echo the header).
- Replies echo the sequence, R, L and account exactly as received, in the CRC form received.
  NAK and DUH are never encrypted; an ACK to an encrypted frame is encrypted.
- Sans-IO: the clock (``now``) and the pad randomness (``rand``) are parameters.
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Literal, NamedTuple

import attrs
from attrs import frozen
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols.crc import crc16_arc, zeros_tables
from protocols.drafts import draft_of
from protocols.errors import (
    ChecksumError,
    DecryptionError,
    FramingError,
    InvalidInputError,
    LocalProtocolError,
    MalformedFrameError,
    PayloadError,
    RemoteProtocolError,
    Reply,
    StaleTimestampError,
    UnsupportedError,
)
from protocols.stream import NEED_DATA, NeedData

__all__ = [
    "EVENT_TOKENS",
    "NEED_DATA",
    "Dc09Frame",
    "Dc09Header",
    "Dc09Reply",
    "Envelope",
    "FrameIntegrity",
    "FrameSplitter",
    "TimestampWindow",
    "ack",
    "decode_common",
    "decode_frame",
    "decode_reply",
    "duh",
    "encode_frame",
    "format_timestamp",
    "integrity",
    "nak",
    "parse_key",
    "plain_ack",
    "read_envelope",
    "read_header",
    "reply_for_error",
]

LF: Final = 0x0A
CR: Final = 0x0D
NULL_TOKEN: Final = "NULL"  # noqa: S105 - the supervision token, not a secret
EVENT_TOKENS: Final = frozenset({"SIA-DCS", "ADM-CID", NULL_TOKEN})
REPLY_TOKENS: Final = {"ACK": Reply.ACK, "NAK": Reply.NAK, "DUH": Reply.DUH}
_HEX_DIGITS: Final = frozenset("0123456789ABCDEFabcdef")
_ADDRESS_CHARS: Final = frozenset("0123456789ABCDEFabcdef")
_ACCOUNT_CHARS: Final = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# Pad bytes we send: printable, never '|', '[' or ']' (the standard forbids those three).
_PAD_ALPHABET: Final = bytes(b for b in range(0x21, 0x7F) if b not in b"|[]")
_PAD_TRANSLATION: Final = bytes(
    b if b in _PAD_ALPHABET else _PAD_ALPHABET[b % len(_PAD_ALPHABET)] for b in range(256)
)
_TS_LEN: Final = 19  # HH:MM:SS,MM-DD-YYYY


@frozen
class TimestampWindow:
    """How far a frame's timestamp may stray from the receiver clock (seconds)."""

    past: float = attrs.field(default=40.0, validator=attrs.validators.ge(0))
    future: float = attrs.field(default=20.0, validator=attrs.validators.ge(0))
    policy: Literal["reject", "flag"] = attrs.field(
        default="reject", validator=attrs.validators.in_(("reject", "flag"))
    )
    check_plain: bool = False


# Header and Frame are built once per frame on the hot path: no validators here (measured: they
# double the cost); the parser is what guarantees their invariants. No weakref slot: the common
# frame's are filled as drafts (``protocols.drafts``).
@frozen(weakref_slot=False)
class Dc09Header:
    """What can be read from a frame without its key: enough to look up the account and reply."""

    token: str
    encrypted: bool
    sequence: str
    receiver: str | None
    line: str | None
    account: str
    crc_form: Literal["hex", "binary"]


@frozen(weakref_slot=False)
class Dc09Frame:
    """A checked, decrypted DC-09 frame. ``data`` is the data block content, pad removed."""

    header: Dc09Header
    data: str
    extended: tuple[tuple[str, str], ...]
    timestamp: datetime | None
    quirks: frozenset[str]
    raw: bytes

    @property
    def token(self) -> str:
        return self.header.token

    @property
    def encrypted(self) -> bool:
        return self.header.encrypted

    @property
    def sequence(self) -> str:
        return self.header.sequence

    @property
    def account(self) -> str:
        return self.header.account


# The common frame's header and frame are filled as drafts (plain classes with their slots, see
# ``protocols.drafts``). The property test of ``decode_common`` holds the result equal to what
# the constructors build.
_new = object.__new__
_HeaderDraft = draft_of(Dc09Header)
_FrameDraft = draft_of(Dc09Frame)


@frozen
class Dc09Reply:
    """A receiver's answer as a panel reads it."""

    kind: Reply
    sequence: str
    receiver: str | None
    line: str | None
    account: str | None  # None for the standard NAK's literal "A0"
    timestamp: datetime | None
    encrypted: bool
    raw: bytes


@frozen
class FrameIntegrity:
    """CRC and length as written in a frame and as computed, whether or not they match."""

    crc_form: Literal["hex", "binary"]
    crc_frame: str
    crc_computed: str
    length_frame: str
    length_computed: str

    @property
    def crc_ok(self) -> bool:
        return self.crc_frame.upper() == self.crc_computed

    @property
    def length_ok(self) -> bool:
        return self.length_frame.upper() == self.length_computed


# -- framing ------------------------------------------------------------------------------------


class FrameSplitter:
    """Split a TCP byte stream into raw frames (LF ... CR), h11 style.

    ``next_event`` returns one complete frame, a ``FramingError`` for bytes it discarded (its
    ``raw`` holds them), or ``NEED_DATA``. Garbage is dropped up to the next LF, so a good frame
    sharing a read with garbage or with a broken frame still comes out. Inside a frame every
    byte after the header is ASCII, so the end is the first CR after the header; an LF found
    before that CR means the frame was cut short. NULs trailing a frame are dropped silently.
    """

    def __init__(self, max_frame: int = 4096) -> None:
        if max_frame < 16:
            raise LocalProtocolError(f"max_frame {max_frame} is too small for any frame")
        self.max_frame = max_frame
        self._buffer = bytearray()
        self._after_frame = False

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    @property
    def pending_bytes(self) -> int:
        """Bytes held that do not yet make a frame (a driver times out a slow frame on it)."""
        return len(self._buffer)

    def next_event(self) -> bytes | FramingError | NeedData:
        buf = self._buffer
        if self._after_frame:
            if not buf:
                return NEED_DATA
            if buf[0] == 0:  # only then copy the buffer to count its leading NULs
                del buf[: len(buf) - len(buf.lstrip(b"\x00"))]
                if not buf:
                    return NEED_DATA
            self._after_frame = False
        if not buf:
            return NEED_DATA
        if buf[0] != LF:
            return self._discard(buf.find(b"\n"), "garbage before a frame")
        if len(buf) < 10:
            return NEED_DATA
        # The CRC and length fields are ASCII, except the two raw bytes of a binary CRC; an LF
        # among them means a frame starts there (an LF and one byte before a binary-CRC frame
        # put its '"' where a hex header has it). '"' follows 4 hex CRC digits and 4 length
        # digits, or 2 raw CRC bytes and 4 length digits.
        if buf[9] == 0x22 and buf.find(b"\n", 1, 9) < 0:
            body_start = 10
        elif buf[7] == 0x22 and buf.find(b"\n", 3, 7) < 0:
            body_start = 8
        else:
            return self._discard(buf.find(b"\n", 1), "not a DC-09 header")
        limit = min(len(buf), self.max_frame)
        cr = buf.find(b"\r", body_start, limit)
        lf = buf.find(b"\n", body_start, limit if cr < 0 else cr)
        if lf >= 0:
            return self._discard(lf, "frame cut short by a new LF")
        if cr < 0:
            if len(buf) >= self.max_frame:
                return self._discard(
                    buf.find(b"\n", self.max_frame), f"frame longer than {self.max_frame} bytes"
                )
            return NEED_DATA
        frame = bytes(buf[: cr + 1])
        del buf[: cr + 1]
        self._after_frame = True
        return frame

    def _discard(self, upto: int, why: str) -> FramingError:
        buf = self._buffer
        end = len(buf) if upto < 0 else upto
        raw = bytes(buf[:end])
        del buf[:end]
        reason = "oversized" if why.startswith("frame longer") else "framing"
        return FramingError(f"{why}: {len(raw)} bytes discarded", raw=raw, reason=reason)


# -- reading a frame ----------------------------------------------------------------------------


class _Envelope(NamedTuple):
    """A frame stripped of LF/CR/NULs with its CRC checked and its header read."""

    header: Dc09Header
    span: str
    bracket: int  # index in span of the '[' opening the data block
    quirks: list[str]


def _unwrap(raw: bytes) -> tuple[bytes, Literal["hex", "binary"], list[str]]:
    """Return (frame without LF/CR/trailing NULs, CRC form, quirks)."""
    quirks: list[str] = []
    frame = raw
    if frame[-1:] == b"\x00":
        frame = frame.rstrip(b"\x00")
        quirks.append("trailing_nul")
    if frame[-1:] == b"\r":
        frame = frame[:-1]
    if frame[:1] == b"\n":
        if frame[9:10] == b'"':
            return frame[1:], "hex", quirks
        if frame[7:8] == b'"':
            quirks.append("binary_crc")
            return frame[1:], "binary", quirks
    if frame[8:9] == b'"':
        return frame, "hex", quirks
    if frame[6:7] == b'"':
        quirks.append("binary_crc")
        return frame, "binary", quirks
    raise MalformedFrameError(
        "not a DC-09 frame: no quoted token after the CRC and length fields", raw=raw
    )


def _fields(raw: bytes) -> tuple[bytes, Literal["hex", "binary"], str, int, str, list[str]]:
    """(span, form, crc as written, crc computed, length as written, quirks)."""
    if raw[:1] == b"\n" and raw[-1:] == b"\r" and raw[9:10] == b'"':
        # The frame as the splitter hands it (LF, hex CRC, CR): what _unwrap would find.
        span = raw[9:-1]
        return (
            span,
            "hex",
            raw[1:5].decode("latin-1"),
            crc16_arc(span),
            raw[5:9].decode("latin-1"),
            [],
        )
    frame, form, quirks = _unwrap(raw)
    if form == "hex":
        crc_text = frame[:4].decode("latin-1")
        length_text = frame[4:8].decode("latin-1")
        span = frame[8:]
    else:
        crc_text = frame[:2].hex().upper()
        length_text = frame[2:6].decode("latin-1")
        span = frame[6:]
    return span, form, crc_text, crc16_arc(span), length_text, quirks


def integrity(raw: bytes) -> FrameIntegrity:
    """CRC and length of a frame as written and as computed, without judging them."""
    span, form, crc_text, crc, length_text, _ = _fields(raw)
    return FrameIntegrity(form, crc_text, f"{crc:04X}", length_text, f"{len(span):04X}")


def _envelope(raw: bytes) -> _Envelope:
    span_bytes, form, crc_text, crc, length_text, quirks = _fields(raw)
    if form == "hex":
        if len(crc_text) != 4 or not _HEX_DIGITS.issuperset(crc_text):
            raise MalformedFrameError(f"CRC field {crc_text!r} is not 4 hex digits", raw=raw)
        if int(crc_text, 16) != crc:
            raise ChecksumError(f"crc mismatch: frame says {crc_text}, computed {crc:04X}", raw=raw)
        if not crc_text.isupper() and not crc_text.isdigit():
            quirks.append("lowercase_hex")
    elif int(crc_text, 16) != crc:
        raise ChecksumError(
            f"crc mismatch: frame says {crc_text} (binary), computed {crc:04X}", raw=raw
        )
    size = len(span_bytes)
    if not (_HEX_DIGITS.issuperset(length_text) and int(length_text, 16) == size):
        if length_text.isascii() and length_text.isdigit() and int(length_text) == size:
            quirks.append("decimal_length")
        else:
            quirks.append("length_mismatch")
    span = span_bytes.decode("latin-1")
    header, bracket = _read_address(span, raw, quirks, form)
    return _Envelope(header, span, bracket, quirks)


def _read_address(
    span: str,
    raw: bytes,
    quirks: list[str],
    form: Literal["hex", "binary"],
    *,
    reply: bool = False,
) -> tuple[Dc09Header, int]:
    """Parse ``"<token>"<seq>[R..]L..#acct`` up to the '[' of the data block.

    With ``reply`` the standard NAK's literal ``A0`` stands for the account (read as "").
    """
    close = span.find('"', 1)
    if close < 0:
        raise MalformedFrameError("token not closed by '\"'", raw=raw)
    token = span[1:close]
    encrypted = token[:1] == "*"
    if encrypted:
        token = token[1:]
    if not token:
        raise MalformedFrameError("empty token", raw=raw)
    sequence = span[close + 1 : close + 5]
    if len(sequence) != 4 or not (sequence.isascii() and sequence.isdigit()):
        raise MalformedFrameError(f"sequence {sequence!r} is not 4 decimal digits", raw=raw)
    bracket = span.find("[", close + 5)
    if bracket < 0:
        raise MalformedFrameError("no data block '['", raw=raw)
    address = span[close + 5 : bracket]
    hash_at = address.find("#")
    if hash_at < 0 and reply and address.endswith("A0"):
        receiver, line = _receiver_and_line(address[:-2], raw)
        return Dc09Header(token, encrypted, sequence, receiver, line, "", form), bracket
    if hash_at < 0:
        raise MalformedFrameError(f"no '#account' in {address!r}", raw=raw)
    account = address[hash_at + 1 :]
    receiver, line = _receiver_and_line(address[:hash_at], raw)
    if line is None:
        quirks.append("no_line")
    elif not line:
        quirks.append("empty_line")
    if not 1 <= len(account) <= 16 or not _ACCOUNT_CHARS.issuperset(account):
        raise MalformedFrameError(f"account {account!r} is not 1-16 letters or digits", raw=raw)
    header = Dc09Header(token, encrypted, sequence, receiver, line, account, form)
    return header, bracket


def _receiver_and_line(prefix: str, raw: bytes) -> tuple[str | None, str | None]:
    receiver: str | None = None
    line: str | None = None
    rest = prefix
    if rest[:1] == "R":
        at = rest.find("L")
        receiver, rest = (rest[1:], "") if at < 0 else (rest[1:at], rest[at:])
        if not receiver:
            raise MalformedFrameError("empty receiver number after 'R'", raw=raw)
    if rest[:1] == "L":
        line, rest = rest[1:], ""
    if rest or (receiver and len(receiver) > 6) or (line and len(line) > 6):
        raise MalformedFrameError(f"bad receiver/line field {prefix!r}", raw=raw)
    for value in (receiver, line):
        if value and not _ADDRESS_CHARS.issuperset(value):
            raise MalformedFrameError(f"receiver/line {value!r} is not hex", raw=raw)
    return receiver, line


class _TailError(Exception):
    """The part after '[' does not follow ``data]`` ``[X..]...`` ``_timestamp``."""


def _parse_timestamp(text: str) -> datetime:
    if len(text) != _TS_LEN or text[2:9:3] != "::," or text[11:15:3] != "--" or not text.isascii():
        raise _TailError(f"timestamp {text!r} is not HH:MM:SS,MM-DD-YYYY")
    # Rearranged into ISO 8601, the C parser checks the digits and the calendar at once.
    iso = f"{text[15:19]}-{text[9:11]}-{text[12:14]}T{text[:8]}+00:00"
    try:
        return datetime.fromisoformat(iso)
    except ValueError:
        raise _TailError(f"timestamp {text!r} is not HH:MM:SS,MM-DD-YYYY") from None


def format_timestamp(when: datetime) -> str:
    """``HH:MM:SS,MM-DD-YYYY`` in UTC (a naive datetime is taken as UTC)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return (
        f"{when.hour:02d}:{when.minute:02d}:{when.second:02d},"
        f"{when.month:02d}-{when.day:02d}-{when.year:04d}"
    )


def _parse_tail(
    tail: str, quirks: list[str]
) -> tuple[str, tuple[tuple[str, str], ...], datetime | None]:
    """``data]`` then ``[X..]`` blocks then an optional ``_timestamp``."""
    end = tail.find("]")
    if end < 0:
        raise _TailError("data block not closed by ']'")
    data = tail[:end]
    if "[" in data:
        raise _TailError("'[' inside the data block")
    pos = end + 1
    size = len(tail)
    extended: list[tuple[str, str]] = []
    while pos < size and tail[pos] == "[":
        close = tail.find("]", pos)
        if close < 0:
            raise _TailError("extended data block not closed by ']'")
        block = tail[pos + 1 : close]
        if "[" in block:
            raise _TailError("'[' inside an extended data block")
        if block:
            extended.append((block[0], block[1:]))
        else:
            quirks.append("empty_xdata")
        pos = close + 1
    if pos == size:
        return data, tuple(extended), None
    if tail[pos] != "_":
        raise _TailError(f"unexpected {tail[pos : pos + 8]!r} after the data blocks")
    return data, tuple(extended), _parse_timestamp(tail[pos + 1 :])


class _BlockCiphers(threading.local):
    """AES contexts per key, per thread (a context is never shared across threads): the raw
    block encryptor and decryptor (ECB), and a CBC encryptor with its chaining value (the last
    ciphertext block it gave out)."""

    def __init__(self) -> None:
        self.by_key: dict[bytes, tuple[Any, Any, list[Any]]] = {}


_block_ciphers = _BlockCiphers()
_BLOCK_CIPHERS_MAX = 4096


def _aes_blocks(key: bytes) -> tuple[Any, Any, list[Any]]:
    """The key's raw block encryptor and decryptor (ECB, fed whole blocks only, so they hold no
    state between calls and serve every frame under the key), and its CBC chain: ``[update,
    chaining value]`` of one CBC encryptor kept across messages (``_cbc_encrypt``). Creating a
    CBC context per frame cost about as much as the rest of the decryption; accounts reuse
    their key."""
    if type(key) is not bytes:
        key = bytes(key)
    pair = _block_ciphers.by_key.get(key)
    if pair is None:
        if len(key) not in (16, 24, 32):
            raise LocalProtocolError(f"AES key must be 16, 24 or 32 bytes, got {len(key)}")
        cache = _block_ciphers.by_key
        if len(cache) >= _BLOCK_CIPHERS_MAX:
            cache.clear()
        cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305 - CBC below
        chain = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        pair = cache[key] = (cipher.encryptor(), cipher.decryptor(), [chain.update, 0])
    return pair


def _cbc_decrypt(key: bytes, ciphertext: bytes) -> bytes:
    """AES-CBC decryption with the zero IV (DC-09's): each block decrypted, then XORed with the
    ciphertext block before it (the IV before the first)."""
    size = len(ciphertext)
    if size % 16:
        raise LocalProtocolError(f"ciphertext of {size} bytes is not whole AES blocks")
    blocks = _aes_blocks(key)[1].update(ciphertext)
    chained = int.from_bytes(blocks, "big") ^ int.from_bytes(ciphertext[:-16], "big")
    return chained.to_bytes(size, "big")


def _cbc_encrypt(key: bytes, plain: bytes) -> bytes:
    """AES-CBC encryption with the zero IV: each block XORed with the ciphertext block before
    it, then encrypted."""
    if len(plain) % 16:
        raise LocalProtocolError(f"plaintext of {len(plain)} bytes is not whole AES blocks")
    if not plain:
        return b""
    # One CBC encryptor per key serves every message: it chains each message's first block to
    # the last block of the one before, so that block is XORed with that value first and the
    # message is encrypted as from the zero IV, in one call (a property test holds this equal
    # to a fresh CBC context per message).
    chain = _aes_blocks(key)[2]
    first = (int.from_bytes(plain[:16], "big") ^ chain[1]).to_bytes(16, "big")
    out: bytes = chain[0](first + plain[16:])
    chain[1] = int.from_bytes(out[-16:], "big")
    return out


def _decrypt_tail(
    env: _Envelope, key: bytes | None, raw: bytes, quirks: list[str]
) -> tuple[str, tuple[tuple[str, str], ...], datetime | None]:
    header = env.header
    if key is None:
        raise DecryptionError(
            f"encrypted frame from account {header.account} and no key for it",
            raw=raw,
            reason="no_key",
        )
    text = env.span[env.bracket + 1 :]
    if not text or len(text) % 32:
        raise DecryptionError(
            f"ciphertext of {len(text)} hex digits is not a whole number of AES blocks",
            raw=raw,
            reason="bad_ciphertext",
        )
    # bytes.fromhex skips whitespace: check every digit, or 30 digits and two spaces pass the
    # length check above and reach AES as 15 bytes.
    if not _HEX_DIGITS.issuperset(text):
        raise DecryptionError("ciphertext is not hex", raw=raw, reason="bad_ciphertext")
    ciphertext = bytes.fromhex(text)
    if not text.isupper() and not text.isdigit():
        quirks.append("lowercase_hex")
    plain = _cbc_decrypt(key, ciphertext).decode("latin-1")
    start = _data_start(plain, header, quirks, raw)
    body = plain[start:]
    if not (body.isascii() and body.isprintable()) and any(c < " " or c == "\x7f" for c in body):
        raise DecryptionError(
            "decrypted text is not printable: wrong key or corrupted frame", raw=raw
        )
    try:
        data, extended, timestamp = _parse_tail(body, quirks)
    except _TailError as exc:
        raise DecryptionError(
            f"decrypted text does not parse ({exc}): wrong key?", raw=raw
        ) from None
    if timestamp is None:
        if not body.isascii():
            # A wrong key's garbage with a '|' near its end and a ']' after it (one frame in
            # several thousand): what a panel encrypts is ASCII.
            raise DecryptionError("decrypted text is not ASCII: wrong key?", raw=raw)
        raise StaleTimestampError("encrypted frame without a timestamp", raw=raw, reason="no_time")
    return data, extended, timestamp


def _is_plausible_tail(tail: str) -> bool:
    """Printable ``]…_timestamp``: what a right key leaves after the data (encrypted frames
    always carry their time)."""
    if not (tail.isascii() and tail.isprintable()):
        return False
    try:
        return _parse_tail(tail, [])[2] is not None
    except _TailError:
        return False


def _data_start(plain: str, header: Dc09Header, quirks: list[str], raw: bytes) -> int:
    """Index in the plaintext where the data block content starts (after the pad and its '|')."""
    bar = plain.find("|")
    if bar < 0:
        # No '|' at all (seen in *NULL frames padded with 'p'): only an empty block fits.
        close = plain.find("]")
        if close < 0:
            raise DecryptionError("decrypted text has no ']': wrong key?", raw=raw)
        if not _is_plausible_tail(plain[close:]):
            # Garbage around a stray ']' is what a wrong key gives: NAK, not DUH.
            raise DecryptionError("decrypted text has no '|': wrong key?", raw=raw)
        quirks.append("no_pipe_after_pad")
        if header.token == NULL_TOKEN:
            return close
        raise PayloadError("encrypted data has no '|' after the pad", raw=raw)
    marker = f"#{header.account}|".upper()
    pad = plain[:bar].upper()
    standard = plain.upper().startswith(marker, bar + 1)  # 'pad|#acct|': what the rule says
    if pad.endswith(marker[:-1]) and not standard:
        # '#acct|' straight after a pad that has no '|' of its own.
        quirks.append("no_pipe_after_pad")
        return bar - len(marker) + 1
    if "]" in pad or "[" in pad:
        quirks.append("bracket_in_pad")
    at = plain.upper().find(marker, bar + 1)
    if at > bar + 1 and "]" not in plain[bar + 1 : at]:
        # A '|' inside the pad: the data block starts where it names its account.
        quirks.append("pipe_in_pad")
        return at
    return bar + 1


# The frame nearly every panel sends, as the splitter hands it: LF, upper-case hex CRC and
# length, a plaintext event token, R (optional) and L in upper-case hex, the account, a
# printable data block, no extended blocks, an optional timestamp, CR. Nothing in it is a
# quirk, so ``decode_common`` reads it in one match; anything else takes ``decode_frame``.
_COMMON = re.compile(
    r'\n([0-9A-F]{4})([0-9A-F]{4})"(SIA-DCS|ADM-CID|NULL)"([0-9]{4})(?:R([0-9A-F]{1,6}))?'
    r"L([0-9A-F]{1,6})#([0-9A-Za-z]{1,16})\[([\x20-\x5a\x5c\x5e-\x7e]*)\]"
    r"(?:_([0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{2}-[0-9]{2}-[0-9]{4}))?\r",
    re.ASCII,
)
_NO_QUIRKS: Final[frozenset[str]] = frozenset()
_NO_EXTENDED: Final[tuple[tuple[str, str], ...]] = ()


# The CRC of a common frame is taken in three parts (CRC-16/ARC is linear: see protocols.crc):
# the quoted token's register is a constant, the timestamp's ``]_HH:MM:SS,MM-DD-YYYY`` (21
# bytes) repeats across the frames of one second and is cached with the parsed time, and only
# the part between them (sequence, address, data) is computed per frame.
_TOKEN_CRC: Final = {t: crc16_arc(f'"{t}"'.encode("ascii")) for t in EVENT_TOKENS}
_STAMP_TAIL: Final = 21  # "]_" and the 19-character timestamp
_STAMP_LOW, _STAMP_HIGH = zeros_tables(_STAMP_TAIL)
_STAMPS_MAX: Final = 256
_stamps: dict[str, tuple[datetime, int]] = {}


def _common_stamp(text: str) -> tuple[datetime, int]:
    """A common frame's timestamp and the CRC of its ``]_<timestamp>`` (cached per second)."""
    hit = _stamps.get(text)
    if hit is None:
        if len(_stamps) >= _STAMPS_MAX:
            _stamps.clear()
        # The panels' clocks tick in seconds: the frames of one second share their timestamp.
        hit = _stamps[text] = (_parse_timestamp(text), crc16_arc(b"]_" + text.encode("ascii")))
    return hit


def decode_common(raw: bytes) -> Dc09Frame | None:
    """``decode_frame(raw, key=None, now=..., window=...)`` for the common plaintext frame
    (see ``_COMMON``) when it needs no timestamp window (plaintext, ``check_plain`` off): the
    same ``Dc09Frame``, or None when ``raw`` is not that shape or does not check out (wrong
    CRC or length, an impossible date). None costs nothing but this call: ``decode_frame``
    then decodes the frame and raises what it calls for. A property test holds the two equal."""
    match = _COMMON.fullmatch(raw.decode("latin-1"))
    if match is None:
        return None
    crc, length, token, sequence, receiver, line, account, data, stamp = match.groups()
    size = len(raw) - 10  # the span: after LF, CRC and length, before CR
    if int(length, 16) != size:
        return None
    if stamp is None:
        timestamp = None
        computed = crc16_arc(raw[9:-1])
    else:
        try:
            timestamp, tail_crc = _common_stamp(stamp)
        except _TailError:
            return None
        # The span is '"token"', the middle, then ']_<timestamp>' (the match says so).
        middle = crc16_arc(raw[len(token) + 11 : -_STAMP_TAIL - 1], _TOKEN_CRC[token])
        computed = _STAMP_LOW[middle & 0xFF] ^ _STAMP_HIGH[middle >> 8] ^ tail_crc
    if int(crc, 16) != computed:
        return None
    # Dc09Header(token, False, sequence, receiver, line, account, "hex") and
    # Dc09Frame(header, data, (), timestamp, frozenset(), raw), filled as drafts.
    header: Any = _new(_HeaderDraft)
    header.token = token
    header.encrypted = False
    header.sequence = sequence
    header.receiver = receiver
    header.line = line
    header.account = account
    header.crc_form = "hex"
    header.__class__ = Dc09Header
    frame: Any = _new(_FrameDraft)
    frame.header = header
    frame.data = data
    frame.extended = _NO_EXTENDED
    frame.timestamp = timestamp
    frame.quirks = _NO_QUIRKS
    frame.raw = raw
    frame.__class__ = Dc09Frame
    built: Dc09Frame = frame
    return built


def read_header(raw: bytes) -> Dc09Header:
    """Check the CRC and read the header (no key needed). Raises RemoteProtocolError subclasses."""
    return _envelope(raw).header


Envelope = _Envelope


def read_envelope(raw: bytes) -> Envelope:
    """``read_header``'s work kept whole (``.header`` is the header): hand it to
    ``decode_frame`` so that an encrypted frame's CRC and header, read to find its key, are not
    read again. Raises what ``read_header`` raises."""
    return _envelope(raw)


def decode_frame(
    raw: bytes,
    *,
    key: bytes | None,
    now: datetime,
    window: TimestampWindow = TimestampWindow(),
    envelope: Envelope | None = None,
) -> Dc09Frame:
    """Check, decrypt and decode one frame (with or without LF/CR). ``envelope``: what
    ``read_envelope(raw)`` returned for this same ``raw``, if it was called."""
    env = _envelope(raw) if envelope is None else envelope
    header = env.header
    quirks = list(env.quirks)  # an envelope may serve several tries (key rotation)
    if header.token not in EVENT_TOKENS:
        raise UnsupportedError(f"token {header.token!r} is not supported", raw=raw)
    if header.encrypted:
        data, extended, timestamp = _decrypt_tail(env, key, raw, quirks)
    else:
        try:
            data, extended, timestamp = _parse_tail(env.span[env.bracket + 1 :], quirks)
        except _TailError as exc:
            raise MalformedFrameError(str(exc), raw=raw, reply=Reply.DUH) from None
    if timestamp is not None and (header.encrypted or window.check_plain):
        offset = (timestamp - now).total_seconds()
        if offset < -window.past or offset > window.future:
            if window.policy == "reject":
                raise StaleTimestampError(
                    f"timestamp {format_timestamp(timestamp)} is {abs(offset):.0f} s "
                    f"{'behind' if offset < 0 else 'ahead of'} the receiver "
                    f"(window -{window.past:g}/+{window.future:g} s)",
                    raw=raw,
                )
            quirks.append("late")
    return Dc09Frame(header, data, extended, timestamp, frozenset(quirks), raw)


# -- keys ---------------------------------------------------------------------------------------


def parse_key(text: str, key_format: Literal["hex", "ascii"]) -> bytes:
    """An AES key from its configured text: 32/48/64 hex digits, or 16/24/32 ASCII characters."""
    if key_format == "hex":
        cleaned = text.strip()
        if len(cleaned) not in (32, 48, 64) or not _HEX_DIGITS.issuperset(cleaned):
            raise InvalidInputError(
                f"hex key must be 32, 48 or 64 hex digits, got {len(cleaned)} characters"
            )
        return bytes.fromhex(cleaned)
    if key_format == "ascii":
        if not text.isascii() or len(text) not in (16, 24, 32):
            raise InvalidInputError(
                f"ascii key must be 16, 24 or 32 ASCII characters, got {len(text)}"
            )
        return text.encode("ascii")
    raise InvalidInputError(f"key format must be 'hex' or 'ascii', got {key_format!r}")


# -- building frames ----------------------------------------------------------------------------


def _wrap(span: str, crc_form: str) -> bytes:
    body = span.encode("latin-1")
    crc = crc16_arc(body)
    if len(body) > 0xFFF:
        raise LocalProtocolError(f"frame body of {len(body)} bytes exceeds 0FFF")
    if crc_form == "hex":
        return b"\n%04X%04X%s\r" % (crc, len(body), body)
    if crc_form == "binary":
        return b"\n%s%04X%s\r" % (crc.to_bytes(2, "big"), len(body), body)
    raise LocalProtocolError(f"crc_form must be 'hex' or 'binary', got {crc_form!r}")


def _pad(count: int, rand: Callable[[int], bytes]) -> str:
    # Allowed random bytes are kept as drawn (so a fixed ``rand`` reproduces published vectors);
    # the others are folded onto the allowed alphabet.
    return rand(count).translate(_PAD_TRANSLATION).decode("ascii")


def _encrypt(plain_after_pad: str, key: bytes, rand: Callable[[int], bytes]) -> str:
    body = plain_after_pad.encode("latin-1")
    pad = _pad(16 - len(body) % 16, rand).encode("ascii")
    return _cbc_encrypt(key, pad + body).hex().upper()


def _address(receiver: str | None, line: str | None, account: str) -> str:
    r = "" if receiver is None else "R" + receiver
    return f"{r}{'' if line is None else 'L' + line}#{account}"


def encode_frame(
    token: str,
    sequence: int | str,
    account: str,
    data: str = "",
    *,
    receiver: str | None = None,
    line: str | None = "0",
    key: bytes | None = None,
    timestamp: datetime | None = None,
    extended: Sequence[tuple[str, str]] = (),
    crc_form: str = "hex",
    rand: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """A panel's frame, LF to CR. With ``key``: ``*TOKEN``, encrypted, ``timestamp`` required."""
    if not token or any(c in token for c in '"*[]'):
        raise LocalProtocolError(f"bad token {token!r}")
    seq = f"{sequence:04d}" if isinstance(sequence, int) else sequence
    if len(seq) != 4 or not (seq.isascii() and seq.isdigit()):
        raise LocalProtocolError(f"sequence must be 0000-9999, got {sequence!r}")
    if not 1 <= len(account) <= 16 or not _ACCOUNT_CHARS.issuperset(account):
        raise LocalProtocolError(f"account {account!r} is not 1-16 letters or digits")
    for name, value in (("receiver", receiver), ("line", line)):
        if value is not None and (len(value) > 6 or not _ADDRESS_CHARS.issuperset(value)):
            raise LocalProtocolError(f"{name} {value!r} is not 0-6 hex digits")
    if receiver == "":
        raise LocalProtocolError("receiver must not be empty (omit it with None)")
    if any(c in data for c in "[]"):
        raise LocalProtocolError(f"data {data!r} must not contain '[' or ']'")
    if any(not c.isprintable() for c in data):
        raise LocalProtocolError(f"data {data!r} must be printable")
    xdata = []
    for ident, value in extended:
        if len(ident) != 1 or not ident.isalpha() or any(c in value for c in "[]"):
            raise LocalProtocolError(f"bad extended data block {ident!r}{value!r}")
        xdata.append(f"[{ident}{value}]")
    tail = f"{data}]{''.join(xdata)}"
    if timestamp is not None:
        tail += "_" + format_timestamp(timestamp)
    head = f'"{"*" if key is not None else ""}{token}"{seq}{_address(receiver, line, account)}['
    if key is None:
        return _wrap(head + tail, crc_form)
    if timestamp is None:
        raise LocalProtocolError("an encrypted frame needs a timestamp")
    return _wrap(head + _encrypt("|" + tail, key, rand), crc_form)


# -- replies (receiver role) --------------------------------------------------------------------


def ack(
    header: Dc09Header,
    *,
    key: bytes | None,
    now: datetime,
    pipe: bool = True,
    rand: Callable[[int], bytes] = os.urandom,
) -> bytes:
    """The ACK for a frame: ``*ACK`` (encrypted, with the receiver time) when it was encrypted."""
    if not header.encrypted:
        return plain_ack(header)
    if key is None:
        raise LocalProtocolError("an encrypted frame needs an encrypted ACK: pass its key")
    # What ``_wrap('"*ACK"<seq><address>[' + _encrypt("|]_<now>", key, rand), crc_form)`` builds
    # (a property test holds the two equal), from cached parts: the receiver time's text (per
    # second), CRC('"*ACK"<seq>') and CRC('<address>[') combined, so only the ciphertext's hex
    # is folded into the CRC per ACK. pipe=False drops the '|' after the pad, for receivers'
    # peers that expect pysiaalarm's form.
    body = _ack_stamp(now)
    if pipe:
        body = b"|" + body
    pad = rand(16 - len(body) % 16).translate(_PAD_TRANSLATION)
    ciphertext = _cbc_encrypt(key, pad + body).hex().upper().encode("ascii")
    tail, tail_crc, low, high = _ack_address(header.receiver, header.line, header.account)
    head = _ack_head_crc(header.sequence, b'"*ACK"')
    crc = crc16_arc(ciphertext, low[head & 0xFF] ^ high[head >> 8] ^ tail_crc)
    sequence = header.sequence.encode("latin-1")
    length = len(tail) + len(ciphertext) + len(sequence) + 6
    if length > 0xFFF:
        raise LocalProtocolError(f"frame body of {length} bytes exceeds 0FFF")
    if header.crc_form == "hex":
        return b'\n%04X%04X"*ACK"%s%s%s\r' % (crc, length, sequence, tail, ciphertext)
    if header.crc_form == "binary":
        return b'\n%s%04X"*ACK"%s%s%s\r' % (
            crc.to_bytes(2, "big"),
            length,
            sequence,
            tail,
            ciphertext,
        )
    raise LocalProtocolError(f"crc_form must be 'hex' or 'binary', got {header.crc_form!r}")


_ACK_STAMPS_MAX: Final = 64
_ack_stamps: dict[tuple[int, int, int, int, int, int], bytes] = {}


def _ack_stamp(now: datetime) -> bytes:
    """``]_<now>`` of an encrypted ACK (``format_timestamp``), cached per second of a UTC
    time (the engine's clock): the ACKs of one second share it. The key is the time's fields,
    which are the UTC ones only in UTC: other zones and naive times are formatted each time."""
    if now.tzinfo is not UTC:
        return b"]_" + format_timestamp(now).encode("ascii")
    # The fields, not the datetime: hashing an aware datetime costs four times as much.
    second = (now.second, now.minute, now.hour, now.day, now.month, now.year)
    hit = _ack_stamps.get(second)
    if hit is None:
        if len(_ack_stamps) >= _ACK_STAMPS_MAX:
            _ack_stamps.clear()
        hit = _ack_stamps[second] = b"]_" + format_timestamp(now).encode("ascii")
    return hit


def plain_ack(header: Dc09Header) -> bytes:
    """The ACK for a plaintext frame (``ack`` of a header that is not encrypted)."""
    # The hot path: CRC("ACK"seq) and CRC(address[]) repeat (sequences cycle, accounts reuse
    # their address), so each is cached and the two are combined.
    tail, tail_crc, low, high = _ack_tail(header.receiver, header.line, header.account)
    head = _ack_head_crc(header.sequence)
    crc = low[head & 0xFF] ^ high[head >> 8] ^ tail_crc
    length = len(tail) + 9
    if length > 0xFFF:
        raise LocalProtocolError(f"frame body of {length} bytes exceeds 0FFF")
    if header.crc_form == "hex":
        return b'\n%04X%04X"ACK"%s%s\r' % (crc, length, header.sequence.encode(), tail)
    if header.crc_form == "binary":
        return b'\n%s%04X"ACK"%s%s\r' % (
            crc.to_bytes(2, "big"),
            length,
            header.sequence.encode(),
            tail,
        )
    raise LocalProtocolError(f"crc_form must be 'hex' or 'binary', got {header.crc_form!r}")


@functools.lru_cache(maxsize=20_000)
def _ack_head_crc(sequence: str, token: bytes = b'"ACK"') -> int:
    return crc16_arc(token + sequence.encode("latin-1"))


@functools.lru_cache(maxsize=8192)
def _ack_tail(
    receiver: str | None, line: str | None, account: str
) -> tuple[bytes, int, tuple[int, ...], tuple[int, ...]]:
    """``<address>[]`` of an ACK, its CRC, and the tables that push the head's CRC through it
    (``crc16_arc_combine`` inlined: ``low[head & 0xFF] ^ high[head >> 8] ^ crc``)."""
    tail = (_address(receiver, line, account) + "[]").encode("latin-1")
    low, high = zeros_tables(len(tail))
    return tail, crc16_arc(tail), low, high


@functools.lru_cache(maxsize=8192)
def _ack_address(
    receiver: str | None, line: str | None, account: str
) -> tuple[bytes, int, tuple[int, ...], tuple[int, ...]]:
    """``<address>[`` of an encrypted ACK, its CRC and its tables (as ``_ack_tail``)."""
    tail = (_address(receiver, line, account) + "[").encode("latin-1")
    low, high = zeros_tables(len(tail))
    return tail, crc16_arc(tail), low, high


def nak(now: datetime, *, crc_form: str = "hex") -> bytes:
    """The standard NAK with the receiver time, so the panel can correct its clock."""
    return _wrap(f'"NAK"0000R0L0A0[]_{format_timestamp(now)}', crc_form)


def duh(header: Dc09Header) -> bytes:
    """DUH: received correctly, cannot process. Never encrypted."""
    address = _address(header.receiver, header.line, header.account)
    return _wrap(f'"DUH"{header.sequence}{address}[]', header.crc_form)


def reply_for_error(
    error: RemoteProtocolError, header: Dc09Header | None, *, now: datetime
) -> bytes | None:
    """The bytes ``error.reply`` calls for, or None (no reply, or a DUH without a header)."""
    if error.reply is Reply.NAK:
        return nak(now, crc_form=header.crc_form if header is not None else "hex")
    if error.reply is Reply.DUH and header is not None:
        return duh(header)
    return None


# -- replies (panel role) -----------------------------------------------------------------------


def decode_reply(raw: bytes, *, key: bytes | None = None) -> Dc09Reply:
    """Read an ACK, ``*ACK``, NAK or DUH as a panel receives it."""
    span_bytes, form, crc_text, crc, _, _ = _fields(raw)
    if len(crc_text) != 4 or not _HEX_DIGITS.issuperset(crc_text) or int(crc_text, 16) != crc:
        raise ChecksumError(f"crc mismatch: frame says {crc_text}, computed {crc:04X}", raw=raw)
    span = span_bytes.decode("latin-1")
    quirks: list[str] = []
    header, bracket = _read_address(span, raw, quirks, form, reply=True)
    kind = REPLY_TOKENS.get(header.token)
    if kind is None:
        raise UnsupportedError(f"token {header.token!r} is not a reply", raw=raw)
    if header.encrypted:
        if kind is not Reply.ACK:
            raise MalformedFrameError(f"{header.token} is never encrypted", raw=raw)
        env = _Envelope(attrs.evolve(header, token=NULL_TOKEN), span, bracket, [])
        _, _, timestamp = _decrypt_tail(env, key, raw, quirks)
    else:
        try:
            _, _, timestamp = _parse_tail(span[bracket + 1 :], quirks)
        except _TailError as exc:
            raise MalformedFrameError(str(exc), raw=raw) from None
    return Dc09Reply(
        kind,
        header.sequence,
        header.receiver,
        header.line,
        header.account or None,
        timestamp,
        header.encrypted,
        raw,
    )
