"""DC-09 codec behaviour: replies, timestamp window, keys, tolerated quirks and refusals."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from protocols import dc09
from protocols.crc import crc16_arc
from protocols.errors import (
    ChecksumError,
    DecryptionError,
    InvalidInputError,
    MalformedFrameError,
    PayloadError,
    RemoteProtocolError,
    Reply,
    StaleTimestampError,
    UnsupportedError,
)

NOW = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
KEY = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")


def _frame(span: str, *, length: str | None = None, crc: str | None = None) -> bytes:
    body = span.encode("latin-1")
    crc_text = crc if crc is not None else f"{crc16_arc(body):04X}"
    length_text = length if length is not None else f"{len(body):04X}"
    return f"\n{crc_text}{length_text}".encode("latin-1") + body + b"\r"


def _encrypted(plaintext: bytes, head: str, key: bytes = KEY) -> bytes:
    encryptor = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return _frame(head + ciphertext.hex().upper())


def test_decimal_length_is_tolerated_and_flagged() -> None:
    """A good CRC with the length written in decimal is accepted and flagged."""
    span = '"ADM-CID"0247R4F39L0#1234[#1234|1131 01 009]'
    raw = _frame(span, length=f"{len(span):04d}")
    frame = dc09.decode_frame(raw, key=None, now=NOW)
    assert frame.quirks == frozenset({"decimal_length"})
    assert frame.header.receiver == "4F39"


def test_bad_crc_message_names_both_values() -> None:
    """A corrupted frame is refused with a message naming the written and computed CRC."""
    raw = _frame('"SIA-DCS"0001L0#1234[#1234|Nri1/BA012]', crc="0000")
    with pytest.raises(
        ChecksumError, match=r"^crc mismatch: frame says 0000, computed [0-9A-F]{4}$"
    ):
        dc09.read_header(raw)


def test_lowercase_crc_is_flagged() -> None:
    """A CRC written in lower-case hex is accepted and flagged."""
    span = '"SIA-DCS"0001L0#1234[#1234|Nri1/BA012]'
    crc = f"{crc16_arc(span.encode()):04x}"
    frame = dc09.decode_frame(_frame(span, crc=crc), key=None, now=NOW)
    assert ("lowercase_hex" in frame.quirks) is (crc != crc.upper())


def test_trailing_nuls_and_missing_line() -> None:
    """Trailing NULs after CR and a header without L are tolerated and flagged."""
    raw = _frame('"NULL"0000R1#AB12[]') + b"\x00\x00"
    frame = dc09.decode_frame(raw, key=None, now=NOW)
    assert frame.quirks == frozenset({"trailing_nul", "no_line"})
    assert (frame.header.receiver, frame.header.line, frame.account) == ("1", None, "AB12")
    assert dc09.ack(frame.header, key=None, now=NOW).endswith(b'"ACK"0000R1#AB12[]\r')


def test_account_case_is_echoed() -> None:
    """A lower-case account is kept and echoed exactly as received."""
    frame = dc09.decode_frame(_frame('"SIA-DCS"0042L0#abc12[#abc12|NBA1]'), key=None, now=NOW)
    assert frame.account == "abc12"
    assert dc09.ack(frame.header, key=None, now=NOW).endswith(b'"ACK"0042L0#abc12[]\r')


def test_unknown_token_gets_duh() -> None:
    """A token the receiver cannot handle is refused with a DUH echoing the header."""
    raw = _frame('"ACR-SF"0007R2L3#4567[#4567|1234]')
    header = dc09.read_header(raw)
    with pytest.raises(UnsupportedError) as caught:
        dc09.decode_frame(raw, key=None, now=NOW)
    assert caught.value.reply is Reply.DUH
    reply = dc09.reply_for_error(caught.value, header, now=NOW)
    assert reply is not None
    assert reply.endswith(b'"DUH"0007R2L3#4567[]\r')


@pytest.mark.parametrize(
    "span",
    [
        '"SIA-DCS"001L0#1234[#1234|NBA1]',  # 3-digit sequence
        '"SIA-DCS"0001L0[#1234|NBA1]',  # no #account
        '"SIA-DCS"0001X0#1234[#1234|NBA1]',  # neither R nor L
        '"SIA-DCS"0001L0#12-4[#12-4|NBA1]',  # account with '-'
        '"SIA-DCS"0001L0#1234',  # no data block
    ],
)
def test_unreadable_header_gets_no_reply(span: str) -> None:
    """A header that cannot be read is refused with no reply (nothing to echo in a DUH)."""
    with pytest.raises(MalformedFrameError) as caught:
        dc09.read_header(_frame(span))
    assert caught.value.reply is Reply.NONE


@pytest.mark.parametrize(
    "span",
    [
        '"SIA-DCS"0001L0#1234[#1234|NBA1',  # data block not closed
        '"SIA-DCS"0001L0#1234[#1234|NBA1]junk',
        '"SIA-DCS"0001L0#1234[#1234|NBA1]_12:00:00,13-01-2024',  # month 13
        '"SIA-DCS"0001L0#1234[#1234|NBA1]_12:00,01-01-2024',
    ],
)
def test_bad_body_gets_duh(span: str) -> None:
    """A readable header with a body that breaks the grammar gets DUH, never an ACK."""
    with pytest.raises(MalformedFrameError) as caught:
        dc09.decode_frame(_frame(span), key=None, now=NOW)
    assert caught.value.reply is Reply.DUH


def test_window_rejects_stale_encrypted_frame_with_nak() -> None:
    """An encrypted frame 41 s old is NAKed with the receiver time; 39 s old is accepted."""
    for age, accepted in ((39, True), (41, False), (-19, True), (-21, False)):
        raw = dc09.encode_frame(
            "SIA-DCS", 3, "1234", "#1234|NBA1", key=KEY, timestamp=NOW - timedelta(seconds=age)
        )
        if accepted:
            assert dc09.decode_frame(raw, key=KEY, now=NOW).timestamp == NOW - timedelta(
                seconds=age
            )
            continue
        with pytest.raises(StaleTimestampError) as caught:
            dc09.decode_frame(raw, key=KEY, now=NOW)
        assert dc09.reply_for_error(caught.value, dc09.read_header(raw), now=NOW) == dc09.nak(NOW)


def test_window_flag_policy_accepts_and_marks_late() -> None:
    """With the flag policy a stale frame is accepted and carries the quirk "late"."""
    raw = dc09.encode_frame("NULL", 0, "1234", key=KEY, timestamp=NOW - timedelta(minutes=25))
    frame = dc09.decode_frame(raw, key=KEY, now=NOW, window=dc09.TimestampWindow(policy="flag"))
    assert "late" in frame.quirks


def test_plain_timestamp_checked_only_when_asked() -> None:
    """A stale plaintext frame passes by default and is NAKed when check_plain is on."""
    raw = dc09.encode_frame("SIA-DCS", 1, "1234", "#1234|NBA1", timestamp=NOW - timedelta(hours=1))
    assert dc09.decode_frame(raw, key=None, now=NOW).quirks == frozenset()
    with pytest.raises(StaleTimestampError):
        dc09.decode_frame(raw, key=None, now=NOW, window=dc09.TimestampWindow(check_plain=True))


def test_encrypted_without_key_or_with_wrong_key_is_naked() -> None:
    """No key, or the wrong key, gives a NAK and never any decoded data.

    The pad is fixed: with a random one, one run in a few thousand decrypted to garbage that
    looked like a data block without a timestamp (the next test)."""
    raw = dc09.encode_frame(
        "SIA-DCS", 5, "1234", "#1234|NBA1", key=KEY, timestamp=NOW, rand=random.Random(5).randbytes
    )
    for key in (None, bytes(16), bytes(32)):
        with pytest.raises(DecryptionError) as caught:
            dc09.decode_frame(raw, key=key, now=NOW)
        assert caught.value.reply is Reply.NAK


def test_wrong_key_garbage_shaped_like_a_data_block_is_a_decryption_error() -> None:
    """Under a wrong key this frame decrypts to ``…|Bv»´x]``: a '|', no control character, a
    ']' and no timestamp. It is a wrong key (DecryptionError, NAK), not an encrypted frame
    "without a timestamp" (which sent the operator looking at the panel's clock)."""
    raw = (
        b'\n350A0076"*SIA-DCS"0005L0#1234[03AF2836CDF930FD24A86E4771F78B56E9172522B70713F36AE1'
        b"6F61B4A736EDDC5DEE72DA96F5A44D9CE999E5EB782D\r"
    )
    with pytest.raises(DecryptionError) as caught:
        dc09.decode_frame(raw, key=bytes(32), now=NOW)
    assert caught.value.reply is Reply.NAK
    assert "wrong key" in str(caught.value)


def test_encrypted_ack_is_encrypted_with_pipe_and_receiver_time() -> None:
    """An encrypted frame's ACK is *ACK: pad, '|' (unless switched off), the receiver time.

    The wrong-key check uses a fixed pad: with a random one, about one ACK in 30,000 decrypted
    under the wrong key to ``…|x]`` (a '|', printable text, a ']' and no timestamp), which reads
    as an encrypted reply without a timestamp (CI failed on it once)."""
    raw = dc09.encode_frame("SIA-DCS", 5, "1234", "#1234|NBA1", line="7", key=KEY, timestamp=NOW)
    header = dc09.read_header(raw)
    for pipe in (True, False):
        reply = dc09.ack(header, key=KEY, now=NOW, pipe=pipe)
        assert b'"*ACK"0005L7#1234[' in reply
        decoded = dc09.decode_reply(reply, key=KEY)
        assert (decoded.kind, decoded.timestamp, decoded.encrypted) == (Reply.ACK, NOW, True)
    with pytest.raises(DecryptionError):
        dc09.decode_reply(
            dc09.ack(header, key=KEY, now=NOW, rand=random.Random(3).randbytes), key=bytes(16)
        )


def test_pad_bytes_are_printable_without_separators() -> None:
    """Whatever the random source gives, the pad holds no '|', '[' or ']' and is printable."""
    raw = dc09.encode_frame(
        "NULL", 0, "1234", key=KEY, timestamp=NOW, rand=lambda n: bytes(range(256))[:n]
    )
    frame = dc09.decode_frame(raw, key=KEY, now=NOW)
    assert frame.data == ""
    assert frame.quirks == frozenset()


def _plain_after_pad(pad: bytes, rest: str) -> bytes:
    body = pad + rest.encode()
    assert len(body) % 16 == 0, len(body)
    return body


def test_pad_without_pipe_before_account_is_tolerated() -> None:
    """Plaintext with no '|' after the pad still yields the '#acct|...' data block."""
    rest = "#1234|Nri1/BA012]_12:00:00,01-01-2024"
    raw = _encrypted(_plain_after_pad(b"q" * (16 - len(rest) % 16), rest), '"*SIA-DCS"0001L0#1234[')
    frame = dc09.decode_frame(raw, key=KEY, now=NOW)
    assert frame.data == "#1234|Nri1/BA012"
    assert "no_pipe_after_pad" in frame.quirks


def test_pipe_inside_pad_is_tolerated() -> None:
    """A pad that breaks the rule and holds '|' still finds the block by its '#acct|'."""
    rest = "|#1234|Nri1/BA012]_12:00:00,01-01-2024"
    pad = b"a|" + b"b" * (16 - (len(rest) + 2) % 16)
    raw = _encrypted(_plain_after_pad(pad, rest), '"*SIA-DCS"0001L0#1234[')
    frame = dc09.decode_frame(raw, key=KEY, now=NOW)
    assert frame.data == "#1234|Nri1/BA012"
    assert "pipe_in_pad" in frame.quirks


def test_a_random_pad_ending_in_the_account_marker_is_still_a_standard_pad() -> None:
    """The pad is random and may hold '#': a pad that happens to end with '#<account>' before
    the standard '|#acct|' is a pad, not the no-'|' form. Before, the block was taken to start
    inside the pad and the account read as '1234|#1234': a good frame refused."""
    rest = "|#1234|Nri1/BA012]_12:00:00,01-01-2024"
    pad = b"q" * (16 - (len(rest) + 5) % 16) + b"#1234"
    raw = _encrypted(_plain_after_pad(pad, rest), '"*SIA-DCS"0001L0#1234[')
    frame = dc09.decode_frame(raw, key=KEY, now=NOW)
    assert frame.data == "#1234|Nri1/BA012"
    assert frame.quirks == frozenset()


def test_encrypted_event_without_pipe_or_account_is_duh() -> None:
    """An encrypted event with no '|' at all cannot be split from its pad: DUH."""
    rest = "Nri1/BA012]_12:00:00,01-01-2024"
    raw = _encrypted(_plain_after_pad(b"q" * (16 - len(rest) % 16), rest), '"*SIA-DCS"0001L0#1234[')
    with pytest.raises(PayloadError) as caught:
        dc09.decode_frame(raw, key=KEY, now=NOW)
    assert caught.value.reply is Reply.DUH


def test_lowercase_ciphertext_is_accepted() -> None:
    """Lower-case ciphertext hex (DC09Gen style) decrypts and is flagged."""
    raw = dc09.encode_frame("SIA-DCS", 9, "1234", "#1234|NBA1", key=KEY, timestamp=NOW)
    start = raw.index(b"[") + 1
    span = raw[9:start].decode() + raw[start:-1].decode().lower()
    frame = dc09.decode_frame(_frame(span), key=KEY, now=NOW)
    assert frame.data == "#1234|NBA1"
    assert "lowercase_hex" in frame.quirks


def test_encrypted_frame_needs_a_timestamp() -> None:
    """Decrypted text without a timestamp is NAKed so the panel resends with its clock."""
    rest = "|#1234|NBA1]"
    raw = _encrypted(_plain_after_pad(b"q" * (16 - len(rest) % 16), rest), '"*SIA-DCS"0001L0#1234[')
    with pytest.raises(StaleTimestampError):
        dc09.decode_frame(raw, key=KEY, now=NOW)


@pytest.mark.parametrize(
    ("text", "key_format", "expected"),
    [
        ("0123456789ABCDEF0123456789ABCDEF", "hex", KEY),
        ("AAAAAAAAAAAAAAAA", "ascii", b"A" * 16),
        ("A" * 48, "hex", bytes.fromhex("A" * 48)),
        ("B" * 32, "ascii", b"B" * 32),
    ],
)
def test_parse_key(text: str, key_format: str, expected: bytes) -> None:
    """Keys are read as hex digits or as ASCII bytes, per the account's key format."""
    assert dc09.parse_key(text, key_format) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "key_format"),
    [("0123", "hex"), ("G" * 32, "hex"), ("A" * 15, "ascii"), ("é" * 16, "ascii")],
)
def test_parse_key_refuses_bad_keys(text: str, key_format: str) -> None:
    """A key of the wrong size or alphabet is bad input, not a crash."""
    with pytest.raises(InvalidInputError):
        dc09.parse_key(text, key_format)  # type: ignore[arg-type]


