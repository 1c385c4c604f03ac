"""Tests for the video bridge protocol: wire bytes, the fast path against construct, the
sans-IO connection's states, and resynchronisation after garbage."""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.bridge import (
    CHANNEL_KINDS,
    EITHER_KINDS,
    HEADER_SIZE,
    MAX_GARBAGE_REPORT,
    NEED_DATA,
    TRANSITIONS,
    USER_KINDS,
    Ack,
    ArmState,
    BridgeConnection,
    BridgeEvent,
    BridgeMessage,
    BridgeState,
    Envelope,
    Event,
    EventKind,
    Heartbeat,
    Hello,
    Nak,
    NakReason,
    NotAuthenticatedError,
    decode_frame,
    decode_frame_spec,
    encode_frame,
    encode_frame_spec,
    redact_token,
)
from protocols.errors import (
    ChecksumError,
    FramingError,
    LengthError,
    LocalProtocolError,
    MalformedFrameError,
    PayloadError,
    RemoteProtocolError,
    Reply,
    UnsupportedError,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "bridge-protocol.md"
MAC = bytes.fromhex("02A1B2C3D4E5")
OTHER_MAC = bytes.fromhex("02FFFFFFFFFF")
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
HELLO = Hello("CKB312-0001", "CKB312", 12, "2.4.1", "s3cret")

# The examples printed in docs/bridge-protocol.md, in order.
EXAMPLES: dict[str, Envelope] = {
    "HELLO": Envelope(bridge_id=MAC, sequence=1, device_time=T0, body=HELLO),
    "ACK": Envelope(
        bridge_id=MAC, sequence=1, device_time=T0 + timedelta(milliseconds=50), body=Ack(1)
    ),
    "EVENT (input alarm)": Envelope(
        bridge_id=MAC,
        sequence=2,
        device_time=T0 + timedelta(seconds=5),
        body=Event(channel=2, kind=EventKind.INPUT_ALARM),
    ),
    "EVENT (disarm by user)": Envelope(
        bridge_id=MAC,
        sequence=3,
        device_time=T0 + timedelta(seconds=9),
        body=Event(channel=0, kind=EventKind.DISARM, user=7, text="app"),
    ),
    "HEARTBEAT": Envelope(
        bridge_id=MAC, sequence=4, device_time=None, body=Heartbeat(ArmState.ARMED, "2.4.1")
    ),
    "NAK": Envelope(
        bridge_id=MAC,
        sequence=2,
        device_time=T0 + timedelta(seconds=10),
        body=Nak(5, NakReason.BAD_CHANNEL),
    ),
}


def hex_dump(frame: bytes) -> str:
    """The dump format used in the protocol document: offset, 16 bytes per line."""
    return "\n".join(
        f"{offset:04x}  {frame[offset : offset + 16].hex(' ')}"
        for offset in range(0, len(frame), 16)
    )


# ---- strategies -----------------------------------------------------------------------------

_chars = st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00\r\n")


def texts(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(_chars, min_size=1, max_size=max_bytes).filter(
        lambda s: len(s.encode("utf-8")) <= max_bytes
    )


@st.composite
def events(draw: st.DrawFn) -> Event:
    kind = draw(st.sampled_from(EventKind))
    if kind in CHANNEL_KINDS:
        channel = draw(st.integers(1, 16))
    elif kind in EITHER_KINDS:
        channel = draw(st.integers(0, 16))
    else:
        channel = 0
    user = draw(st.none() | st.integers(0, 0xFFFE)) if kind in USER_KINDS else None
    text = draw(st.none() | texts(255))
    return Event(channel=channel, kind=kind, user=user, text=text)


hellos = st.builds(
    Hello, texts(64), texts(32), st.sampled_from((4, 8, 12, 16)), texts(32), texts(128)
)
heartbeats = st.builds(Heartbeat, st.sampled_from(ArmState), texts(32))
acks = st.builds(Ack, st.integers(0, 0xFFFF_FFFF))
naks = st.builds(Nak, st.integers(0, 0xFFFF_FFFF), st.sampled_from(NakReason))
bodies: st.SearchStrategy[BridgeMessage] = st.one_of(hellos, events(), heartbeats, acks, naks)
device_times = st.none() | st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 1, 1), timezones=st.just(UTC)
)


