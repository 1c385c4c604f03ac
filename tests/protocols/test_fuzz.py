"""Fuzzing every decoder in ``protocols/`` with random and mutated input.

The seeds are the public vectors in ``tests/vectors/`` plus frames the codecs build; the
mutations are what the reliability campaign found to matter: bit flips, inserted and deleted
bytes, truncations, whitespace dropped into hex fields, and mutated frames whose CRC and length
were made right again (so the damage reaches past the CRC check into the decoders).

Every property asserts the same things: no exception outside the project's error tree
(``protocols.errors.ReceiverError``), never a frame accepted when its CRC fails (so never an
ACK for it), and the good frames around the damage still come out.
"""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from protocols import bridge, contact_id, dc09, payload, sia, surgard
from protocols.crc import crc16_arc
from protocols.errors import ReceiverError, RemoteProtocolError
from tests.conftest import load_vectors

T = TypeVar("T")
NOW = datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC)
KEY = bytes.fromhex("0123456789ABCDEF0123456789ABCDEF")


def _framed(text: str) -> bytes:
    raw = text.encode("latin-1")
    return raw if raw.startswith(b"\n") else b"\n" + raw + b"\r"


def _dc09_seeds() -> list[tuple[bytes, bytes | None]]:
    """(frame, key) from the public vectors, with the keys that are known, and built frames."""
    seeds: list[tuple[bytes, bytes | None]] = [
        (_framed(v["frame"]), None)
        for v in load_vectors("dc09_frames.json")["vectors"]
        if "frame" in v
    ]
    encrypted = load_vectors("dc09_encrypted.json")
    for vector in encrypted["public_vectors"] + encrypted["derived_vectors"]:
        key = bytes.fromhex(vector["key_hex"]) if vector["key_hex"] else KEY
        seeds.append((_framed(vector["frame"]), key))
    seeds += [
        (dc09.encode_frame("SIA-DCS", 7, "1234", "#1234|Nri1/BA012"), None),
        (dc09.encode_frame("ADM-CID", 8, "1234", "#1234|1130 01 015", crc_form="binary"), None),
        (dc09.encode_frame("SIA-DCS", 9, "5678", "#5678|NFA1", key=KEY, timestamp=NOW), KEY),
        (dc09.encode_frame("NULL", 0, "5678", key=KEY, timestamp=NOW, crc_form="binary"), KEY),
    ]
    return seeds


DC09_SEEDS = _dc09_seeds()
SIA_BLOCKS = [v["data"] for v in load_vectors("sia_dc03_blocks.json")["vectors"]] + [
    "#1234|Nri1/BA012",
    "#36214|NRP",
    "",
]
CID_DATA = ["#1234|1130 01 015", "#21401|1602 00 000", "10064|1602 00 000", "1401 01 141"]
CID_MESSAGES = [
    v["digits"]
    for group in ("public_vectors", "derived_vectors")
    for v in load_vectors("contact_id.json")[group]
]
SG_MESSAGES = [
    v["message"].encode("latin-1") for v in load_vectors("sg_automation.json")["vectors"]
]
WHITESPACE = [b" ", b"  ", b"\t", b"\n", b"\r", b"\x0b", b"\x0c", b"\x00"]


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, *, whitespace_at: int = 0) -> bytes:
    """``seed`` after one to four mutations. ``whitespace_at``: where hex digits start (the
    ciphertext of an encrypted frame), to drop whitespace among them."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("flip", "insert", "delete", "truncate", "whitespace")))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and data:
            data[min(at, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "whitespace":
            place = draw(st.integers(min(whitespace_at, len(data)), len(data)))
            data[place:place] = draw(st.sampled_from(WHITESPACE))
    assume(data != seed)
    return bytes(data)


def _resealed(frame: bytes) -> bytes:
    """A damaged DC-09 frame with its CRC and length made right again (hex form)."""
    body = frame.strip(b"\n\r\x00")
    quote = body.find(b'"')
    span = body[quote:] if quote >= 0 else body
    return b"\n%04X%04X%s\r" % (crc16_arc(span), len(span), span)


@st.composite
def dc09_inputs(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A mutated vector (sometimes resealed), with the key of its seed or none."""
    seed, key = draw(st.sampled_from(DC09_SEEDS))
    bracket = seed.find(b"[")
    raw = draw(mutated(seed, whitespace_at=bracket + 1 if key else len(seed)))
    if draw(st.booleans()):
        raw = _resealed(raw)
    return raw, key if draw(st.booleans()) else None


def project_errors_only(call: Callable[[], T]) -> T | ReceiverError:
    """Run ``call``; any exception outside the project's error tree fails the property."""
    try:
        return call()
    except ReceiverError as exc:
        return exc
    except Exception as exc:  # a bug: show what raised it
        raise AssertionError(f"{type(exc).__name__} escaped the error tree: {exc}") from exc


