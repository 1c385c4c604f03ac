"""The decoder's shortcuts give what the general decoder gives: the common plaintext frame's
one-match decoder (or it declines; it never accepts a frame the general decoder refuses), and an
encrypted frame decoded from the envelope read to find its key, even after a wrong key."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from hypothesis import example, given
from hypothesis import strategies as st

from protocols import dc09
from protocols.errors import RemoteProtocolError

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
_HEX = "0123456789ABCDEF"

common_frames = st.builds(
    dc09.encode_frame,
    st.sampled_from(["SIA-DCS", "ADM-CID", "NULL"]),
    st.integers(0, 9999),
    st.text("0123456789ABCDEFabcdefXYZ", min_size=1, max_size=16),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="[]")),
    receiver=st.none() | st.text(_HEX, min_size=1, max_size=6),
    line=st.text(_HEX, min_size=1, max_size=6),
    timestamp=st.none() | st.integers(-86400, 86400).map(lambda s: NOW + timedelta(seconds=s)),
)


def _general(raw: bytes) -> dc09.Dc09Frame | RemoteProtocolError:
    try:
        return dc09.decode_frame(raw, key=None, now=NOW)
    except RemoteProtocolError as exc:
        return exc


@given(common_frames)
def test_a_common_frame_decodes_as_the_general_decoder_decodes_it(raw: bytes) -> None:
    """Every frame of the common shape is taken by the fast path, with the same result."""
    assert dc09.decode_common(raw) == _general(raw)


@given(common_frames, st.data())
@example(b'\n1234001E"SIA-DCS"0001L0#1234[]\r', None)  # wrong CRC
def test_a_mutated_frame_is_declined_or_decoded_the_same(raw: bytes, data: st.DataObject) -> None:
    """Flip, drop or insert bytes anywhere: the fast path declines (None) or gives exactly the
    general decoder's frame, never a frame the general decoder refuses."""
    if data is not None:
        mutated = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, len(mutated) - 1))
            how = data.draw(st.sampled_from(["flip", "drop", "insert", "case"]))
            if how == "flip":
                mutated[at] ^= 1 << data.draw(st.integers(0, 7))
            elif how == "drop" and len(mutated) > 1:
                del mutated[at]
            elif how == "insert":
                mutated.insert(at, data.draw(st.integers(0, 255)))
            else:
                mutated[at : at + 1] = bytes(mutated[at : at + 1]).swapcase()
        raw = bytes(mutated)
    fast = dc09.decode_common(raw)
    if fast is not None:
        assert fast == _general(raw)


def test_frames_with_quirks_or_extended_data_take_the_general_path() -> None:
    """A lower-case CRC, no line, an extended block or an encrypted token: declined."""
    plain = dc09.encode_frame("SIA-DCS", 1, "1234", "#1234|NBA01", timestamp=NOW)
    lower = plain[:1] + plain[1:5].lower() + plain[5:]
    no_line = dc09.encode_frame("SIA-DCS", 1, "1234", "#1234|NBA01", line=None)
    extended = dc09.encode_frame("SIA-DCS", 1, "1234", "#1234|NBA01", extended=[("V", "x")])
    encrypted = dc09.encode_frame("SIA-DCS", 1, "1234", "", key=bytes(16), timestamp=NOW)
    assert dc09.decode_common(plain) == _general(plain)
    if lower != plain:
        assert dc09.decode_common(lower) is None
    assert [dc09.decode_common(f) for f in (no_line, extended, encrypted)] == [None] * 3


@given(
    st.integers(0, 9999),
    st.text("0123456789ABCDEF", min_size=1, max_size=16),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters="[]")),
    st.binary(min_size=16, max_size=16),
    st.booleans(),
)
def test_an_envelope_read_once_decodes_as_the_frame_does(
    sequence: int, account: str, data: str, key: bytes, lower: bool
) -> None:
    """An encrypted frame (its ciphertext in either case) decoded from its envelope, first
    under a wrong key (as a key rotation tries), then under the right one: the same frame,
    quirks and all, or the same error, as decoding the raw bytes afresh."""
    raw = dc09.encode_frame("SIA-DCS", sequence, account, data, key=key, timestamp=NOW)
    if lower:  # lower-case ciphertext (a quirk the decoder notes), the CRC made to match
        span = raw[9:-1].decode("ascii")
        bracket = span.index("[")
        raw = dc09._wrap(span[: bracket + 1] + span[bracket + 1 :].lower(), "hex")
    envelope = dc09.read_envelope(raw)
    wrong = bytes(b ^ 0xFF for b in key)
    with contextlib.suppress(RemoteProtocolError):
        dc09.decode_frame(raw, key=wrong, now=NOW, envelope=envelope)
    again = _general_with(raw, key, envelope)
    assert again == _general_with(raw, key, None)


def _general_with(
    raw: bytes, key: bytes, envelope: dc09.Envelope | None
) -> dc09.Dc09Frame | tuple[type, str]:
    try:
        return dc09.decode_frame(raw, key=key, now=NOW, envelope=envelope)
    except RemoteProtocolError as exc:
        return type(exc), exc.message


def test_a_cached_timestamp_never_vouches_for_another_frames_crc() -> None:
    """Frames of one second share the cached timestamp and its CRC part; a frame of that
    second damaged anywhere between the token and the timestamp is still declined."""
    good = dc09.encode_frame("SIA-DCS", 7, "1234", "#1234|NBA01", line="1", timestamp=NOW)
    assert dc09.decode_common(good) == _general(good)
    at = good.index(b"BA01")
    damaged = good[:at] + b"BA02" + good[at + 4 :]
    assert dc09.decode_common(damaged) is None
    assert isinstance(_general(damaged), RemoteProtocolError)