def envelopes(body: st.SearchStrategy[BridgeMessage] = bodies) -> st.SearchStrategy[Envelope]:
    return st.builds(
        Envelope,
        bridge_id=st.binary(min_size=6, max_size=6),
        sequence=st.integers(0, 0xFFFF_FFFF),
        device_time=device_times,
        body=body,
    )


def bridge_stream(messages: Sequence[Event | Heartbeat]) -> tuple[bytes, list[Envelope]]:
    """A bridge's HELLO then ``messages``, as bytes and as the envelopes sent."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    hello = Hello("S1", "CKB316", 16, "1.0", "tok")
    sent = [bridge.envelope(hello, now=T0)]
    sent += [bridge.envelope(m, now=T0 + timedelta(seconds=i)) for i, m in enumerate(messages)]
    return b"".join(bridge.send(e) for e in sent), sent


def read_all(receiver: BridgeConnection, chunks: Iterable[bytes]) -> list[BridgeEvent]:
    """Feed chunks then EOF; ACK every HELLO like a receiver that knows the bridge."""
    out: list[BridgeEvent] = []

    def drain() -> None:
        while True:
            event = receiver.next_event()
            if event is NEED_DATA:
                return
            out.append(event)
            if isinstance(event, Envelope) and isinstance(event.body, Hello):
                receiver.ack(event, now=T0)

    for chunk in chunks:
        receiver.receive_data(chunk)
        drain()
    receiver.receive_data(b"")
    drain()
    return out


def split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def state_of(conn: BridgeConnection) -> BridgeState:
    """The connection's state, read through a call so that mypy does not narrow it."""
    return conn.state


def describe(events: list[BridgeEvent]) -> list[object]:
    """Events compared by what a receiver would act on (type, reason, raw bytes)."""
    return [
        (type(e).__name__, e.reason, e.raw) if isinstance(e, RemoteProtocolError) else e
        for e in events
    ]


# ---- wire bytes -----------------------------------------------------------------------------


def test_event_frame_bytes_are_exactly_as_documented() -> None:
    """An input alarm on channel 2 is 24 header bytes, 5 body bytes and the CRC-32."""
    frame = encode_frame(EXAMPLES["EVENT (input alarm)"])
    header = bytes.fromhex("5642 01 02 0005 02a1b2c3d4e5 00000002 0000018f3406b188")
    body = bytes.fromhex("02 01 ffff 00")
    assert frame[:HEADER_SIZE] == header
    assert frame[HEADER_SIZE:-4] == body
    assert frame[-4:] == struct.pack(">I", zlib.crc32(header + body))


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_protocol_document_hex_dumps_match_the_codec(name: str) -> None:
    """Every hex dump in docs/bridge-protocol.md is what the codec builds and parses back."""
    doc = DOC.read_text(encoding="utf-8")
    envelope = EXAMPLES[name]
    frame = encode_frame(envelope)
    section = re.search(rf"### {re.escape(name)}\n(.*?)(?=\n### |\n## |\Z)", doc, re.S)
    assert section is not None, f"no section '### {name}' in the protocol document"
    assert hex_dump(frame) in section.group(1)
    assert frame == encode_frame_spec(envelope)
    assert decode_frame(frame) == envelope


# ---- fast path against the construct definition --------------------------------------------


@given(envelopes())
def test_fast_path_builds_the_same_bytes_as_the_construct_definition(envelope: Envelope) -> None:
    """The struct fast path and the construct definition agree byte for byte."""
    assert encode_frame(envelope) == encode_frame_spec(envelope)


