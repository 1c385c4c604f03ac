"""Contact ID: the 16-digit message with its checksum, and the DC-09 ADM-CID payload."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.contact_id import (
    ContactIdMessage,
    build_message,
    checksum_digit,
    format_adm_cid,
    parse_adm_cid,
    parse_message,
)
from protocols.errors import (
    ChecksumError,
    LocalProtocolError,
    MalformedFrameError,
    PayloadError,
    RemoteProtocolError,
    Reply,
)
from protocols.signal import ContactIdView
from tests.conftest import load_vectors

CID_DIGITS = "0123456789BCDEF"


def _vectors(*sections: str) -> list[Any]:
    data = load_vectors("contact_id.json")
    return [pytest.param(v, id=v["id"]) for s in sections for v in data[s]]


@pytest.mark.parametrize("vector", _vectors("public_vectors", "derived_vectors"))
def test_vector_check_digit(vector: dict[str, Any]) -> None:
    """Every published message's check digit is the one our checksum rule computes."""
    digits = vector["digits"]
    assert checksum_digit(digits[:15]) == digits[15]


@pytest.mark.parametrize("vector", _vectors("public_vectors", "derived_vectors"))
def test_vector_parses_or_is_refused_for_its_fields(vector: dict[str, Any]) -> None:
    """A vector with a good checksum parses and rebuilds to the same 16 digits, unless its fields
    are not a Contact ID event (the B-F exercise tuple has type 56 and qualifier 7)."""
    digits = vector["digits"]
    if digits[4:6] in ("18", "98") and digits[6] in "136":
        msg = parse_message(digits)
        assert build_message(msg) == digits
        assert parse_message(vector.get("formatted", vector.get("cid", digits))) == msg
    else:
        with pytest.raises(MalformedFrameError):
            parse_message(digits)


def test_cooper_example_fields() -> None:
    """The Cooper manual's example reads as account 1234, new tamper, group 01, zone 015."""
    msg = parse_message("1234 18 1137 01 015 2")
    assert msg == ContactIdMessage("1234", "18", ContactIdView("E", "137", "01", "015"))
    restore = parse_message("123418313701015F")
    assert restore.event.qualifier == "R"


def test_negative_bad_checksum() -> None:
    """The wrong check digit is a ChecksumError that names the right one and asks no reply."""
    with pytest.raises(ChecksumError) as info:
        parse_message(load_vectors("contact_id.json")["negative_vectors"][0]["digits"])
    assert "should be 8" in info.value.message
    assert info.value.reply is Reply.NONE


def test_negative_hex_a() -> None:
    """Hex A is not a Contact ID digit: the message is malformed, not a checksum failure."""
    with pytest.raises(MalformedFrameError) as info:
        parse_message(load_vectors("contact_id.json")["negative_vectors"][1]["digits"])
    assert info.value.reason == "bad_digit"


def test_computed_zero_is_sent_as_f() -> None:
    """A computed check value of 0 goes on the wire as F (the Cooper restore example)."""
    assert checksum_digit("123418313701015") == "F"


def test_build_refuses_hex_a() -> None:
    """Building a message with an A digit (legal in a ContactIdView) is refused locally."""
    msg = ContactIdMessage("1234", "18", ContactIdView("E", "1A0", "01", "001"))
    with pytest.raises(LocalProtocolError):
        build_message(msg)


cid_digit = st.sampled_from(CID_DIGITS)
messages = st.builds(
    ContactIdMessage,
    account=st.text(cid_digit, min_size=4, max_size=4),
    message_type=st.sampled_from(["18", "98"]),
    event=st.builds(
        ContactIdView,
        qualifier=st.sampled_from("ERP"),
        code=st.text(cid_digit, min_size=3, max_size=3),
        group=st.text(cid_digit, min_size=2, max_size=2),
        zone=st.text(cid_digit, min_size=3, max_size=3),
    ),
)


@given(messages)
def test_message_round_trip(msg: ContactIdMessage) -> None:
    """parse(build(x)) == x for any 16-digit message."""
    wire = build_message(msg)
    assert len(wire) == 16
    assert parse_message(wire) == msg


