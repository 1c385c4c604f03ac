"""`receiver decode`: decode one DC-09 frame and show what the receiver would do with it.

Rules: the frame is checked exactly as the listener checks it (same codec, same default
timestamp window), and the reply shown is the one the listener would send. Output is JSON on
stdout. Exit 0 when the frame is accepted; exit 2 when it is rejected, with one line on stderr
saying why (the JSON then names the rejection and the reply, if any). A bug in the codec is
one line on stderr and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from protocols import dc09
from protocols.errors import InvalidInputError, ReceiverError, RemoteProtocolError, Reply
from protocols.payload import Event, parse_events
from receiver.cli import EXIT_BAD_INPUT, EXIT_OK, fail

_ESCAPES = {"n": 0x0A, "r": 0x0D, "t": 0x09, "0": 0x00, "\\": 0x5C}


def frame_bytes(text: str) -> bytes:
    """The frame as typed: latin-1 characters, with ``\\n``, ``\\r``, ``\\\\`` and ``\\xNN``."""
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "x" and _is_hex(text[i + 2 : i + 4]):
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
        if ord(char) > 0xFF:
            raise InvalidInputError(f"frame holds {char!r}, which is not a byte")
        out.append(ord(char))
        i += 1
    return bytes(out)


def _is_hex(text: str) -> bool:
    return len(text) == 2 and all(c in "0123456789abcdefABCDEF" for c in text)


def escaped(data: bytes) -> str:
    """Bytes as a readable string: printable ASCII kept, ``\\n``/``\\r``, others ``\\xNN``."""
    named = {0x0A: "\\n", 0x0D: "\\r", 0x5C: "\\\\"}
    return "".join(named.get(b) or (chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02X}") for b in data)


def parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"--now {text!r} is not an ISO-8601 time") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _integrity(raw: bytes) -> dict[str, Any]:
    try:
        check = dc09.integrity(raw)
    except RemoteProtocolError:
        return {"crc": None, "length": None}
    return {
        "crc": {
            "form": check.crc_form,
            "frame": check.crc_frame,
            "computed": check.crc_computed,
            "ok": check.crc_ok,
        },
        "length": {
            "frame": check.length_frame,
            "computed": check.length_computed,
            "ok": check.length_ok,
        },
    }


def _header(header: dc09.Dc09Header | None) -> dict[str, Any]:
    if header is None:
        return {}
    return {
        "token": header.token,
        "encrypted": header.encrypted,
        "sequence": header.sequence,
        "receiver": header.receiver,
        "line": header.line,
        "account": header.account,
    }


def _reply(kind: Reply, data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {"kind": "NONE", "bytes": None, "hex": None}
    return {"kind": kind.value, "bytes": escaped(data), "hex": data.hex().upper()}


def _event(event: Event) -> dict[str, Any]:
    cid = event.cid
    sia = event.sia
    return {
        "cid": None
        if cid is None
        else {"qualifier": cid.qualifier, "code": cid.code, "group": cid.group, "zone": cid.zone},
        "sia": None
        if sia is None
        else {
            "code": sia.code,
            "address": sia.address,
            "modifiers": [list(m) for m in sia.modifiers],
            "text": sia.text,
        },
        "name": event.name,
        "category": event.category,
        "account": event.account,
        "flags": sorted(event.flags),
    }


def _print(report: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def _reject(
    raw: bytes, exc: RemoteProtocolError, header: dc09.Dc09Header | None, now: datetime
) -> int:
    reply = dc09.reply_for_error(exc, header, now=now)
    report = {
        **_header(header),
        **_integrity(raw),
        "accepted": False,
        "rejected": {"reason": exc.reason, "message": exc.message},
        "reply": _reply(exc.reply, reply),
    }
    _print(report)
    return fail(exc.message, EXIT_BAD_INPUT)


def _show_reply(raw: bytes, key: bytes | None) -> int:
    """A receiver's reply given to decode: show it as a panel reads it."""
    reply = dc09.decode_reply(raw, key=key)
    _print(
        {
            "reply_frame": {
                "kind": reply.kind.value,
                "encrypted": reply.encrypted,
                "sequence": reply.sequence,
                "receiver": reply.receiver,
                "line": reply.line,
                "account": reply.account,
                "timestamp": None if reply.timestamp is None else reply.timestamp.isoformat(),
            },
            **_integrity(raw),
        }
    )
    return EXIT_OK


def _decode(args: argparse.Namespace) -> int:
    try:
        raw = bytes.fromhex(args.frame) if args.hex else frame_bytes(args.frame)
    except ValueError as exc:
        raise InvalidInputError(f"FRAME is not hex: {exc}") from None
    key = dc09.parse_key(args.key, args.key_format) if args.key is not None else None
    now = parse_now(args.now) if args.now else datetime.now(UTC)
    window = dc09.TimestampWindow(check_plain=args.check_plain)
    try:
        return _decode_frame(raw, key, now, window)
    except (ReceiverError, BrokenPipeError):
        raise
    except Exception as exc:
        # A codec bug: one line, as the listener logs it (frame_crashed), not a traceback.
        return fail(
            f"internal error decoding the frame: {type(exc).__name__}: {exc} "
            "(the receiver answers such a frame DUH and logs it as frame_crashed)",
            EXIT_BAD_INPUT,
        )


def _decode_frame(
    raw: bytes, key: bytes | None, now: datetime, window: dc09.TimestampWindow
) -> int:
    if any(f'"{t}"'.encode() in raw[:16] for t in ("ACK", "*ACK", "NAK", "DUH")):
        try:
            return _show_reply(raw, key)
        except RemoteProtocolError as exc:
            return _reject(raw, exc, None, now)
    header: dc09.Dc09Header | None = None
    try:
        header = dc09.read_header(raw)
        frame = dc09.decode_frame(
            raw, key=key if header.encrypted else None, now=now, window=window
        )
        events = parse_events(frame.token, frame.data)
    except RemoteProtocolError as exc:
        return _reject(raw, exc, header, now)
    reply = dc09.ack(frame.header, key=key if frame.encrypted else None, now=now)
    report = {
        **_header(frame.header),
        "timestamp": None if frame.timestamp is None else frame.timestamp.isoformat(),
        "data": frame.data,
        "events": [_event(e) for e in events],
        "extended": [list(x) for x in frame.extended],
        "quirks": sorted(frame.quirks),
        **_integrity(raw),
        "accepted": True,
        "reply": _reply(Reply.ACK, reply),
    }
    _print(report)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "decode",
        help="decode one DC-09 frame and show the reply the receiver would send",
        description="Decode one DC-09 frame (with or without LF/CR; \\n, \\r and \\xNN escapes "
        "accepted) and print it as JSON with the reply the receiver would send.",
    )
    parser.add_argument(
        "frame", metavar="FRAME", help="the frame, e.g. '\\n34CB003B\"SIA-DCS\"…\\r'"
    )
    parser.add_argument("--hex", action="store_true", help="FRAME is the frame's bytes in hex")
    parser.add_argument("--key", help="AES key of the account (for encrypted frames)")
    parser.add_argument(
        "--key-format", choices=("hex", "ascii"), default="hex", help="how --key is written"
    )
    parser.add_argument(
        "--now", help="the receiver clock, ISO-8601 (UTC when no offset); default: now"
    )
    parser.add_argument(
        "--check-plain",
        action="store_true",
        help="also apply the timestamp window to unencrypted frames",
    )
    parser.set_defaults(handler=_decode)