def test_nak_reply_for_decryption_error_without_header() -> None:
    """A NAK needs no header; a DUH without a header is not sent."""
    assert dc09.reply_for_error(DecryptionError("x"), None, now=NOW) == dc09.nak(NOW)
    assert dc09.reply_for_error(UnsupportedError("x"), None, now=NOW) is None
    assert dc09.reply_for_error(ChecksumError("x"), None, now=NOW) is None


def test_non_ascii_digit_in_length_is_a_mismatch_not_a_crash() -> None:
    """A length field holding a non-ASCII digit ('¹') is flagged as a mismatch, not a crash."""
    raw = _frame('"SIA-DCS"0001L0#1234[#1234|NBA1]', length="\u00b9014")
    assert dc09.decode_frame(raw, key=None, now=NOW).quirks == frozenset({"length_mismatch"})


def test_a_wrong_key_is_always_a_nak_never_a_duh() -> None:
    """Whatever the random pad, a frame under another key decrypts to garbage and gets a NAK.

    Regression: garbage holding a stray ']' and no '|' was answered DUH one time in a few
    hundred.
    """
    rng = random.Random(7)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(3000):
        frame = dc09.encode_frame(
            "ADM-CID",
            4,
            "5678",
            "#5678|1130 01 015",
            key=b"K" * 16,
            timestamp=now,
            rand=rng.randbytes,
        )
        with pytest.raises(RemoteProtocolError) as info:
            dc09.decode_frame(frame, key=bytes(range(16)), now=now)
        assert info.value.reply is Reply.NAK, info.value


@pytest.mark.parametrize(
    "ciphertext",
    ["00" * 15 + "  ", "00" * 15 + "\t\n", " " + "00" * 15 + " ", "00" * 31 + "  "],
)
def test_whitespace_in_the_ciphertext_is_a_nak_not_a_crash(ciphertext: str) -> None:
    """``bytes.fromhex`` skips whitespace: 30 hex digits and two spaces passed the block-size
    check and AES raised ValueError. Now it is a bad ciphertext, answered NAK, in frames and
    in an ``*ACK`` a panel reads alike."""
    frame = _frame('"*SIA-DCS"0001L0#1234[' + ciphertext)
    with pytest.raises(DecryptionError) as caught:
        dc09.decode_frame(frame, key=KEY, now=NOW)
    assert (caught.value.reason, caught.value.reply) == ("bad_ciphertext", Reply.NAK)
    with pytest.raises(DecryptionError):
        dc09.decode_reply(_frame('"*ACK"0001L0#1234[' + ciphertext), key=KEY)