@given(messages, st.integers(0, 15), st.sampled_from(CID_DIGITS))
def test_one_changed_digit_fails_checksum(msg: ContactIdMessage, pos: int, new: str) -> None:
    """Changing any one digit always breaks the mod-15 sum (values 1-15 never differ by 15)."""
    wire = build_message(msg)
    if wire[pos] == new:
        return
    with pytest.raises(ChecksumError):
        parse_message(wire[:pos] + new + wire[pos + 1 :])


@given(st.text(max_size=24))
def test_random_message_text_raises_only_project_errors(text: str) -> None:
    """Random text never raises anything but a RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        parse_message(text)


# ADM-CID payloads seen in the DC-09 vectors (dc09_frames.json, dc09_encrypted.json).
ADM_CID_REAL = [
    ("#1234|1131 01 009", "1234", ContactIdView("E", "131", "01", "009")),
    ("#XTRM189|1401 01 141", "XTRM189", ContactIdView("E", "401", "01", "141")),
    ("#1001|3354 00 004", "1001", ContactIdView("R", "354", "00", "004")),
    ("#12345A|1110 00 129", "12345A", ContactIdView("E", "110", "00", "129")),
    ("10064|1602 00 000", "10064", ContactIdView("E", "602", "00", "000")),
    ("#1234|1130 01 015", "1234", ContactIdView("E", "130", "01", "015")),
    ("1131 01 009", None, ContactIdView("E", "131", "01", "009")),
    ("|1131 01 009", None, ContactIdView("E", "131", "01", "009")),
    ("#1234|1131  01  009 ", "1234", ContactIdView("E", "131", "01", "009")),
    ("#1234|113101009", "1234", ContactIdView("E", "131", "01", "009")),
    ("#1234|6302 00 000", "1234", ContactIdView("P", "302", "00", "000")),
]


@pytest.mark.parametrize(("data", "account", "cid"), ADM_CID_REAL)
def test_adm_cid_variants(data: str, account: str | None, cid: ContactIdView) -> None:
    """Real ADM-CID payloads, with or without '#', account or single spaces, all parse."""
    assert parse_adm_cid(data) == (account, cid)


@pytest.mark.parametrize(
    "data", ["", "#1234|", "#1234|2131 01 009", "#1234|1131 01 0G9", "#12 34|1131 01 009"]
)
def test_adm_cid_refused(data: str) -> None:
    """Data that is not 'QXYZ GG CCC' is a PayloadError, which answers DUH."""
    with pytest.raises(PayloadError) as info:
        parse_adm_cid(data)
    assert info.value.reply is Reply.DUH


def test_format_adm_cid_bytes() -> None:
    """The simulator's ADM-CID payload is exactly '#acct|QXYZ GG CCC'."""
    assert format_adm_cid("1234", ContactIdView("R", "401", "02", "003")) == "#1234|3401 02 003"


hex_digit = st.sampled_from("0123456789ABCDEF")
views = st.builds(
    ContactIdView,
    qualifier=st.sampled_from("ERP"),
    code=st.text(hex_digit, min_size=3, max_size=3),
    group=st.text(hex_digit, min_size=2, max_size=2),
    zone=st.text(hex_digit, min_size=3, max_size=3),
)
accounts = st.none() | st.text(st.sampled_from("0123456789ABCDEFXYZabc"), min_size=1, max_size=16)


@given(accounts, views)
def test_adm_cid_round_trip(account: str | None, cid: ContactIdView) -> None:
    """parse_adm_cid(format_adm_cid(a, x)) == (a, x)."""
    assert parse_adm_cid(format_adm_cid(account, cid)) == (account, cid)


@given(st.text(max_size=30))
def test_random_adm_cid_raises_only_project_errors(text: str) -> None:
    """Random text never raises anything but a RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        parse_adm_cid(text)


def test_format_adm_cid_refuses_an_account_with_a_trailing_newline() -> None:
    """A simulator handed ``1234\\n`` gets an error, not a data block with a newline in it."""
    with pytest.raises(LocalProtocolError, match="1-16 letters or digits"):
        format_adm_cid("1234\n", ContactIdView("E", "130", "01", "001"))