def crc_ok(raw: bytes) -> bool:
    result = project_errors_only(lambda: dc09.integrity(raw))
    return isinstance(result, dc09.FrameIntegrity) and result.crc_ok


def _decode(raw: bytes, key: bytes | None) -> dc09.Dc09Frame | ReceiverError:
    return project_errors_only(lambda: dc09.decode_frame(raw, key=key, now=NOW))


# -- DC-09 frames ---------------------------------------------------------------------------


@given(dc09_inputs())
@example((b'\n614A0036"*SIA-DCS"0001L0#ABCD[' + b"00" * 15 + b"  \r", KEY))
def test_mutated_dc09_frames_raise_only_project_errors(case: tuple[bytes, bytes | None]) -> None:
    """Decoding a mutated frame, with its key or none, raises nothing outside the tree, and
    a frame whose CRC fails is never accepted (so never ACKed); its header alone neither."""
    raw, key = case
    frame = _decode(raw, key)
    header = project_errors_only(lambda: dc09.read_header(raw))
    if not crc_ok(raw):
        assert isinstance(frame, ReceiverError)
        assert isinstance(header, ReceiverError)
    if isinstance(frame, dc09.Dc09Frame):
        events = project_errors_only(lambda: payload.parse_events(frame.token, frame.data))
        if not isinstance(events, ReceiverError):
            ack = dc09.ack(frame.header, key=key if frame.encrypted else None, now=NOW)
            assert dc09.decode_reply(ack, key=key).kind.value == "ACK"
    project_errors_only(lambda: dc09.decode_reply(raw, key=key))


@given(st.binary(max_size=300), st.sampled_from([None, KEY]))
def test_random_bytes_are_never_a_dc09_frame(data: bytes, key: bytes | None) -> None:
    """Random bytes, framed or not, raise only project errors and are never accepted."""
    for raw in (data, b"\n" + data + b"\r"):
        assert isinstance(_decode(raw, key), ReceiverError) or crc_ok(raw)