@given(envelopes())
def test_round_trip_through_both_decoders(envelope: Envelope) -> None:
    """decode(encode(x)) == x, field for field, with the fast path and with construct."""
    frame = encode_frame(envelope)
    fast = decode_frame(frame)
    spec = decode_frame_spec(frame)
    assert fast == envelope
    assert spec == envelope
    assert fast.raw == spec.raw == frame


@given(st.binary(max_size=80))
def test_random_frames_raise_only_project_errors_and_the_same_in_both_decoders(
    data: bytes,
) -> None:
    """Random bytes given as one frame raise a RemoteProtocolError, never anything else."""
    results: list[object] = []
    for decode in (decode_frame, decode_frame_spec):
        try:
            results.append(decode(data))
        except RemoteProtocolError as exc:
            results.append(type(exc))
    # Both refuse alike (the class may differ only between framing and checksum).
    assert all(r in (FramingError, ChecksumError) for r in results) or results[0] == results[1]


@given(envelopes(st.one_of(events(), heartbeats, acks)), st.data())
def test_a_valid_crc_over_a_damaged_body_is_refused_alike(
    envelope: Envelope, data: st.DataObject
) -> None:
    """A body byte changed and the CRC recomputed: both decoders accept or refuse alike."""
    frame = bytearray(encode_frame(envelope))
    index = data.draw(st.integers(HEADER_SIZE, len(frame) - 5))
    frame[index] = data.draw(st.integers(0, 255))
    frame[-4:] = struct.pack(">I", zlib.crc32(frame[:-4]))
    outcomes: list[object] = []
    for decode in (decode_frame, decode_frame_spec):
        try:
            outcomes.append(decode(bytes(frame)))
        except PayloadError as exc:
            outcomes.append((exc.reason, exc.reply))
    assert outcomes[0] == outcomes[1]


# ---- streams --------------------------------------------------------------------------------

stream_messages = st.lists(
    st.one_of(events().filter(lambda e: e.channel <= 16), heartbeats), max_size=8
)


@given(stream_messages, st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_of_a_stream_gives_the_same_messages(
    messages: list[Event | Heartbeat], cuts: list[int]
) -> None:
    """Whole, byte by byte, or cut anywhere: the receiver reads the same messages in order."""
    data, sent = bridge_stream(messages)
    whole = read_all(BridgeConnection("receiver"), [data])
    chunked = read_all(BridgeConnection("receiver"), split(data, cuts))
    assert whole == sent
    assert chunked == sent
    assert [e.raw for e in whole if isinstance(e, Envelope)] == [encode_frame(e) for e in sent]


def test_byte_by_byte_gives_the_same_messages() -> None:
    """Feeding one byte at a time yields the same messages as one read."""
    data, sent = bridge_stream([Event(channel=1, kind=EventKind.INPUT_ALARM), Heartbeat(0, "1")])
    assert read_all(BridgeConnection("receiver"), [bytes([b]) for b in data]) == sent


garbage = st.binary(max_size=60).filter(lambda b: b"V" not in b)


@given(stream_messages, st.lists(garbage, min_size=1), st.lists(st.integers(0, 10_000)))
def test_good_messages_after_garbage_still_come_out(
    messages: list[Event | Heartbeat], junk: list[bytes], cuts: list[int]
) -> None:
    """Garbage before and between frames is reported as FramingError; every frame comes out."""
    _, sent = bridge_stream(messages)
    frames = [encode_frame(e) for e in sent]
    mixed = b"".join(j + f for j, f in zip(junk * (len(frames) + 1), frames, strict=False))
    mixed += junk[-1]
    whole = read_all(BridgeConnection("receiver"), [mixed])
    chunked = read_all(BridgeConnection("receiver"), split(mixed, cuts))
    assert [e for e in whole if isinstance(e, Envelope)] == sent
    assert all(isinstance(e, Envelope | FramingError) for e in whole)
    expected_garbage = b"".join((junk * (len(frames) + 1))[: len(frames)]) + junk[-1]
    assert b"".join(e.raw for e in whole if isinstance(e, FramingError)) == expected_garbage
    assert describe(chunked) == describe(whole)


@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=6))
def test_random_bytes_never_crash_either_role(data: bytes, cuts: list[int]) -> None:
    """Random bytes give only RemoteProtocolError events, never an exception or a message."""
    for role, bridge_id in (("receiver", None), ("bridge", MAC)):
        conn = BridgeConnection(role, bridge_id=bridge_id)  # type: ignore[arg-type]
        for event in read_all(conn, split(data, cuts)):
            assert isinstance(event, RemoteProtocolError)


