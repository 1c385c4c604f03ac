"""Sur-Gard automation format: the public vectors, the reader, the handshake, properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, ReceiverError, Reply
from protocols.signal import ContactIdView, SiaView
from protocols.surgard import (
    DC4,
    NEED_DATA,
    ContactIdMessage,
    Handshake,
    HandshakeReader,
    Header,
    Heartbeat,
    MessageReader,
    OtherMessage,
    SiaMessage,
    SurGardMessage,
    parse_message,
)
from tests.conftest import load_vectors


def _vector(vector_id: str) -> bytes:
    for vector in load_vectors("sg_automation.json")["vectors"]:
        if vector["id"] == vector_id:
            return bytes.fromhex(vector["message_hex"])
    raise KeyError(vector_id)


# Every vector in a format this receiver emits, with the message that must produce it.
EMITTED: list[tuple[str, SurGardMessage]] = [
    (
        "sgao_cid_example",
        ContactIdMessage(Header(1, 100), "1234", ContactIdView("E", "121", "01", "001")),
    ),
    (
        "mlr2e_cid_example",
        ContactIdMessage(Header(1, 1, 3), "1234", ContactIdView("E", "121", "01", "001")),
    ),
    (
        "sg3des_go_cid",
        ContactIdMessage(Header(1, 1, 3), "1234", ContactIdView("E", "130", "01", "001")),
    ),
    (
        "sgao_cid10",
        ContactIdMessage(Header(1, 100), "0123456789", ContactIdView("E", "130", "01", "005")),
    ),
    ("mlr2dg_heartbeat", Heartbeat(Header(1, 1, 3))),
    ("sgao_heartbeat_rr01", Heartbeat(Header(1, 0))),
    (
        "sgao_sia_S",
        SiaMessage.from_view(Header(1, 100), "1234", SiaView("BA", "012", (("ri", "1"),))),
    ),
    ("patriot_sia_example", SiaMessage(Header(1, 1, 3), "1234", "Nri1BA01")),
]


@pytest.mark.parametrize(("vector_id", "message"), EMITTED, ids=[v for v, _ in EMITTED])
def test_emitted_vectors_match_byte_for_byte(vector_id: str, message: SurGardMessage) -> None:
    """Each SG vector in a format we send is exactly the bytes our encoder puts on the wire."""
    assert message.encode() == _vector(vector_id)


@pytest.mark.parametrize(("vector_id", "message"), EMITTED, ids=[v for v, _ in EMITTED])
def test_emitted_vectors_parse_back(vector_id: str, message: SurGardMessage) -> None:
    """The sink reads each emitted vector back into the message that produced it."""
    assert parse_message(_vector(vector_id)[:-1]) == message


def test_other_sg_protocols_pass_through_and_foreign_formats_are_refused() -> None:
    """Status and basic messages reach the sink as text; 685 and look-alike strings are NAKed."""
    for vector_id in ("sgao_basic_1", "mlr2dg_oc_group", "sys5_internal_status"):
        raw = _vector(vector_id)
        assert parse_message(raw[:-1]) == OtherMessage(raw[:-1].decode())
    for vector_id in ("olarm_vendor_string", "ademco685_cid", "ademco685_okay"):
        with pytest.raises(ReceiverError) as info:
            parse_message(_vector(vector_id).rstrip(DC4))
        assert getattr(info.value, "reply", None) is Reply.NAK


def test_long_accounts_use_the_ten_digit_form() -> None:
    """An account of 5 to 10 digits is sent as protocol Q with format 58, zero-padded."""
    message = ContactIdMessage(Header(2, 7), "12345", ContactIdView("R", "130", "02", "004"))
    assert message.encode() == b"Q02007 580000012345R13002004\x14"


def test_short_accounts_are_zero_padded_to_four() -> None:
    """An account of fewer than 4 digits keeps its value, padded as Contact ID pads it."""
    message = ContactIdMessage(Header(1, 1), "12", ContactIdView("P", "602", "00", "000"))
    assert message.encode() == b"501001 180012P60200000\x14"


def test_sia_text_that_would_break_the_block_is_refused() -> None:
    """A SIA address holding ']' or '|' cannot be sent as protocol S: a local error, not garbage."""
    with pytest.raises(LocalProtocolError):
        SiaMessage.from_view(Header(1, 1), "1234", SiaView("BA", "1]2"))


def test_header_refuses_a_line_too_wide() -> None:
    """Line 1000 does not fit an RRLLL header."""
    with pytest.raises(ValueError, match="does not fit"):
        Header(1, 1000)


def test_reader_gives_each_message_and_recovers_after_garbage() -> None:
    """Messages after a malformed one are still read; the malformed one asks for a NAK."""
    reader = MessageReader()
    hb = Heartbeat(Header(1, 0))
    reader.receive_data(hb.encode() + b"5xx\x14" + hb.encode())
    assert reader.next_event() == hb
    error = reader.next_event()
    assert isinstance(error, ReceiverError)
    assert getattr(error, "reply", None) is Reply.NAK
    assert reader.next_event() == hb
    assert reader.next_event() is NEED_DATA


def test_reader_bounds_a_stream_without_dc4() -> None:
    """Bytes that never end in DC4 are dropped once they pass the limit, with a framing error."""
    reader = MessageReader(max_message=16)
    reader.receive_data(b"9" * 17)
    event = reader.next_event()
    assert isinstance(event, ReceiverError)
    assert getattr(event, "reason", None) == "oversized"
    assert reader.next_event() is NEED_DATA


def test_handshake_reader_skips_noise_and_reads_answers_in_order() -> None:
    """Echoed bytes and commands are skipped; ACK and NAK come out in the order sent."""
    reader = HandshakeReader()
    reader.receive_data(b"501100 18\x14")
    assert reader.next_event() is NEED_DATA
    reader.receive_data(b"xx\x15\x06")
    assert reader.next_event() is Handshake.NAK
    assert reader.next_event() is Handshake.ACK
    assert reader.next_event() is NEED_DATA
    assert reader.skipped == 12


# --- properties -------------------------------------------------------------------------------

HEX = "0123456789ABCDEF"
headers = st.integers(3, 9).flatmap(
    lambda digits: st.builds(
        Header,
        st.integers(0, 99),
        st.integers(0, 10 ** (digits - 2) - 1),
        st.just(digits),
    )
)
cids = st.builds(
    ContactIdView,
    st.sampled_from("ERP"),
    st.text(HEX, min_size=3, max_size=3),
    st.text(HEX, min_size=2, max_size=2),
    st.text(HEX, min_size=3, max_size=3),
)
cid_accounts = st.one_of(
    st.text("0123456789BCDEF", min_size=4, max_size=4),
    st.text("0123456789BCDEF", min_size=10, max_size=10),
)
sia_blocks = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="[]|^"), min_size=1
)
messages: Any = st.one_of(
    st.builds(ContactIdMessage, headers, cid_accounts, cids),
    st.builds(
        SiaMessage, headers, st.text("0123456789ABCDEFabc", min_size=1, max_size=16), sia_blocks
    ),
    st.builds(Heartbeat, headers),
)


def _read_all(reader: MessageReader) -> list[object]:
    events: list[object] = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    return events


@given(messages)
def test_round_trip(message: SurGardMessage) -> None:
    """Any message we can build parses back to itself."""
    assert parse_message(message.encode()[:-1]) == message


@given(st.lists(messages, min_size=1, max_size=5), st.data())
def test_any_chunking_gives_the_same_messages(
    batch: list[SurGardMessage], data: st.DataObject
) -> None:
    """However TCP or the UART splits the stream, the sink reads the same messages."""
    stream = b"".join(m.encode() for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = MessageReader()
    events: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.receive_data(stream[start:end])
        events += _read_all(reader)
    assert events == batch


@given(st.binary(max_size=600))
def test_random_bytes_only_give_messages_or_project_errors(data: bytes) -> None:
    """Line noise never raises: it yields messages or errors that carry a NAK."""
    reader = MessageReader()
    reader.receive_data(data)
    for event in _read_all(reader):
        if isinstance(event, ReceiverError):
            assert getattr(event, "reply", None) is Reply.NAK
        else:
            assert isinstance(event, ContactIdMessage | SiaMessage | Heartbeat | OtherMessage)


def test_a_header_with_a_trailing_newline_is_refused() -> None:
    """``001\\n`` is not a 3-digit header (it read as a 4-digit one, re-encoded ``0001``)."""
    with pytest.raises(ValueError, match="header must be 3 to 9 digits"):
        Header.parse("001\n")
    assert Header.parse("001").encode() == "001"