def _split(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def _splitter_frames(chunks: Iterable[bytes]) -> list[bytes]:
    splitter = dc09.FrameSplitter(max_frame=1024)
    out: list[bytes] = []
    for chunk in chunks:
        splitter.receive_data(chunk)
        while True:
            event = project_errors_only(splitter.next_event)
            if event is dc09.NEED_DATA:
                break
            if isinstance(event, bytes):
                out.append(event)
    return out


junk_bytes = st.one_of(
    dc09_inputs().map(lambda case: case[0]),
    st.binary(max_size=2).map(lambda b: b"\n" + b),  # an LF and a byte or two (defect 10)
    st.binary(max_size=40),
)


@settings(max_examples=100)
@given(
    st.lists(st.tuples(st.booleans(), junk_bytes), min_size=1, max_size=4),
    st.lists(st.integers(0, 4000), max_size=8),
)
def test_good_frames_among_mutated_ones_come_out_of_the_splitter(
    pieces: list[tuple[bool, bytes]], cuts: list[int]
) -> None:
    """A stream of good frames (hex and binary CRC) with mutated frames and garbage between
    them, cut anywhere: every good frame comes out whole and in order, nothing raises."""
    good = [
        dc09.encode_frame("SIA-DCS", n, "1234", f"#1234|Nri1/BA{n:03d}", crc_form=form)
        for n, form in enumerate(("binary", "hex", "binary", "hex"))
    ]
    stream = b""
    for index, frame in enumerate(good):
        for before_next, junk in pieces:
            if before_next or index == 0:
                stream += junk
        stream += frame
    out = _splitter_frames(_split(stream, cuts))
    found = iter(out)
    assert all(any(f == g for f in found) for g in good), (stream, out)


# -- payloads -----------------------------------------------------------------------------


@st.composite
def texts_from(draw: st.DrawFn, seeds: list[str]) -> str:
    seed = draw(st.sampled_from(seeds))
    if draw(st.booleans()):
        return draw(st.text(max_size=60))
    raw = draw(mutated(seed.encode("utf-8")))
    return raw.decode("utf-8", "replace")


@given(texts_from(SIA_BLOCKS), st.sampled_from([1, 4300, 5000]))
def test_mutated_sia_blocks_raise_only_project_errors(data: str, digits: int) -> None:
    """SIA DC-03 blocks, mutated or random, and events with thousands of address digits."""
    project_errors_only(lambda: sia.parse_block(data))
    project_errors_only(lambda: payload.parse_events("SIA-DCS", data))
    project_errors_only(lambda: payload.parse_events("SIA-DCS", f"#1|Nri1/BA{'7' * digits}"))
    project_errors_only(lambda: payload.parse_events("SIA-DCS", f"#1|Nri{'3' * digits}/FA1"))


@given(texts_from(CID_DATA), texts_from(CID_MESSAGES))
def test_mutated_contact_id_raises_only_project_errors(data: str, message: str) -> None:
    """ADM-CID data blocks and 16-digit Contact ID messages, mutated or random."""
    project_errors_only(lambda: contact_id.parse_adm_cid(data))
    project_errors_only(lambda: payload.parse_events("ADM-CID", data))
    project_errors_only(lambda: contact_id.parse_message(message))


@given(st.sampled_from(SG_MESSAGES).flatmap(mutated), st.lists(st.integers(0, 600), max_size=5))
def test_mutated_surgard_messages_raise_only_project_errors(data: bytes, cuts: list[int]) -> None:
    """The automation side's reader on mutated Sur-Gard output, cut anywhere."""
    project_errors_only(lambda: surgard.parse_message(data.rstrip(surgard.DC4)))
    reader = surgard.MessageReader()
    for chunk in _split(data + surgard.DC4 + SG_MESSAGES[0], cuts):
        reader.receive_data(chunk)
        while project_errors_only(reader.next_event) is not surgard.NEED_DATA:
            pass


# -- bridge frames ------------------------------------------------------------------------

MAC = bytes.fromhex("02A1B2C3D4E5")


def _bridge_frames() -> list[bytes]:
    conn = bridge.BridgeConnection("bridge", bridge_id=MAC)
    bodies: list[Any] = [
        bridge.Hello("S1", "CKB316", 16, "1.0", "tok"),
        bridge.Event(channel=2, kind=bridge.EventKind.INPUT_ALARM, text="door"),
        bridge.Heartbeat(1, "1.0"),
        bridge.Event(channel=0, kind=bridge.EventKind.ARM, user=7),
    ]
    return [conn.send(conn.envelope(b, now=NOW)) for b in bodies]


BRIDGE_FRAMES = _bridge_frames()


def _resealed_bridge(frame: bytes) -> bytes:
    if len(frame) < bridge.HEADER_SIZE + bridge.CRC_SIZE:
        return frame
    signed = frame[: -bridge.CRC_SIZE]
    return signed + zlib.crc32(signed).to_bytes(4, "big")


@given(st.sampled_from(BRIDGE_FRAMES).flatmap(mutated), st.booleans())
def test_mutated_bridge_frames_raise_only_project_errors(frame: bytes, reseal: bool) -> None:
    """Both decoders on a mutated frame (CRC made right or not): project errors only, and a
    frame whose CRC-32 fails is never decoded."""
    raw = _resealed_bridge(frame) if reseal else frame
    fast = project_errors_only(lambda: bridge.decode_frame(raw))
    project_errors_only(lambda: bridge.decode_frame_spec(raw))
    end = len(raw) - bridge.CRC_SIZE
    if end < 0 or zlib.crc32(raw[:end]) != int.from_bytes(raw[end:], "big"):
        assert isinstance(fast, ReceiverError)


def _read_bridge(chunks: Iterable[bytes]) -> list[object]:
    receiver = bridge.BridgeConnection("receiver")
    out: list[object] = []

    def drain() -> None:
        while True:
            event = project_errors_only(receiver.next_event)
            if event is bridge.NEED_DATA:
                return
            out.append(event)
            if isinstance(event, bridge.Envelope) and isinstance(event.body, bridge.Hello):
                receiver.ack(event, now=NOW)
            if isinstance(event, RemoteProtocolError):
                project_errors_only(functools.partial(receiver.reply_to, event, now=NOW))

    for chunk in chunks:
        receiver.receive_data(chunk)
        drain()
    receiver.receive_data(b"")
    drain()
    return out


@settings(max_examples=100)
@given(
    st.lists(st.sampled_from(BRIDGE_FRAMES[1:]).flatmap(mutated), min_size=1, max_size=4),
    st.lists(st.integers(0, 2000), max_size=8),
)
def test_good_bridge_frames_among_mutated_ones_still_come_out(
    junk: list[bytes], cuts: list[int]
) -> None:
    """HELLO, then good frames with mutated ones between them, cut anywhere: every good frame
    comes out as a message in order, and only the good ones do."""
    hello, *good = BRIDGE_FRAMES
    stream = hello + b"".join(g + j for g, j in zip(good, junk * len(good), strict=False))
    out = _read_bridge(_split(stream, cuts))
    messages = [e.raw for e in out if isinstance(e, bridge.Envelope)]
    found = iter(messages)
    assert all(any(m == g for m in found) for g in [hello, *good]), (stream, out)
    # Nothing but intact frames is accepted (a copy of a good frame inside the junk may be).
    assert set(messages) <= set(BRIDGE_FRAMES)