@given(st.data())
def test_no_single_flipped_bit_is_accepted(data: st.DataObject) -> None:
    """CRC-32 catches every single-bit error: a damaged frame never becomes a message."""
    stream, sent = bridge_stream([Event(channel=3, kind=EventKind.INPUT_ALARM, text="door")])
    hello_len = len(encode_frame(sent[0]))
    bit = data.draw(st.integers(hello_len * 8, len(stream) * 8 - 1))
    damaged = bytearray(stream)
    damaged[bit // 8] ^= 1 << (bit % 8)
    events_out = read_all(BridgeConnection("receiver"), [bytes(damaged)])
    assert [e for e in events_out if isinstance(e, Envelope)] == sent[:1]
    assert any(isinstance(e, RemoteProtocolError) for e in events_out)


def test_a_corrupted_length_does_not_hide_the_next_frame() -> None:
    """A frame whose length field grew is refused, and the good frame after it still comes out."""
    _, sent = bridge_stream(
        [Event(channel=1, kind=EventKind.INPUT_ALARM), Event(channel=1, kind=2)]
    )
    first = encode_frame(sent[1])
    damaged = bytearray(first)
    damaged[5] += 9  # nine bytes more than the frame has: the CRC check eats into the next one
    hello = encode_frame(sent[0])
    out = read_all(BridgeConnection("receiver"), [hello + bytes(damaged) + encode_frame(sent[2])])
    assert describe(out) == [
        sent[0],
        ("ChecksumError", "bad_crc", bytes(damaged) + encode_frame(sent[2])[:9]),
        sent[2],
    ]


def test_an_oversized_length_is_skipped_without_buffering() -> None:
    """A header announcing 65535 body bytes is refused at once (bad_length, NAK bad_crc to the
    sequence it names, so the bridge sends its frame again); the next frame comes out."""
    _, sent = bridge_stream([Heartbeat(ArmState.DISARMED, "1.0")])
    hello = encode_frame(sent[0])
    bogus = b"VB\x01\x02\xff\xff" + bytes(6) + (7).to_bytes(4, "big") + bytes(8)
    receiver = BridgeConnection("receiver")
    out = read_all(receiver, [hello, bogus + encode_frame(sent[1])])
    assert out == [sent[0], out[1], sent[1]]
    assert isinstance(out[1], LengthError)
    assert (out[1].reason, out[1].raw) == ("bad_length", bogus)
    nak = decode_frame(receiver.reply_to(out[1], now=T0) or b"").body
    assert nak == Nak(7, NakReason.BAD_CRC)
    # "VB" in garbage, not followed by our version and a message type: refused, not answered.
    junk = BridgeConnection("receiver")
    [refused] = read_all(junk, [b"VB\x09\x7f\xff\xff" + bytes(18)])[:1]
    assert isinstance(refused, LengthError)
    assert junk.reply_to(refused, now=T0) is None


def test_a_false_magic_in_a_damaged_crc_is_not_a_second_frame() -> None:
    """Damaged frames whose last CRC bytes are ``56 42`` (about one run in a hundred of a
    1,000-frame flood): the next frame's version and type make that false header's length 258,
    and it is not refused (nor NAKed, with a sequence the bridge never sent) as a second frame.
    One bad_crc per frame sent, each NAKed with its own sequence, however the bytes arrive."""
    crc = b"\x00\x00VB"
    _, sent = bridge_stream([Event(channel=1, kind=EventKind.INPUT_ALARM)] * 13)
    hello, *frames = (encode_frame(e) for e in sent)
    damaged = [frame[:-4] + crc for frame in frames[:-1]]
    assert all(zlib.crc32(d[:-4]) != int.from_bytes(crc, "big") for d in damaged)
    stream = hello + b"".join(damaged) + frames[-1]
    expected = [sent[0], *(("ChecksumError", "bad_crc", d) for d in damaged), sent[-1]]
    receiver = BridgeConnection("receiver")
    out = read_all(receiver, [stream])
    assert describe(out) == expected
    refused = [e for e in out if isinstance(e, ChecksumError)]
    naks = [decode_frame(receiver.reply_to(e, now=T0) or b"").body for e in refused]
    assert naks == [Nak(e.sequence, NakReason.BAD_CRC) for e in sent[1:-1]]
    trickled = read_all(BridgeConnection("receiver"), [bytes([b]) for b in stream])
    assert describe(trickled) == expected


def _grown(frame: bytes, extra: int) -> bytes:
    """``frame`` with ``extra`` added to its length field (CRC left as it was)."""
    damaged = bytearray(frame)
    damaged[4:6] = (int.from_bytes(frame[4:6], "big") + extra).to_bytes(2, "big")
    return bytes(damaged)


def test_a_grown_length_resyncs_on_the_next_frame_without_waiting() -> None:
    """A length field grown by 500 (still under max_body) no longer holds the stream until 500
    more bytes arrive: the next good frame, once whole, proves the header wrong; the damaged
    frame is refused as bad_length and the next frame comes out at once."""
    _, sent = bridge_stream([Event(channel=1, kind=EventKind.INPUT_ALARM), Heartbeat(1, "1.0")])
    hello, alarm, heartbeat = (encode_frame(e) for e in sent)
    damaged = _grown(alarm, 500)
    receiver = BridgeConnection("receiver")
    out = read_all(receiver, [hello, damaged, heartbeat])
    assert describe(out) == [sent[0], ("LengthError", "bad_length", damaged), sent[2]]
    # Byte by byte, or all at once, it reads the same.
    stream = hello + damaged + heartbeat
    trickled = read_all(BridgeConnection("receiver"), [bytes([b]) for b in stream])
    assert describe(trickled) == describe(out)
    assert describe(read_all(BridgeConnection("receiver"), [stream])) == describe(out)


def test_a_stalled_header_waits_only_while_nothing_proves_it_wrong() -> None:
    """With no frame after it the grown header still waits (a timeout in the listener ends
    that), and a frame that is not whole yet proves nothing."""
    _, sent = bridge_stream([Event(channel=1, kind=EventKind.INPUT_ALARM), Heartbeat(1, "1.0")])
    hello, alarm, heartbeat = (encode_frame(e) for e in sent)
    receiver = BridgeConnection("receiver")
    receiver.receive_data(hello)
    assert receiver.next_event() == sent[0]
    receiver.ack(sent[0], now=T0)
    receiver.receive_data(_grown(alarm, 300) + heartbeat[:-1])
    assert receiver.next_event() is NEED_DATA
    receiver.receive_data(heartbeat[-1:])
    assert isinstance(receiver.next_event(), LengthError)
    assert receiver.next_event() == sent[2]


def test_large_garbage_is_reported_in_bounded_pieces() -> None:
    """Ten kilobytes of junk come out as FramingErrors of at most MAX_GARBAGE_REPORT bytes."""
    out = read_all(BridgeConnection("receiver"), [b"\x00" * 10_000])
    assert [len(e.raw) for e in out if isinstance(e, FramingError)] == [4096, 4096, 1808]
    assert MAX_GARBAGE_REPORT == 4096


def test_eof_inside_a_frame_is_a_framing_error() -> None:
    """A connection closed halfway through a frame reports the partial bytes."""
    stream, sent = bridge_stream([Heartbeat(ArmState.ARMED, "1.0")])
    cut = stream[: len(encode_frame(sent[0])) + 10]
    out = read_all(BridgeConnection("receiver"), [cut])
    assert out[0] == sent[0]
    assert isinstance(out[1], FramingError)
    assert "closed inside a frame" in str(out[1])


# ---- receiver role --------------------------------------------------------------------------


def test_a_message_before_hello_is_not_authenticated_and_gets_a_nak() -> None:
    """An EVENT before HELLO is a NotAuthenticatedError; the NAK names its sequence."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    bridge.send(bridge.envelope(HELLO, now=T0))  # HELLO sent but lost on the way
    frame = bridge.send(bridge.envelope(Event(channel=1, kind=1), now=T0))
    receiver = BridgeConnection("receiver")
    receiver.receive_data(frame)
    error = receiver.next_event()
    assert isinstance(error, NotAuthenticatedError)
    assert error.reason == "not_authenticated"
    assert error.raw == frame
    nak = receiver.reply_to(error, now=T0)
    assert nak is not None
    reply = decode_frame(nak)
    assert reply.bridge_id == MAC
    assert reply.body == Nak(2, NakReason.NOT_AUTHENTICATED)
    assert nak[HEADER_SIZE:-4] == bytes.fromhex("00000002 04")


def test_hello_refused_closes_the_connection() -> None:
    """After a NAK(bad_token) to HELLO the receiver reads nothing more and cannot ACK."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    data = bridge.send(bridge.envelope(HELLO, now=T0))
    data += bridge.send(bridge.envelope(Event(channel=1, kind=1), now=T0))
    receiver = BridgeConnection("receiver")
    receiver.receive_data(data)
    hello = receiver.next_event()
    assert isinstance(hello, Envelope)
    assert state_of(receiver) is BridgeState.HELLO_PENDING
    nak = receiver.nak(hello, NakReason.BAD_TOKEN, now=T0)
    assert decode_frame(nak).body == Nak(1, NakReason.BAD_TOKEN)
    assert state_of(receiver) is BridgeState.CLOSED
    assert receiver.next_event() is NEED_DATA
    with pytest.raises(LocalProtocolError):
        receiver.ack(hello, now=T0)


def test_reading_on_before_answering_hello_is_a_local_error() -> None:
    """The receiver must ACK or NAK the HELLO before it reads the next message."""
    data, _ = bridge_stream([Heartbeat(ArmState.ARMED, "1")])
    receiver = BridgeConnection("receiver")
    receiver.receive_data(data)
    assert isinstance(receiver.next_event(), Envelope)
    with pytest.raises(LocalProtocolError, match="answer the HELLO"):
        receiver.next_event()


def test_another_bridge_id_on_an_open_connection_is_refused() -> None:
    """A frame carrying another bridge id after HELLO is NotAuthenticated(unknown_bridge)."""
    data, _ = bridge_stream([])
    intruder = Envelope(
        bridge_id=OTHER_MAC, sequence=9, device_time=T0, body=Event(channel=1, kind=1)
    )
    out = read_all(BridgeConnection("receiver"), [data + encode_frame(intruder)])
    assert isinstance(out[1], NotAuthenticatedError)
    assert out[1].reason == "unknown_bridge"
    assert out[1].reply is Reply.NAK


def test_a_channel_beyond_the_bridge_is_refused() -> None:
    """Channel 16 on a 12-channel bridge is a PayloadError answered with NAK(bad_channel)."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    data = bridge.send(bridge.envelope(HELLO, now=T0))
    data += bridge.send(bridge.envelope(Event(channel=16, kind=EventKind.ANALYTICS), now=T0))
    receiver = BridgeConnection("receiver")
    out = read_all(receiver, [data])
    assert isinstance(out[1], PayloadError)
    nak = receiver.reply_to(out[1], now=T0)
    assert nak is not None
    assert decode_frame(nak).body == Nak(2, NakReason.BAD_CHANNEL)


def test_an_ack_sent_to_the_receiver_is_refused_silently() -> None:
    """A receiver that is sent an ACK reports wrong_direction and replies nothing."""
    data, _ = bridge_stream([])
    stray = encode_frame(Envelope(bridge_id=MAC, sequence=5, device_time=T0, body=Ack(1)))
    receiver = BridgeConnection("receiver")
    out = read_all(receiver, [data + stray])
    assert isinstance(out[1], MalformedFrameError)
    assert out[1].reason == "wrong_direction"
    assert receiver.reply_to(out[1], now=T0) is None


@pytest.mark.parametrize(
    ("version", "type_code", "reason"),
    [(2, 0x02, NakReason.UNSUPPORTED_VERSION), (1, 0x7F, NakReason.UNSUPPORTED)],
)
def test_unknown_version_or_type_with_a_good_crc_gets_a_nak(
    version: int, type_code: int, reason: NakReason
) -> None:
    """A well-checksummed frame of an unknown version or type is UnsupportedError with a NAK."""
    signed = struct.pack(">2sBBH6sIQ", b"VB", version, type_code, 1, MAC, 7, 0) + b"\x00"
    frame = signed + struct.pack(">I", zlib.crc32(signed))
    receiver = BridgeConnection("receiver")
    receiver.receive_data(frame)
    error = receiver.next_event()
    assert isinstance(error, UnsupportedError)
    assert error.reason == reason.reason
    nak = receiver.reply_to(error, now=T0)
    assert nak is not None
    assert decode_frame(nak).body == Nak(7, reason)


def test_a_repeated_hello_from_the_same_bridge_is_answered_again() -> None:
    """A HELLO retransmitted because its ACK was lost comes out again for a fresh answer."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    hello = bridge.send(bridge.envelope(HELLO, now=T0))
    out = read_all(BridgeConnection("receiver"), [hello, hello])
    assert [type(e) for e in out] == [Envelope, Envelope]
    assert out[0] == out[1]


# ---- bridge role ----------------------------------------------------------------------------


def test_bridge_opens_on_the_ack_of_its_hello_and_ignores_foreign_acks() -> None:
    """The bridge is open after the ACK of its HELLO; an ACK for another bridge is refused."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    receiver = BridgeConnection("receiver")
    receiver.receive_data(bridge.send(bridge.envelope(HELLO, now=T0)))
    hello = receiver.next_event()
    assert isinstance(hello, Envelope)
    foreign = encode_frame(Envelope(bridge_id=OTHER_MAC, sequence=1, device_time=T0, body=Ack(1)))
    bridge.receive_data(foreign + receiver.ack(hello, now=T0))
    refused = bridge.next_event()
    assert isinstance(refused, MalformedFrameError)
    assert refused.reason == "unknown_bridge"
    assert state_of(bridge) is BridgeState.HELLO_PENDING
    ack = bridge.next_event()
    assert isinstance(ack, Envelope)
    assert ack.body == Ack(1)
    assert state_of(bridge) is BridgeState.OPEN


def test_bridge_is_closed_by_a_nak_of_its_hello() -> None:
    """NAK(bad_token) of the HELLO closes the bridge's side; it cannot send more."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    bridge.send(bridge.envelope(HELLO, now=T0))
    nak = Envelope(bridge_id=MAC, sequence=1, device_time=T0, body=Nak(1, NakReason.BAD_TOKEN))
    bridge.receive_data(encode_frame(nak))
    assert bridge.next_event() == nak
    assert state_of(bridge) is BridgeState.CLOSED
    with pytest.raises(LocalProtocolError):
        bridge.send(bridge.envelope(Heartbeat(0, "1"), now=T0))


def test_bridge_must_say_hello_first() -> None:
    """A bridge cannot send an EVENT before its HELLO, nor send an ACK at all."""
    bridge = BridgeConnection("bridge", bridge_id=MAC)
    with pytest.raises(LocalProtocolError, match="HELLO first"):
        bridge.send(bridge.envelope(Event(channel=1, kind=1), now=T0))
    with pytest.raises(LocalProtocolError):
        bridge.send(bridge.envelope(Ack(1), now=T0))


def test_sequence_numbers_increase_and_wrap_past_zero() -> None:
    """Sequences count up per message and wrap from 2**32-1 to 1, never 0."""
    bridge = BridgeConnection("bridge", bridge_id=MAC, first_sequence=0xFFFF_FFFE)
    seqs = [bridge.envelope(Heartbeat(0, "1"), now=None).sequence for _ in range(3)]
    assert seqs == [0xFFFF_FFFE, 0xFFFF_FFFF, 1]


# ---- message validation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channel": 0, "kind": EventKind.INPUT_ALARM},
        {"channel": 3, "kind": EventKind.ARM},
        {"channel": 17, "kind": EventKind.TAMPER},
        {"channel": 1, "kind": EventKind.INPUT_ALARM, "user": 4},
        {"channel": 0, "kind": EventKind.ARM, "user": 0xFFFF},
        {"channel": 1, "kind": EventKind.ANALYTICS, "text": ""},
        {"channel": 1, "kind": 0x99},
    ],
)
def test_invalid_events_cannot_be_built(kwargs: dict[str, object]) -> None:
    """Events that the protocol forbids raise ValueError at construction."""
    with pytest.raises(ValueError):
        Event(**kwargs)  # type: ignore[arg-type]


