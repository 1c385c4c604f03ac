"""Property tests: round trips, stream chunking, and random bytes against the DC-09 codec."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given
from hypothesis import strategies as st

from protocols import dc09
from protocols.crc import crc16_arc
from protocols.errors import FramingError, RemoteProtocolError, Reply

NOW = datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC)
HEX = "0123456789ABCDEF"
ALNUM = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Data-block text: printable ASCII without the block brackets.
DATA_CHARS = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="[]")

accounts = st.text(ALNUM, min_size=1, max_size=16)
addresses = st.none() | st.text(HEX, min_size=1, max_size=6)
lines = st.none() | st.text(HEX, min_size=0, max_size=6)
tokens = st.sampled_from(sorted(dc09.EVENT_TOKENS))
timestamps = st.integers(min_value=-40, max_value=20).map(lambda s: NOW + timedelta(seconds=s))
extended = st.lists(
    st.tuples(st.sampled_from("ACHIJLMNOPRSTVXYZ"), st.text(DATA_CHARS, max_size=20)),
    max_size=3,
)


@st.composite
def keys(draw: st.DrawFn) -> bytes:
    size = draw(st.sampled_from((16, 24, 32)))
    if draw(st.booleans()):
        return dc09.parse_key(draw(st.text(HEX, min_size=2 * size, max_size=2 * size)), "hex")
    return dc09.parse_key(draw(st.text(ALNUM, min_size=size, max_size=size)), "ascii")


@st.composite
def frames(draw: st.DrawFn, *, encrypted: bool) -> tuple[dict[str, object], bytes | None]:
    token = draw(tokens)
    account = draw(accounts)
    data = "" if token == "NULL" else f"#{account}|" + draw(st.text(DATA_CHARS, max_size=40))
    fields: dict[str, object] = {
        "token": token,
        "sequence": f"{draw(st.integers(0, 9999)):04d}",
        "account": account,
        "data": data,
        "receiver": draw(addresses),
        "line": draw(lines),
        "timestamp": draw(timestamps) if encrypted else draw(st.none() | timestamps),
        "extended": tuple(draw(extended)),
        "crc_form": draw(st.sampled_from(("hex", "binary"))),
    }
    return fields, draw(keys()) if encrypted else None


def _encode(fields: dict[str, object], key: bytes | None, rand_seed: int) -> bytes:
    pad = bytes((rand_seed + i * 37) & 0xFF for i in range(16))
    return dc09.encode_frame(
        fields["token"],  # type: ignore[arg-type]
        fields["sequence"],  # type: ignore[arg-type]
        fields["account"],  # type: ignore[arg-type]
        fields["data"],  # type: ignore[arg-type]
        receiver=fields["receiver"],  # type: ignore[arg-type]
        line=fields["line"],  # type: ignore[arg-type]
        key=key,
        timestamp=fields["timestamp"],  # type: ignore[arg-type]
        extended=fields["extended"],  # type: ignore[arg-type]
        crc_form=fields["crc_form"],  # type: ignore[arg-type]
        rand=lambda n: pad[:n],
    )


def _decoded(frame: dc09.Dc09Frame) -> dict[str, object]:
    header = frame.header
    return {
        "token": header.token,
        "sequence": header.sequence,
        "account": header.account,
        "data": frame.data,
        "receiver": header.receiver,
        "line": header.line,
        "timestamp": frame.timestamp,
        "extended": frame.extended,
        "crc_form": header.crc_form,
    }


@given(frames(encrypted=False), st.integers(0, 255))
def test_plain_round_trip(case: tuple[dict[str, object], bytes | None], seed: int) -> None:
    """decode(encode(x)) == x for any plain frame, in either CRC form."""
    fields, _ = case
    frame = dc09.decode_frame(_encode(fields, None, seed), key=None, now=NOW)
    assert _decoded(frame) == fields
    assert not frame.encrypted
    assert frame.quirks <= {"binary_crc", "empty_line", "no_line"}


@given(frames(encrypted=True), st.integers(0, 255))
def test_encrypted_round_trip(case: tuple[dict[str, object], bytes | None], seed: int) -> None:
    """decode(encode(x)) == x for any encrypted frame, AES-128/192/256, hex or ASCII keys."""
    fields, key = case
    raw = _encode(fields, key, seed)
    frame = dc09.decode_frame(raw, key=key, now=NOW)
    assert _decoded(frame) == fields
    assert frame.encrypted
    ack = dc09.decode_reply(dc09.ack(frame.header, key=key, now=NOW), key=key)
    assert (ack.kind, ack.sequence, ack.account, ack.timestamp) == (
        Reply.ACK,
        fields["sequence"],
        fields["account"],
        NOW,
    )


# Garbage that holds no LF cannot start a frame, so it is discarded whole wherever it falls.
garbage = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b""))


@given(
    st.lists(st.tuples(garbage, frames(encrypted=False)), min_size=1, max_size=5),
    st.lists(st.integers(1, 40), min_size=1, max_size=50),
)
def test_any_chunking_gives_the_same_frames(
    items: list[tuple[bytes, tuple[dict[str, object], bytes | None]]], cuts: list[int]
) -> None:
    """Frames with garbage between them come out the same however the stream is cut."""
    expected = [_encode(fields, None, 0) for _, (fields, _) in items]
    stream = b"".join(g + f for (g, _), f in zip(items, expected, strict=True))
    whole = _split([stream])
    chunks, pos = [], 0
    for cut in cuts:
        chunks.append(stream[pos : pos + cut])
        pos += cut
    chunks.append(stream[pos:])
    pieces = _split(chunks)
    for frames_out, dropped in (whole, pieces):
        assert frames_out == expected
        # NULs straight after a frame are a known trailer, dropped without a report.
        assert dropped == b"".join(
            g if i == 0 else g.lstrip(b"\0") for i, (g, _) in enumerate(items)
        )


def _split(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    splitter = dc09.FrameSplitter(max_frame=4096)
    out: list[bytes] = []
    dropped = b""
    for chunk in chunks:
        splitter.receive_data(chunk)
        while (event := splitter.next_event()) is not dc09.NEED_DATA:
            if isinstance(event, FramingError):
                dropped += event.raw
            else:
                assert isinstance(event, bytes)
                out.append(event)
    return out, dropped


def _outcome(call: Callable[[], object]) -> Reply | None:
    """The reply a rejection calls for, or None when the call accepted its input."""
    try:
        call()
    except RemoteProtocolError as exc:
        return exc.reply
    return None


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_or_ack(data: bytes) -> None:
    """Random bytes raise only the project's remote errors and are never accepted."""
    reply = _outcome(lambda: dc09.decode_frame(data, key=bytes(16), now=NOW))
    if reply is None:
        assert dc09.integrity(data).crc_ok
    assert reply is not Reply.ACK
    _outcome(lambda: dc09.read_header(data))
    _outcome(lambda: dc09.decode_reply(data, key=bytes(16)))
    _split([data, b"\n" + data])


