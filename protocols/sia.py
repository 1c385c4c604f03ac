"""SIA DC-03 data blocks, as carried by DC-09 ``SIA-DCS`` (and SG protocol "S").

Grammar (what this parser accepts): ``[#acct|]<function><packet>[/<packet>…]`` where the
function code is ``N`` (new event) or ``O`` (old event), a packet is ``<modifiers><code>
<address>[^text^]`` and a modifier is two lower-case letters and a value (``ri`` area, ``id``
user, ``pi`` peripheral: digits; ``ti`` ``hh:mm[:ss]``; ``da`` ``mm-dd-yy``; any other lower-case
pair: digits). An ``A`` packet (``|Atest``, ``/AFire Zone 2``) carries ASCII text for the event.

Rules:
- Modifiers hold until the block ends: ``Nri1/BA01/BA02`` is two burglary alarms in area 1.
- Tolerated, and reported as ``quirk:<name>`` flags: a missing ``/`` between modifier and code
  (``Nri1BA012``), a missing ``#`` (``36214|NRP``), a missing account (``|Nri1/CL501``,
  ``Nri1/WA000``), a missing function code (``NL2``), ``|`` used as the packet separator (Eaton),
  the ``O`` function code, an unterminated ``^text``, data trailing an event (``OP001NM``), and
  unparseable packets next to good ones.
- Unknown two-letter codes are kept and flagged ``unknown_code``, never dropped (a DUH for an
  unknown code made a real panel drop its link).
- PayloadError only when the data holds no event at all: then it is not a SIA block.
- ``format_block`` writes what ``parse_block`` reads back unchanged, or refuses
  (LocalProtocolError) what a DC-03 block cannot express.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from protocols.catalog import SIA
from protocols.errors import LocalProtocolError, PayloadError
from protocols.signal import SiaView

QUIRK_NO_SLASH = "quirk:no_slash"
QUIRK_NO_HASH = "quirk:account_without_hash"
QUIRK_NO_ACCOUNT = "quirk:no_account"
QUIRK_NO_FUNCTION = "quirk:no_function_code"
QUIRK_PIPE = "quirk:pipe_separator"
QUIRK_OLD_EVENT = "quirk:old_event"
QUIRK_UNTERMINATED_TEXT = "quirk:unterminated_text"
QUIRK_TRAILING = "quirk:trailing_data"
QUIRK_UNPARSED = "quirk:unparsed_data"
UNKNOWN_CODE = "unknown_code"

_MODIFIER_VALUE = {
    "ti": re.compile(r"[0-9]{1,2}:[0-9]{2}(?::[0-9]{2})?"),
    "da": re.compile(r"[0-9]{2}-[0-9]{2}-[0-9]{2}"),
}
_DIGITS = re.compile(r"[0-9]*")
# A packet ends at a separator or at the block's end, line ends after it aside: an "A" packet
# followed by a stray "\r" or "\n" (a UDP or decrypted body may carry one) is an event, its
# line end trailing data, rather than text that hides the event ("/AT\n": AC trouble). ``$``
# matched before a final "\n" only, so "\r" and "\n\n" turned the event into text.
_CODE_PACKET = re.compile(r"[A-Z]{2}[0-9]*(?:\^[^^]*\^?)?(?=[/|]|[\r\n]*\Z)")
# An account written without '#': a SIA packet never starts with a digit, an account does.
_BARE_ACCOUNT = re.compile(r"[0-9][0-9A-Za-z]*")
_ACCOUNT = re.compile(r"[0-9A-Za-z]+")
_SEPARATORS = "/|"


def parse_block(data: str) -> tuple[str | None, tuple[SiaView, ...], frozenset[str]]:
    """Account (None when absent), every event of the block, and the quirk flags tolerated."""
    flags: set[str] = set()
    account, body = _split_account(data, flags)
    events = _Events(flags)
    _parse_body(body, events, flags)
    views = events.finish(data)
    if any(view.code not in SIA for view in views):
        flags.add(UNKNOWN_CODE)
    return account, views, frozenset(flags)


def _split_account(data: str, flags: set[str]) -> tuple[str | None, str]:
    if data.startswith("#"):
        bar = data.find("|")
        if bar < 0:
            raise PayloadError(f"SIA block has an account but no '|': {data!r}", raw=_raw(data))
        account = data[1:bar].strip()
        if account and not _ACCOUNT.fullmatch(account):
            raise PayloadError(f"SIA account is not alphanumeric: {account!r}", raw=_raw(data))
        if not account:
            flags.add(QUIRK_NO_ACCOUNT)
        return account or None, data[bar + 1 :]
    if data.startswith("|"):
        flags.add(QUIRK_NO_ACCOUNT)
        return None, data[1:]
    bar = data.find("|")
    if bar > 0 and _BARE_ACCOUNT.fullmatch(data[:bar]):
        flags.add(QUIRK_NO_HASH)
        return data[:bar], data[bar + 1 :]
    flags.add(QUIRK_NO_ACCOUNT)
    return None, data


class _Events:
    """Events under construction: modifiers held for the whole block, text attached late."""

    def __init__(self, flags: set[str]) -> None:
        self.flags = flags
        self.modifiers: dict[str, str] = {}
        self.rows: list[list[object]] = []  # [code, address, modifiers, text]
        self.pending_text: str | None = None

    def add(self, code: str, address: str, text: str | None) -> None:
        if self.pending_text is not None:
            text = self.pending_text if text is None else f"{self.pending_text} {text}"
            self.pending_text = None
        self.rows.append([code, address, tuple(self.modifiers.items()), text])

    def attach_text(self, text: str) -> None:
        if not self.rows:
            self.pending_text = text if self.pending_text is None else f"{self.pending_text} {text}"
            return
        last = self.rows[-1]
        last[3] = text if last[3] is None else f"{last[3]} {text}"

    def finish(self, data: str) -> tuple[SiaView, ...]:
        if not self.rows:
            raise PayloadError(f"no SIA event in data block {data!r}", raw=_raw(data))
        return tuple(
            SiaView(code, address, modifiers, text)  # type: ignore[arg-type]
            for code, address, modifiers, text in self.rows
        )


def _parse_body(body: str, events: _Events, flags: set[str]) -> None:
    n = len(body)
    i = 0
    segment_start = True
    seen_function = False
    after_pipe = False  # "|A<text>" is standard; "|" before anything else is the Eaton quirk
    while i < n:
        c = body[i]
        if c in _SEPARATORS:
            after_pipe = c == "|"
            i += 1
            segment_start = True
            continue
        if after_pipe:
            after_pipe = False
            if c != "A" or _CODE_PACKET.match(body, i):
                flags.add(QUIRK_PIPE)
        if segment_start and c == "A" and not _CODE_PACKET.match(body, i):
            # The text ends at the next separator: a '/' inside text would otherwise swallow
            # the events after it (a lost fire alarm is worse than a split text).
            end = _next_separator(body, i + 1)
            events.attach_text(body[i + 1 : end])
            i = end
            continue
        if c in "NO" and _is_function_code(body, i):
            if c == "O":
                flags.add(QUIRK_OLD_EVENT)
            seen_function = True
            i += 1
            segment_start = False
            continue
        segment_start = False
        if c.islower() and c.isascii() and i + 1 < n and body[i + 1].islower():
            i = _parse_modifier(body, i, events, flags)
            continue
        if _is_upper(c) and i + 1 < n and _is_upper(body[i + 1]):
            if not seen_function and not events.rows:
                flags.add(QUIRK_NO_FUNCTION)
            i = _parse_event(body, i, events, flags)
            continue
        # Not a modifier, not a code: skip to the next packet and say so.
        flags.add(QUIRK_UNPARSED)
        i = _next_separator(body, i)


def _is_upper(c: str) -> bool:
    return "A" <= c <= "Z"


def _is_function_code(body: str, i: int) -> bool:
    # "NRP" is N + RP, "NNL2" is N + NL2, but "NL2" is the code NL: a function code is followed
    # by a modifier, a separator, the end, or a complete two-letter code.
    rest = body[i + 1 : i + 3]
    if not rest:
        return True
    if rest[0] in _SEPARATORS or (rest[0].islower() and rest[0].isascii()):
        return True
    return len(rest) == 2 and _is_upper(rest[0]) and _is_upper(rest[1])


def _parse_modifier(body: str, i: int, events: _Events, flags: set[str]) -> int:
    name = body[i : i + 2]
    pattern = _MODIFIER_VALUE.get(name, _DIGITS)
    match = pattern.match(body, i + 2)
    if match is None:
        # A ti/da with a value of the wrong shape: keep what is there up to the next packet.
        flags.add(QUIRK_UNPARSED)
        end = i + 2
        while end < len(body) and body[end] not in _SEPARATORS and not _is_upper(body[end]):
            end += 1
        events.modifiers[name] = body[i + 2 : end]
        return end
    events.modifiers[name] = match.group()
    end = match.end()
    if end < len(body) and _is_upper(body[end]):
        flags.add(QUIRK_NO_SLASH)
    return end


def _parse_event(body: str, i: int, events: _Events, flags: set[str]) -> int:
    code = body[i : i + 2]
    match = _DIGITS.match(body, i + 2)
    assert match is not None  # [0-9]* always matches
    address = match.group()
    j = match.end()
    text: str | None = None
    if j < len(body) and body[j] == "^":
        close = body.find("^", j + 1)
        if close < 0:
            flags.add(QUIRK_UNTERMINATED_TEXT)
            text = body[j + 1 :]
            j = len(body)
        else:
            text = body[j + 1 : close]
            j = close + 1
    if j < len(body) and body[j] not in _SEPARATORS:
        # e.g. "OP001NM": keep the trailing characters as text rather than invent an event.
        end = _next_separator(body, j)
        flags.add(QUIRK_TRAILING)
        trailing = body[j:end]
        text = trailing if text is None else f"{text} {trailing}"
        j = end
    events.add(code, address, text)
    return j


def _next_separator(body: str, i: int) -> int:
    n = len(body)
    while i < n and body[i] not in _SEPARATORS:
        if body[i] == "^":
            close = body.find("^", i + 1)
            i = n if close < 0 else close
        i += 1
    return min(i, n)


def format_block(account: str | None, events: Sequence[SiaView]) -> str:
    """A ``SIA-DCS`` data block: ``#acct|N`` then one packet per event, modifiers written once.

    Refuses (LocalProtocolError) events a block cannot carry: a modifier dropped or reordered
    after an earlier event set it (modifiers hold until the block ends), a value of the wrong
    shape, a non-digit address, or ``^`` inside the text.
    """
    if not events:
        raise LocalProtocolError("a SIA block needs at least one event")
    if account is not None and not _ACCOUNT.fullmatch(account):
        raise LocalProtocolError(f"SIA account must be letters or digits: {account!r}")
    parts: list[str] = []
    state: dict[str, str] = {}
    for number, event in enumerate(events, 1):
        for name, value in event.modifiers:
            if len(name) != 2 or not name.isascii() or not name.islower():
                raise LocalProtocolError(f"modifier name must be two lower-case letters: {name!r}")
            pattern = _MODIFIER_VALUE.get(name, _DIGITS)
            if not pattern.fullmatch(value):
                raise LocalProtocolError(f"modifier {name} cannot hold {value!r}")
            if state.get(name) != value:
                state[name] = value
                parts.append(f"{name}{value}/")
        if tuple(state.items()) != event.modifiers:
            raise LocalProtocolError(
                f"event {number} has modifiers {event.modifiers!r}, but modifiers hold until the"
                f" block ends, so it would read back as {tuple(state.items())!r}"
            )
        if not (event.address.isdigit() and event.address.isascii()) and event.address:
            raise LocalProtocolError(f"SIA address must be digits: {event.address!r}")
        parts.append(event.code + event.address)
        if event.text is not None:
            if "^" in event.text:
                raise LocalProtocolError(f"SIA text cannot contain '^': {event.text!r}")
            parts.append(f"^{event.text}^")
        parts.append("/")
    body = "N" + "".join(parts[:-1])
    return body if account is None else f"#{account}|{body}"


def _raw(data: str) -> bytes:
    return data.encode("utf-8", "replace")
