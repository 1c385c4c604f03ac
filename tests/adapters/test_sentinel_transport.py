"""Sentinel TCP framing: exact frames, error recovery, chunking and noise properties."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.sentinel.transport import (
    NEED_DATA,
    Ack,
    Auth,
    AuthAccepted,
    AuthRefused,
    FrameReader,
    Heartbeat,
    Message,
    Nak,
    PackageFrame,
    decode_body,
    encode,
)
from protocols.errors import FramingError, MalformedFrameError, ReceiverError
from tests.adapters.test_sentinel_package import build, make_signal


def _read_all(reader: FrameReader) -> list[object]:
    events: list[object] = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_control_frames_on_the_wire() -> None:
    """Each control message is STX, ASCII words, ETX."""
    assert encode(Auth("s3cret")) == b"\x02AUTH s3cret\x03"
    assert encode(AuthAccepted()) == b"\x02AUTHOK\x03"
    assert encode(AuthRefused("wrong passkey")) == b"\x02AUTHNAK wrong passkey\x03"
    assert encode(Ack("pkg-1")) == b"\x02ACK pkg-1\x03"
    assert encode(Nak("pkg-1", "disk full")) == b"\x02NAK pkg-1 disk full\x03"
    assert encode(Heartbeat()) == b"\x02HB\x03"


def test_package_frame_is_the_document_verbatim() -> None:
    """A package travels as STX + the XML bytes + ETX, and reads back unchanged."""
    xml = build(make_signal())
    frame = encode(PackageFrame(xml))
    assert frame == b"\x02" + xml + b"\x03"
    reader = FrameReader()
    reader.receive_data(frame)
    assert reader.next_event() == PackageFrame(xml)


def test_nak_reasons_are_made_printable() -> None:
    """An error message quoting control bytes cannot break the frame."""
    assert encode(Nak.because("p", "bad \x03 byte")) == b"\x02NAK p bad ? byte\x03"


def test_reader_reports_garbage_and_keeps_the_next_frame() -> None:
    """Junk between frames and an unknown word are errors; the ACK after them still arrives."""
    reader = FrameReader()
    reader.receive_data(b"\r\nxyz\x02WHAT\x03\x02ACK p1\x03")
    events = _read_all(reader)
    assert isinstance(events[0], FramingError)
    assert events[0].raw == b"\r\nxyz"
    assert isinstance(events[1], MalformedFrameError)
    assert events[2] == Ack("p1")


def test_frame_cut_by_a_new_stx() -> None:
    """A frame interrupted by STX is reported, and the new frame is read."""
    reader = FrameReader()
    reader.receive_data(b"\x02ACK p\x02HB\x03")
    events = _read_all(reader)
    assert isinstance(events[0], FramingError)
    assert events[1] == Heartbeat()


def test_oversized_frame_is_dropped() -> None:
    """A frame longer than the limit is an 'oversized' framing error, not unbounded memory."""
    reader = FrameReader(max_frame=8)
    reader.receive_data(b"\x02" + b"A" * 20)
    event = reader.next_event()
    assert isinstance(event, FramingError)
    assert event.reason == "oversized"


def test_whitespace_between_frames_is_ignored() -> None:
    """A person testing with telnet may press Enter between frames."""
    reader = FrameReader()
    reader.receive_data(b"\x02HB\x03\r\n \x02HB\x03")
    assert _read_all(reader) == [Heartbeat(), Heartbeat()]


def test_bad_ack_is_malformed() -> None:
    """An ACK without a valid package id is not mistaken for an acknowledgement."""
    with pytest.raises(MalformedFrameError):
        decode_body(b"ACK ")


# --- properties -------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True)
reasons = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30)
xml_frames = st.sampled_from(
    [build(make_signal(), "a1"), build(make_signal(cid=None, channel=None), "b2")]
).map(PackageFrame)
messages: Any = st.one_of(
    st.builds(Auth, st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)),
    st.just(AuthAccepted()),
    st.builds(AuthRefused, reasons),
    st.builds(Ack, ids),
    st.builds(Nak, ids, reasons),
    st.just(Heartbeat()),
    xml_frames,
)


@given(messages)
def test_round_trip(message: Message) -> None:
    """Every message reads back as itself."""
    reader = FrameReader()
    reader.receive_data(encode(message))
    assert _read_all(reader) == [message]


@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_any_chunking_gives_the_same_messages(batch: list[Message], data: st.DataObject) -> None:
    """However TCP splits the stream, the same messages come out in the same order."""
    stream = b"".join(encode(m) for m in batch)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = FrameReader()
    events: list[object] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        reader.receive_data(stream[start:end])
        events += _read_all(reader)
    assert events == batch


@given(st.binary(max_size=400))
def test_random_bytes_give_only_messages_or_project_errors(data: bytes) -> None:
    """Noise gives only messages or project errors; the reader never raises."""
    reader = FrameReader(max_frame=128)
    reader.receive_data(data)
    for event in _read_all(reader):
        assert isinstance(event, ReceiverError | Message)