@given(st.binary(max_size=120))
def test_random_body_with_good_crc_is_never_a_crash(body: bytes) -> None:
    """Random bytes behind a correct CRC and length raise only the project's remote errors."""
    raw = b'\n%04X%04X"SIA-DCS"0001L0#1234[' % (0, 0) + body
    span = raw[9:]
    good = b"\n%04X%04X" % (crc16_arc(span), len(span)) + span + b"\r"
    _outcome(lambda: dc09.decode_frame(good, key=None, now=NOW))
    encrypted = good.replace(b'"SIA-DCS"', b'"*SIA-DCS"')
    _outcome(lambda: dc09.decode_frame(encrypted, key=bytes(16), now=NOW))


@given(frames(encrypted=False), st.integers(0, 100), st.integers(1, 255))
def test_corrupted_byte_never_acked(
    case: tuple[dict[str, object], bytes | None], where: int, flip: int
) -> None:
    """Flipping any byte of a valid frame never yields an accepted frame with a bad CRC."""
    fields, _ = case
    raw = bytearray(_encode(fields, None, 0))
    index = 1 + where % (len(raw) - 2)
    raw[index] ^= flip
    try:
        dc09.decode_frame(bytes(raw), key=None, now=NOW)
    except RemoteProtocolError:
        return
    assert dc09.integrity(bytes(raw)).crc_ok


_hex_field = st.none() | st.text("0123456789ABCDEF", min_size=0, max_size=6)
# What an ACK echoes of its frame: sequence, receiver, line, account, CRC form.
_ACKED_FRAME = (
    st.text("0123456789", min_size=4, max_size=4),
    st.none() | st.text("0123456789ABCDEF", min_size=1, max_size=6),
    _hex_field,
    st.text("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefxyz", min_size=1, max_size=16),
    st.sampled_from(["hex", "binary"]),
)


