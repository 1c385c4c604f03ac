"""Account-number rules: what the hot path and the registry agree on, with no SQL and no I/O.

Rules:
- An account number is typed as 3-16 letters or digits (trimmed; leading zeros significant).
  Its *effective* form is the line's prefix plus the number, upper-cased: what the station
  and automation know the account as, and what must be unique within a station.
- A number typed with the very prefix its line adds (``ABC1234`` on line ``ABC``) is accepted
  but flagged by the registry: ``repeats_prefix``.
- Line numbers are DC-09 ``L`` values, 1-6 hex digits, normalized: ``L000`` = ``0`` = ``L0``.
  ``line_key`` is the same for a received frame and never raises (junk matches no line).
- A DC-09 AES key is 16, 24 or 32 bytes, typed as hex digits or ASCII text.
"""

from __future__ import annotations

import re
from typing import Literal

import attrs
from attrs import frozen

from protocols.errors import InvalidInputError

KeyFormat = Literal["hex", "ascii"]
KEY_FORMATS: tuple[KeyFormat, ...] = ("hex", "ascii")
DEFAULT_LINE = "0"

_LINE = re.compile(r"[0-9A-F]{1,6}", re.ASCII)
_NUMBER = re.compile(r"[0-9A-Za-z]{3,16}", re.ASCII)
_PREFIX = re.compile(r"[0-9A-Za-z]{0,16}", re.ASCII)
_SERIAL = re.compile(r"[0-9A-Za-z][0-9A-Za-z:._-]{0,63}", re.ASCII)


def line_number(text: str) -> str:
    """A DC-09 line (``L`` value) as stored: ``"L000"`` -> ``"0"``, ``"l1a"`` -> ``"1A"``."""
    value = text.strip().upper().removeprefix("L")
    if not _LINE.fullmatch(value):
        raise InvalidInputError(f"line must be 1-6 hex digits (DC-09 L value), got {text!r}")
    return value.lstrip("0") or "0"


def line_key(text: str | None) -> str:
    """Like ``line_number`` for a received frame: never raises; junk simply matches no line."""
    if text is None:
        return DEFAULT_LINE
    value = text.strip().upper().removeprefix("L")
    return value.lstrip("0") or "0"


def line_prefix(text: str | None) -> str:
    """A line's account prefix, upper-cased; empty means none."""
    value = (text or "").strip()
    if not _PREFIX.fullmatch(value):
        raise InvalidInputError(f"line prefix must be up to 16 letters or digits, got {text!r}")
    return value.upper()


def account_number(text: str) -> str:
    """An account number as typed, trimmed: 3-16 letters or digits (leading zeros kept)."""
    value = text.strip()
    if not _NUMBER.fullmatch(value):
        raise InvalidInputError(f"account number must be 3-16 letters or digits, got {text!r}")
    return value


def effective_number(prefix: str, number: str) -> str:
    """What the station knows the account as: line prefix + number, upper-cased."""
    return prefix + number.strip().upper()


def repeats_prefix(prefix: str, number: str) -> bool:
    """True when the number was typed with the prefix its line adds anyway."""
    return bool(prefix) and number.strip().upper().startswith(prefix)


def bridge_serial(text: str) -> str:
    """A bridge serial or MAC, upper-cased."""
    value = text.strip()
    if not _SERIAL.fullmatch(value):
        raise InvalidInputError(
            f"bridge serial must be letters, digits, ':', '.', '-', got {text!r}"
        )
    return value.upper()


def _key_valid(instance: AccountKey, _: attrs.Attribute[str], text: str) -> None:
    instance.parse_raw(text, instance.format)


@frozen
class AccountKey:
    """A DC-09 AES key as typed (hex digits or ASCII text) and its format."""

    format: KeyFormat = attrs.field(validator=attrs.validators.in_(KEY_FORMATS))
    text: str = attrs.field(validator=_key_valid)

    @classmethod
    def parse(cls, text: str, key_format: str = "hex") -> AccountKey:
        if key_format not in KEY_FORMATS:
            raise InvalidInputError(f"key format must be hex or ascii, got {key_format!r}")
        fmt: KeyFormat = "hex" if key_format == "hex" else "ascii"
        return cls(fmt, text.strip() if fmt == "hex" else text)

    @staticmethod
    def parse_raw(text: str, key_format: str) -> bytes:
        if key_format == "hex":
            if not re.fullmatch(r"[0-9A-Fa-f]+", text, re.ASCII):
                raise InvalidInputError("hex key must hold only hex digits")
            raw = bytes.fromhex(text)
        else:
            if not text.isascii() or not text.isprintable():
                raise InvalidInputError("ascii key must hold printable ASCII characters only")
            raw = text.encode("ascii")
        if len(raw) not in (16, 24, 32):
            raise InvalidInputError(
                f"key must be 16, 24 or 32 bytes (AES-128/192/256), got {len(raw)}"
            )
        return raw

    @property
    def raw(self) -> bytes:
        return self.parse_raw(self.text, self.format)
