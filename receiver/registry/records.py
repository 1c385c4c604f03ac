"""The registry's value records and input rules: what a command is given, what it answers.

Pure: no SQL, no I/O. Names are 1-200 printable characters; durations are finite seconds.
"""

from __future__ import annotations

import enum
import math

import attrs
from attrs import frozen

from protocols.errors import InvalidInputError
from receiver.account_numbers import DEFAULT_LINE, AccountKey, account_number, line_number

WINDOW_POLICIES = ("reject", "flag")
ARMING_SOURCES = ("panel-primary", "panel-individual", "video-app", "alarm-com")
BRIDGE_CHANNELS = (4, 8, 12, 16)
NAME_MAX = 200


class Keep(enum.Enum):
    """An edit's "leave this as it is" (None means "clear it")."""

    KEEP = "keep"


KEEP = Keep.KEEP


def entity_name(text: str, what: str) -> str:
    value = text.strip()
    if not value or len(value) > NAME_MAX or not value.isprintable():
        raise InvalidInputError(f"{what} name must be 1-{NAME_MAX} printable characters")
    return value


def positive(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        raise InvalidInputError(f"{what} must be a positive number of seconds, got {value!r}")
    return float(value)


def non_negative(value: float | None, what: str) -> float | None:
    if value is None:
        return None
    if not (math.isfinite(value) and value >= 0):
        raise InvalidInputError(f"{what} must be zero or more seconds, got {value!r}")
    return float(value)


def seconds(text: str | None, what: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"{what} must be a number of seconds, got {text!r}") from None


def bridge_token(text: str) -> str:
    token = text.strip()
    if not token or len(token) > 256 or not token.isprintable():
        raise InvalidInputError("bridge token must be 1-256 printable characters")
    return token


@frozen(kw_only=True)
class AccountSpec:
    """An account to add: everything but the station, validated on construction."""

    line: str = attrs.field(default=DEFAULT_LINE, converter=line_number)
    number: str = attrs.field(converter=account_number)
    site: str | None = None
    key: AccountKey | None = None
    supervision: float | None = attrs.field(default=None)
    window_past: float | None = None
    window_future: float | None = None
    window_policy: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.in_(WINDOW_POLICIES))
    )

    def __attrs_post_init__(self) -> None:
        positive(self.supervision, "supervision")
        non_negative(self.window_past, "window past")
        non_negative(self.window_future, "window future")


@frozen
class Holder:
    """The account that holds an effective number."""

    account_id: int
    station: str
    line: str
    number: str
    effective: str
    site: str | None

    def describe(self) -> str:
        site = f'site "{self.site}"' if self.site else "no site"
        return f"held by {site} (line {self.line}, number {self.number})"


@frozen
class AccountCheck:
    """The outcome of checking a number: its effective form, its holder if taken, warnings."""

    station: str
    line: str
    number: str
    effective: str
    holder: Holder | None
    warnings: tuple[str, ...] = ()
    attached_bridges: tuple[str, ...] = ()  # waiting bridges that got this account (add only)

    @property
    def free(self) -> bool:
        return self.holder is None


@frozen
class LineRecord:
    id: int
    number: str
    prefix: str


@frozen
class StationRecord:
    id: int
    name: str
