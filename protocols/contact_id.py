"""Contact ID (Ademco, SIA DC-05): the 16-digit message and the DC-09 ``ADM-CID`` payload.

Rules:
- The message is ``ACCT MT Q XYZ GG CCC S``: 16 digits from ``0-9`` and ``B-F`` (hex ``A`` is
  not a Contact ID digit). Digit values for the checksum: ``0`` counts 10, ``B``-``F`` 11-15;
  the sum of all 16 must be a multiple of 15. A computed check value of 0 is sent as ``F``.
- Spaces are tolerated on input (manuals print ``1234 18 1137 01 015 2``); none are sent.
- Checks run in this order: alphabet and length (MalformedFrameError), checksum
  (ChecksumError), then the fields (MalformedFrameError), so a single changed digit is always
  reported as a checksum failure.
- The ``ADM-CID`` payload is ``#acct|QXYZ GG CCC`` with no message type and no checksum. Real
  panels drop the ``#``, drop the whole account, or put extra spaces; all are tolerated and
  the account comes back as ``None`` when absent. Anything else is a PayloadError (DUH).
"""

from __future__ import annotations

import re

from attrs import field, frozen, validators

from protocols.errors import (
    ChecksumError,
    LocalProtocolError,
    MalformedFrameError,
    PayloadError,
)
from protocols.signal import ContactIdView

_VALUE = {"0": 10, "B": 11, "C": 12, "D": 13, "E": 14, "F": 15} | {str(d): d for d in range(1, 10)}
# The digit a sender writes for a check value 0..14 (0 is sent as F, 10 as "0").
_CHECK_CHAR = "F123456789" + "0BCDE"
_CID_DIGITS = frozenset(_VALUE)
_ACCOUNT = re.compile(r"^[0-9B-F]{4}$")
_QUALIFIER = {"1": "E", "3": "R", "6": "P"}
_HEX = frozenset("0123456789ABCDEF")
_ADM_ACCOUNT = re.compile(r"^[0-9A-Za-z]{1,16}\Z")


@frozen
class ContactIdMessage:
    """One 16-digit Contact ID message: account, message type (18 or 98) and the event."""

    account: str = field(validator=validators.matches_re(_ACCOUNT))
    message_type: str = field(validator=validators.in_(("18", "98")))
    event: ContactIdView


def checksum_digit(digits15: str) -> str:
    """The check digit that makes ``digits15`` plus it a multiple of 15 (0 is sent as F)."""
    if len(digits15) != 15:
        raise LocalProtocolError(f"need 15 digits before the checksum, got {len(digits15)}")
    try:
        total = sum(_VALUE[c] for c in digits15)
    except KeyError as exc:
        raise LocalProtocolError(f"not a Contact ID digit: {exc.args[0]!r}") from None
    return _CHECK_CHAR[-total % 15]


def parse_message(text: str) -> ContactIdMessage:
    """Parse a 16-digit message (spaces tolerated); ChecksumError or MalformedFrameError."""
    raw = text.encode("utf-8", "replace")
    digits = text.replace(" ", "").upper()
    bad = [c for c in digits if c not in _CID_DIGITS]
    if bad:
        raise MalformedFrameError(
            f"not a Contact ID digit: {bad[0]!r} in {text!r}", raw=raw, reason="bad_digit"
        )
    if len(digits) != 16:
        raise MalformedFrameError(
            f"Contact ID message has 16 digits, got {len(digits)} in {text!r}",
            raw=raw,
            reason="bad_length",
        )
    total = sum(_VALUE[c] for c in digits)
    if total % 15:
        raise ChecksumError(
            f"Contact ID checksum: digits of {digits} sum to {total}, not a multiple of 15"
            f" (check digit should be {checksum_digit(digits[:15])})",
            raw=raw,
        )
    account, mt, q, code, group, zone = (
        digits[0:4],
        digits[4:6],
        digits[6],
        digits[7:10],
        digits[10:12],
        digits[12:15],
    )
    if mt not in ("18", "98"):
        raise MalformedFrameError(
            f"Contact ID message type must be 18 or 98, got {mt!r}", raw=raw, reason="bad_type"
        )
    if q not in _QUALIFIER:
        raise MalformedFrameError(
            f"Contact ID qualifier must be 1, 3 or 6, got {q!r}", raw=raw, reason="bad_qualifier"
        )
    return ContactIdMessage(account, mt, ContactIdView(_QUALIFIER[q], code, group, zone))


def build_message(msg: ContactIdMessage) -> str:
    """The 16 digits on the wire for ``msg``, with its check digit."""
    ev = msg.event
    body = f"{msg.account}{msg.message_type}{ev.qualifier_digit}{ev.code}{ev.group}{ev.zone}"
    if "A" in body:
        raise LocalProtocolError(f"hex A is not a Contact ID digit: {body!r}")
    return body + checksum_digit(body)


def parse_adm_cid(data: str) -> tuple[str | None, ContactIdView]:
    """Parse a DC-09 ``ADM-CID`` data block: ``#acct|QXYZ GG CCC`` and its tolerated variants."""
    bar = data.rfind("|")
    if bar >= 0:
        account_text = data[:bar].strip()
        if account_text.startswith("#"):
            account_text = account_text[1:].strip()
        body = data[bar + 1 :]
    else:
        account_text = ""
        body = data
    account: str | None = account_text or None
    if account is not None and not _ADM_ACCOUNT.match(account):
        raise PayloadError(f"ADM-CID account is not alphanumeric: {account!r}", raw=_raw(data))
    return account, _cid_event(body, data)


def _cid_event(body: str, data: str) -> ContactIdView:
    # Fast path: exactly "QXYZ GG CCC".
    if len(body) == 11 and body[4] == " " and body[7] == " ":
        digits = body[:4] + body[5:7] + body[8:]
    else:
        digits = "".join(body.split())
    digits = digits.upper()
    if len(digits) != 9 or not _HEX.issuperset(digits):
        raise PayloadError(f"ADM-CID event is not 'QXYZ GG CCC': {body!r}", raw=_raw(data))
    q = _QUALIFIER.get(digits[0])
    if q is None:
        raise PayloadError(
            f"ADM-CID qualifier must be 1, 3 or 6, got {digits[0]!r} in {body!r}", raw=_raw(data)
        )
    return ContactIdView(q, digits[1:4], digits[4:6], digits[6:9])


def format_adm_cid(account: str | None, cid: ContactIdView) -> str:
    """The ``ADM-CID`` data block for ``cid``: ``#acct|QXYZ GG CCC`` (no account part if None)."""
    event = f"{cid.qualifier_digit}{cid.code} {cid.group} {cid.zone}"
    if not account:
        return event
    if not _ADM_ACCOUNT.match(account):
        raise LocalProtocolError(f"ADM-CID account must be 1-16 letters or digits: {account!r}")
    return f"#{account}|{event}"


def _raw(data: str) -> bytes:
    return data.encode("utf-8", "replace")
