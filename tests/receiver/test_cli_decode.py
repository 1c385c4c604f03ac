"""`receiver decode`: the console script on good, corrupted, encrypted and stale frames."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from receiver.cli import main

GOOD = '\\n34CB003B"SIA-DCS"1702L0#0000[#0000|Nri0/RP0000]_13:33:28,12-22-2021\\r'
ENCRYPTED = (
    '\\n16310078"*SIA-DCS"0001R1L1#1234[0292B0EB1C6C1FEF19C24011C0E1E18A83DB8138B4C5CEC51B5039E05'
    "103A4C92BD74229E24A6FBF0F8026C7AB3981B0\\r"
)
KEY = "0123456789ABCDEF0123456789ABCDEF"
# The console script's entry point, run in a fresh interpreter.
RECEIVER = [sys.executable, "-c", "import sys; from receiver.cli import main; sys.exit(main())"]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, Any, str]:
    code = main(["decode", *argv])
    out, err = capsys.readouterr()
    return code, json.loads(out) if out.strip() else None, err


def test_good_frame_as_a_console_script() -> None:
    """The installed command decodes a real frame: exit 0, fields, event and the exact ACK."""
    done = subprocess.run(
        [*RECEIVER, "decode", "--now", "2024-01-01T00:00:00Z", GOOD],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["token"], report["sequence"], report["line"], report["account"]) == (
        "SIA-DCS",
        "1702",
        "0",
        "0000",
    )
    assert report["timestamp"] == "2021-12-22T13:33:28+00:00"
    assert report["crc"] == {"form": "hex", "frame": "34CB", "computed": "34CB", "ok": True}
    assert report["length"] == {"frame": "003B", "computed": "003B", "ok": True}
    assert report["events"][0]["sia"]["code"] == "RP"
    assert report["events"][0]["cid"] == {
        "qualifier": "E",
        "code": "602",
        "group": "00",
        "zone": "000",
    }
    assert report["reply"]["kind"] == "ACK"
    assert report["reply"]["bytes"] == '\\nCAFF0012"ACK"1702L0#0000[]\\r'
    assert done.stderr == ""


def test_bad_crc_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A corrupted frame exits 2 with one stderr line naming both CRCs, and no reply."""
    code, report, err = _run(capsys, GOOD.replace("34CB", "34CC"))
    assert code == 2
    assert err == "receiver: crc mismatch: frame says 34CC, computed 34CB\n"
    assert report["reply"]["kind"] == "NONE"
    assert report["crc"]["ok"] is False


def test_encrypted_frame_with_key_and_now(capsys: pytest.CaptureFixture[str]) -> None:
    """An AES-128 frame decrypts with its hex key and clock; the reply is an encrypted *ACK."""
    code, report, err = _run(capsys, "--key", KEY, "--now", "2024-01-01T12:00:10", ENCRYPTED)
    assert (code, err) == (0, "")
    assert report["encrypted"] is True
    assert report["data"] == "#1234|Nri1/BA012"
    assert report["events"][0]["sia"]["code"] == "BA"
    assert report["events"][0]["sia"]["address"] == "012"
    assert report["reply"]["kind"] == "ACK"
    assert report["reply"]["bytes"].startswith("\\n")
    assert '"*ACK"0001R1L1#1234[' in report["reply"]["bytes"]


def test_stale_encrypted_frame_is_naked(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a matching --now the 2024 frame is stale: exit 2 and the NAK with our time."""
    code, report, err = _run(capsys, "--key", KEY, "--now", "2024-01-01T12:05:00+00:00", ENCRYPTED)
    assert code == 2
    assert err.startswith("receiver: timestamp 12:00:00,01-01-2024 is 300 s behind")
    assert err.count("\n") == 1
    assert report["reply"]["kind"] == "NAK"
    assert report["reply"]["bytes"].endswith('"NAK"0000R0L0A0[]_12:05:00,01-01-2024\\r')


def test_wrong_key_is_naked(capsys: pytest.CaptureFixture[str]) -> None:
    """The wrong key never yields events: exit 2 and a NAK."""
    code, report, _ = _run(capsys, "--key", "A" * 16, "--key-format", "ascii", ENCRYPTED)
    assert code == 2
    assert report["reply"]["kind"] == "NAK"
    assert "events" not in report


def test_bad_key_and_bad_now_are_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    """A key of the wrong size or an unreadable --now is bad input (exit 2, one line)."""
    assert _run(capsys, "--key", "0123", GOOD)[0] == 2
    code = main(["decode", "--now", "yesterday", GOOD])
    assert code == 2
    assert capsys.readouterr().err == "receiver: --now 'yesterday' is not an ISO-8601 time\n"


def test_binary_crc_frame_from_hex(capsys: pytest.CaptureFixture[str]) -> None:
    """A binary-CRC frame given as hex decodes and is answered with a binary CRC."""
    frame = (
        "0AC55B30303241224E554C4C223030303052384C302334313231335B5D5F32313A30303A31302C30322D3230"
        "2D323032340D"
    )
    code, report, _ = _run(capsys, "--hex", frame)
    assert code == 0
    assert report["quirks"] == ["binary_crc"]
    assert report["crc"]["form"] == "binary"
    assert report["reply"]["bytes"].endswith('0015"ACK"0000R8L0#41213[]\\r')


def test_reply_frame_is_shown_as_a_reply(capsys: pytest.CaptureFixture[str]) -> None:
    """A receiver's NAK given to decode is read as the panel would read it."""
    code, report, _ = _run(capsys, '\\nE4410025"NAK"0000R0L0A0[]_16:20:01,09-24-2025\\r')
    assert code == 0
    assert report["reply_frame"]["kind"] == "NAK"
    assert report["reply_frame"]["timestamp"] == "2025-09-24T16:20:01+00:00"
