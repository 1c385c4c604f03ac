"""Every public DC-09 vector: frames, encrypted frames and receiver responses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protocols import dc09
from protocols.errors import ChecksumError, DecryptionError, Reply
from tests.conftest import load_vectors

REPLY_TOKENS = ('"ACK"', '"NAK"', '"DUH"')


def _raw(vector: dict[str, Any]) -> bytes:
    if "frame_hex" in vector:
        return bytes.fromhex(vector["frame_hex"])
    return bytes(vector["frame"].encode("latin-1"))


def _frames() -> list[Any]:
    return list(load_vectors("dc09_frames.json")["vectors"])


def _encrypted() -> list[Any]:
    data = load_vectors("dc09_encrypted.json")
    return [*data["public_vectors"], *data["derived_vectors"]]


def _responses() -> list[Any]:
    data = load_vectors("dc09_responses.json")
    return [*data["public_vectors"], *data["derived_vectors"]]


def _ids(vector: dict[str, Any]) -> str:
    return str(vector["id"])


@pytest.mark.parametrize("vector", _frames(), ids=_ids)
def test_frame_integrity(vector: dict[str, Any]) -> None:
    """The CRC and length read from each frame and computed over it are the published ones."""
    check = dc09.integrity(_raw(vector))
    assert check.crc_computed == vector["crc_computed"]
    assert check.crc_ok is vector["crc_ok"]
    assert check.length_frame == vector["len_field"]
    assert check.length_computed == vector["len_computed"]
    assert check.length_ok is vector["len_ok"]


@pytest.mark.parametrize("vector", _frames(), ids=_ids)
def test_frame_decode(vector: dict[str, Any]) -> None:
    """A good CRC decodes (a wrong length only flags it); a bad CRC is refused with no reply."""
    raw = _raw(vector)
    now = datetime(2024, 1, 1, tzinfo=UTC)
    if not vector["crc_ok"]:
        with pytest.raises(ChecksumError) as caught:
            dc09.decode_frame(raw, key=None, now=now)
        assert caught.value.reply is Reply.NONE
        assert caught.value.message == (
            f"crc mismatch: frame says {vector['crc_field']}, computed {vector['crc_computed']}"
        )
        assert dc09.reply_for_error(caught.value, None, now=now) is None
        return
    span = vector["body_crc_span"]
    if any(span.startswith(t) for t in REPLY_TOKENS):
        reply = dc09.decode_reply(raw)
        assert reply.kind.value == span[1:4]
        return
    frame = dc09.decode_frame(raw, key=None, now=now)
    bracket = span.index("[")
    assert span.startswith(f'"{frame.token}"{frame.sequence}')
    assert span[:bracket].endswith(f"#{frame.account}")
    assert f"[{frame.data}]" in span
    assert ("length_mismatch" in frame.quirks) is (not vector["len_ok"])
    assert ("binary_crc" in frame.quirks) is ("frame_hex" in vector)
    assert frame.raw == raw


def test_real_frame_fields() -> None:
    """The node-red capture reads as SIA-DCS 1702, line 0, account 0000, at its UTC time."""
    vector = next(v for v in _frames() if v["id"] == "nr_issue2_real_RP")
    frame = dc09.decode_frame(_raw(vector), key=None, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert frame.header == dc09.Dc09Header(
        token="SIA-DCS",
        encrypted=False,
        sequence="1702",
        receiver=None,
        line="0",
        account="0000",
        crc_form="hex",
    )
    assert frame.data == "#0000|Nri0/RP0000"
    assert frame.timestamp == datetime(2021, 12, 22, 13, 33, 28, tzinfo=UTC)
    assert frame.quirks == frozenset()


def test_extended_data_kept_in_order() -> None:
    """Extended data blocks come out as (ID, value) pairs in the order sent."""
    vector = next(v for v in _frames() if v["id"] == "jeedom_plain_xdata")
    frame = dc09.decode_frame(_raw(vector), key=None, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert frame.extended == (("X", "012W34.1"), ("Y", "045N12.2"))
    assert (frame.header.receiver, frame.header.line) == ("1", "232")


@pytest.mark.parametrize("vector", _encrypted(), ids=_ids)
def test_encrypted_vectors(vector: dict[str, Any]) -> None:
    """Frames with a known key decrypt to the published plaintext; the others are NAKed."""
    raw = _raw(vector)
    key = bytes.fromhex(vector["key_hex"]) if vector.get("key_hex") else None
    assert dc09.integrity(raw).crc_ok
    if vector["frame"].lstrip("\n")[8:].startswith('"*ACK"'):
        reply = dc09.decode_reply(raw, key=key)
        assert reply.encrypted
        assert reply.timestamp is not None
        assert reply.timestamp.strftime("%H:%M:%S,%m-%d-%Y") == vector["plaintext"][-19:]
        return
    header = dc09.read_header(raw)
    plaintext: str | None = vector["plaintext"]
    good = key is not None and vector.get("decrypt_ok", True) and plaintext and "]_" in plaintext
    if not good or plaintext is None:
        with pytest.raises(DecryptionError) as caught:
            dc09.decode_frame(raw, key=key, now=datetime(2024, 1, 1, tzinfo=UTC))
        assert caught.value.reply is Reply.NAK
        nak = dc09.reply_for_error(caught.value, header, now=datetime(2024, 1, 1, tzinfo=UTC))
        assert nak is not None
        assert nak.endswith(b'0025"NAK"0000R0L0A0[]_00:00:00,01-01-2024\r')
        assert dc09.decode_reply(nak).kind is Reply.NAK
        return
    stamp = plaintext[-19:]
    when = datetime.strptime(stamp, "%H:%M:%S,%m-%d-%Y").replace(tzinfo=UTC)
    frame = dc09.decode_frame(raw, key=key, now=when + timedelta(seconds=5))
    assert frame.timestamp == when
    after_pad = (
        plaintext.split("|", 1)[1] if "|" in plaintext else plaintext[plaintext.index("]") :]
    )
    assert after_pad.startswith(frame.data + "]")
    assert frame.encrypted
    assert ("no_pipe_after_pad" in frame.quirks) is ("|" not in plaintext)


def _derived_events() -> list[Any]:
    return [v for v in _encrypted() if v["id"].startswith("derived_") and "*ACK" not in v["frame"]]


@pytest.mark.parametrize("vector", _derived_events(), ids=_ids)
def test_encrypted_vectors_reencode(vector: dict[str, Any]) -> None:
    """Derived frames are rebuilt byte for byte by the panel encoder given the same pad."""
    key = bytes.fromhex(vector["key_hex"])
    frame = dc09.decode_frame(_raw(vector), key=key, now=datetime(2024, 1, 1, 12, tzinfo=UTC))
    rebuilt = dc09.encode_frame(
        frame.token,
        frame.sequence,
        frame.account,
        frame.data,
        receiver=frame.header.receiver,
        line=frame.header.line,
        key=key,
        timestamp=frame.timestamp,
        rand=lambda n: b"p" * n,
    )
    assert rebuilt == _raw(vector)


def test_encrypted_ack_vector_rebuilt() -> None:
    """The *ACK for the DC09Gen example is rebuilt byte for byte with the same pad and time."""
    vector = next(v for v in _encrypted() if v["id"] == "derived_ack_for_dc09gen")
    header = dc09.Dc09Header("SIA-DCS", True, "9876", "579BDF", "789ABC", "12345A", "hex")
    now = datetime(2006, 2, 15, 13, 14, 20, tzinfo=UTC)
    key = bytes.fromhex(vector["key_hex"])
    assert dc09.ack(header, key=key, now=now, rand=lambda n: b"p" * n) == _raw(vector)


@pytest.mark.parametrize("vector", _responses(), ids=_ids)
def test_response_vectors(vector: dict[str, Any]) -> None:
    """Every response frame reads back as its kind, echoing sequence, R, L and account."""
    raw = _raw(vector)
    token = raw[raw.index(b'"') + 1 : raw.index(b'"', raw.index(b'"') + 1)].decode()
    if token == "RSP":
        with pytest.raises(Exception, match="not a reply"):
            dc09.decode_reply(raw)
        return
    reply = dc09.decode_reply(raw)
    assert reply.kind is Reply(token)
    assert dc09.integrity(raw).crc_ok
    assert dc09.integrity(raw).length_ok


def _by_id(vectors: list[Any], ident: str) -> dict[str, Any]:
    return next(v for v in vectors if v["id"] == ident)


@pytest.mark.parametrize(
    ("frame_id", "reply_id"),
    [
        ("nr_issue2_real_RP", "ack_nr_issue2"),
        ("hikvision_cid_602", "ack_hikvision"),
        ("cp_cid_1602", "ack_cp_cid_1602"),
        ("jeedom_plain_xdata", "ack_jeedom_plain"),
    ],
)
def test_ack_bytes(frame_id: str, reply_id: str) -> None:
    """The ACK for a frame is exactly the published ACK: same sequence, R, L and account."""
    header = dc09.read_header(_raw(_by_id(_frames(), frame_id)))
    expected = _raw(_by_id(_responses(), reply_id))
    assert dc09.ack(header, key=None, now=datetime(2024, 1, 1, tzinfo=UTC)) == expected


def test_duh_and_nak_bytes() -> None:
    """DUH echoes the header; NAK is the standard layout carrying the receiver time."""
    header = dc09.read_header(_raw(_by_id(_frames(), "jeedom_plain_xdata")))
    assert dc09.duh(header) == _raw(_by_id(_responses(), "duh_jeedom"))
    now = datetime(2026, 9, 25, 14, 12, 30, tzinfo=UTC)
    assert dc09.nak(now) == _raw(_by_id(_responses(), "nak_template"))


def test_binary_crc_frame_gets_binary_crc_ack() -> None:
    """A frame sent with a 2-byte binary CRC is answered in the same form."""
    raw = _raw(_by_id(_frames(), "opax_null_binary_crc"))
    frame = dc09.decode_frame(raw, key=None, now=datetime(2024, 2, 20, 21, 0, 10, tzinfo=UTC))
    reply = dc09.ack(frame.header, key=None, now=datetime(2024, 2, 20, 21, 0, 10, tzinfo=UTC))
    assert reply[3:7] == b"0015"
    assert reply[7:] == b'"ACK"0000R8L0#41213[]\r'
    assert dc09.decode_reply(reply).kind is Reply.ACK
