"""FrameSplitter: what comes out of a TCP stream holding good, broken and odd frames."""

from __future__ import annotations

from protocols import dc09
from protocols.errors import FramingError

GOOD = dc09.encode_frame("SIA-DCS", 1, "1234", "#1234|Nri1/BA012")
OTHER = dc09.encode_frame("NULL", 0, "1234")


def _events(*chunks: bytes, max_frame: int = 4096) -> list[bytes | tuple[str, bytes]]:
    splitter = dc09.FrameSplitter(max_frame=max_frame)
    out: list[bytes | tuple[str, bytes]] = []
    for chunk in chunks:
        splitter.receive_data(chunk)
        while (event := splitter.next_event()) is not dc09.NEED_DATA:
            if isinstance(event, FramingError):
                out.append((event.reason, event.raw))
            else:
                assert isinstance(event, bytes)
                out.append(event)
    return out


def test_garbage_and_good_frame_in_one_read() -> None:
    """Garbage before a frame in the same read is reported; the frame still comes out."""
    assert _events(b"F#123456" + GOOD) == [("framing", b"F#123456"), GOOD]


def test_cut_short_frame_does_not_swallow_the_next() -> None:
    """A frame cut off before its CR is dropped at the next LF; the next frame comes out."""
    cut = GOOD[:30]
    assert _events(cut + OTHER) == [("framing", cut), OTHER]


def test_oversized_frame_is_dropped_and_stream_resyncs() -> None:
    """A frame with no CR within max_frame bytes is dropped; the next frame still comes out."""
    huge = b'\n12340FFF"SIA-DCS"0001L0#1234[' + b"x" * 200
    assert _events(huge, OTHER, max_frame=64) == [("oversized", huge), OTHER]


def test_trailing_nuls_are_dropped_silently() -> None:
    """NULs after a frame's CR (ioBroker saw them) are dropped without a report."""
    assert _events(GOOD + b"\x00\x00", b"\x00" + OTHER) == [GOOD, OTHER]


def test_binary_crc_holding_cr_and_lf_bytes() -> None:
    """A binary-CRC frame whose CRC bytes are 0x0D or 0x0A is still one frame."""
    found = {}
    for seq in range(10000):
        raw = dc09.encode_frame("NULL", seq, "41213", receiver="8", crc_form="binary")
        if raw[1] in (0x0A, 0x0D) or raw[2] in (0x0A, 0x0D):
            found[raw[1:3]] = raw
        if len(found) >= 3:
            break
    frames = list(found.values())
    assert frames
    assert _events(b"".join(frames)) == frames
    assert _events(*[bytes([b]) for b in b"".join(frames)]) == frames


def test_pending_bytes_counts_an_incomplete_frame() -> None:
    """An incomplete frame is held and counted, so the driver can time it out."""
    splitter = dc09.FrameSplitter()
    splitter.receive_data(GOOD[:20])
    assert splitter.next_event() is dc09.NEED_DATA
    assert splitter.pending_bytes == 20


def test_binary_crc_frame_after_an_lf_and_one_byte_comes_out() -> None:
    """An LF and one garbage byte before a binary-CRC frame put its '"' where a hex header has
    it: the splitter took the three as one frame and the panel got no reply. Every frame comes
    out, whatever the byte, whole or one byte at a time."""
    for seq in range(40):
        frame = dc09.encode_frame("SIA-DCS", seq, "1234", "#1234|Nri1/BA012", crc_form="binary")
        for prefix in [b"\n", *(b"\n" + bytes([b]) for b in range(256))]:
            whole = [e for e in _events(prefix + frame) if isinstance(e, bytes)]
            assert whole == [frame], (prefix, frame)
        trickled = _events(*(bytes([b]) for b in b"\nx" + frame))
        assert [e for e in trickled if isinstance(e, bytes)] == [frame]