@given(
    *_ACKED_FRAME,
)
def test_fast_ack_is_the_ack_built_from_its_text(
    sequence: str, receiver: str | None, line: str | None, account: str, crc_form: str
) -> None:
    """The plaintext ACK (cached CRC parts, combined) is byte for byte the frame built from
    its text, and a panel reads it as the ACK of that sequence and account."""
    header = dc09.Dc09Header("SIA-DCS", False, sequence, receiver, line, account, crc_form)  # type: ignore[arg-type]
    r = "" if receiver is None else "R" + receiver
    address = f"{r}{'' if line is None else 'L' + line}#{account}"
    reply = dc09.ack(header, key=None, now=NOW)
    assert reply == dc09._wrap(f'"ACK"{sequence}{address}[]', crc_form)
    decoded = dc09.decode_reply(reply)
    assert (decoded.kind, decoded.sequence, decoded.account) == (Reply.ACK, sequence, account)


def _fields_general(raw: bytes) -> object:
    """``dc09._fields`` by the general path alone (``_unwrap``), or the error it raises."""
    try:
        frame, form, quirks = dc09._unwrap(raw)
    except RemoteProtocolError as exc:
        return type(exc)
    if form == "hex":
        crc_text, length_text, span = (
            frame[:4].decode("latin-1"),
            frame[4:8].decode("latin-1"),
            frame[8:],
        )
    else:
        crc_text, length_text, span = (
            frame[:2].hex().upper(),
            frame[2:6].decode("latin-1"),
            frame[6:],
        )
    return span, form, crc_text, crc16_arc(span), length_text, quirks


def _fields_fast(raw: bytes) -> object:
    try:
        return dc09._fields(raw)
    except RemoteProtocolError as exc:
        return type(exc)


@given(
    st.one_of(
        frames(encrypted=False).map(lambda c: _encode(c[0], None, 0)[1:-1]),
        st.binary(max_size=40),
        st.binary(max_size=40).map(lambda b: b'00000000"' + b),
    )
)
def test_fields_fast_path_is_the_general_path(body: bytes) -> None:
    """For a frame as the splitter hands it (LF ... CR), the fast path reads the CRC, length
    and span exactly as the general path does, whatever the bytes."""
    raw = b"\n" + body + b"\r"
    assert _fields_fast(raw) == _fields_general(raw)


_zones = st.sampled_from(
    [UTC, None, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(0)), timezone.min]
)


@given(
    *_ACKED_FRAME,
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    _zones,
    st.booleans(),
    st.binary(min_size=16, max_size=16),
    st.sampled_from([16, 24, 32]),
)
def test_fast_encrypted_ack_is_the_ack_built_from_its_text(
    sequence: str,
    receiver: str | None,
    line: str | None,
    account: str,
    crc_form: str,
    when: datetime,
    zone: timezone | None,
    pipe: bool,
    pad: bytes,
    key_size: int,
) -> None:
    """The encrypted ACK (cached CRC parts and receiver time, combined) is byte for byte the
    frame built from its text with the same pad, in any zone and for any second (a second
    ACK of the same second comes from the cache), and it decrypts as the ACK of that frame."""
    header = dc09.Dc09Header("SIA-DCS", True, sequence, receiver, line, account, crc_form)  # type: ignore[arg-type]
    now = when if zone is None else when.replace(tzinfo=zone)
    key = bytes(range(key_size))
    r = "" if receiver is None else "R" + receiver
    address = f"{r}{'' if line is None else 'L' + line}#{account}"

    def rand(count: int) -> bytes:
        return pad[:count]

    plain = ("|" if pipe else "") + "]_" + dc09.format_timestamp(now)
    built = dc09._wrap(f'"*ACK"{sequence}{address}[' + dc09._encrypt(plain, key, rand), crc_form)
    for _ in range(2):
        assert dc09.ack(header, key=key, now=now, pipe=pipe, rand=rand) == built
    decoded = dc09.decode_reply(built, key=key)
    assert (decoded.kind, decoded.sequence, decoded.account) == (Reply.ACK, sequence, account)


@given(
    st.lists(
        st.tuples(st.sampled_from([16, 24, 32]), st.integers(0, 3), st.binary(max_size=80)),
        min_size=1,
        max_size=12,
    )
)
def test_the_kept_cbc_encryptor_encrypts_each_message_as_a_fresh_zero_iv_context(
    messages: list[tuple[int, int, bytes]],
) -> None:
    """One CBC encryptor per key serves message after message, under several keys in any
    order: each ciphertext is the one a fresh zero-IV CBC context gives, and decrypts back."""
    for size, which, body in messages:
        key = bytes([which]) * size
        plain = body[: len(body) - len(body) % 16]
        fresh = Cipher(algorithms.AES(key), modes.CBC(bytes(16))).encryptor()
        ciphertext = dc09._cbc_encrypt(key, plain)
        assert ciphertext == fresh.update(plain) + fresh.finalize()
        assert dc09._cbc_decrypt(key, ciphertext) == plain