def test_hello_validates_channel_count_and_time_must_be_aware() -> None:
    """A 5-channel HELLO and a naive device time are refused."""
    with pytest.raises(ValueError):
        Hello("S", "M", 5, "1", "t")
    with pytest.raises(ValueError):
        Envelope(bridge_id=MAC, sequence=1, device_time=datetime(2024, 1, 1), body=Ack(1))


@given(
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-", min_size=1, max_size=64),
    st.text("abcdefghijklmnopqrstuvwxyz", min_size=8, max_size=128),
    st.integers(0, 200),
)
def test_redact_token_masks_the_token_and_nothing_else(serial: str, token: str, cut: int) -> None:
    """A HELLO's token never survives ``redact_token``; the rest of the frame is unchanged and
    the lengths still hold. Cut anywhere, not a byte of the token body is left readable."""
    frame = encode_frame(
        Envelope(
            bridge_id=MAC,
            sequence=7,
            device_time=T0,
            body=Hello(serial, "CKB312", 12, "2.4.1", token),
        )
    )
    redacted = redact_token(frame)
    assert len(redacted) == len(frame)
    start = frame.index(token.encode())
    assert redacted[start : start + len(token)] == b"*" * len(token)
    assert redacted[:start] == frame[:start]
    assert redacted[start + len(token) :] == frame[start + len(token) :]
    damaged = redact_token(frame[: len(frame) - 1 - cut % len(frame)] + b"\x00" * (cut % 3))
    assert token.encode()[:4] not in damaged


def test_redact_token_leaves_other_frames_alone() -> None:
    """Events, heartbeats and garbage carry no secret: they come back byte for byte."""
    for body in (Event(channel=1, kind=EventKind.INPUT_ALARM), Heartbeat(ArmState.ARMED, "2.4.1")):
        frame = encode_frame(Envelope(bridge_id=MAC, sequence=7, device_time=T0, body=body))
        assert redact_token(frame) == frame
    assert redact_token(b"garbage") == b"garbage"


def test_state_transitions_sit_in_one_table() -> None:
    """The connection's states and the steps between them are one table: from AWAIT_HELLO every
    state is reachable in both roles, and CLOSED is never left."""

    for role in ("receiver", "bridge"):
        reached = {BridgeState.AWAIT_HELLO}
        frontier = [BridgeState.AWAIT_HELLO]
        while frontier:
            state = frontier.pop()
            for (r, s, _step), target in TRANSITIONS.items():
                if r == role and s is state and target not in reached:
                    reached.add(target)
                    frontier.append(target)
        assert reached == set(BridgeState)
    assert {t for (_, s, _), t in TRANSITIONS.items() if s is BridgeState.CLOSED} == {
        BridgeState.CLOSED
    }
