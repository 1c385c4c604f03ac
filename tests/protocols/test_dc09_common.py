"""The common plaintext frame's one-match decoder gives what the general decoder gives, or
declines; it never accepts a frame the general decoder refuses."""

from __future__ import annotations

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
