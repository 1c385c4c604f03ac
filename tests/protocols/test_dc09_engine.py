"""The DC-09 receiving engine: events out of a byte stream, replies chosen by the engine.

Properties: any chunking of a valid stream gives the same events; random bytes never crash it
and never yield an ACK; a rejected frame's reply is the one its error names. Unit tests: the
station's policies (unknown account, bad CRC, plaintext from a keyed account) and datagrams.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import dc09
from protocols.dc09 import Dc09Header
from protocols.dc09_engine import (
    NEED_DATA,
    Accepted,
    AccountPolicy,
    Crashed,
    Dc09Engine,
    ReceiverRules,
    Rejected,
)
from protocols.errors import LocalProtocolError, Reply
from protocols.payload import Event, parse_events
from protocols.stream import NEED_DATA as STREAM_NEED_DATA

NOW = datetime(2024, 6, 1, 8, 30, 0, tzinfo=UTC)
KEY = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
PAD = bytes(range(1, 17))
ACCOUNTS = {"1234": AccountPolicy("plain 1234"), "5678": AccountPolicy("keyed 5678", key=KEY)}


def lookup(header: Dc09Header) -> AccountPolicy[str] | None:
    return ACCOUNTS.get(header.account)


def engine(rules: ReceiverRules | None = None) -> Dc09Engine[str]:
    rules = rules or ReceiverRules()
    return Dc09Engine(lookup, rules, clock=lambda: NOW, rand=lambda n: PAD[:n])


def sia(seq: int, account: str = "1234", **kw: object) -> bytes:
    return dc09.encode_frame("SIA-DCS", seq, account, f"#{account}|Nri1/BA{seq % 999:03d}", **kw)  # type: ignore[arg-type]


def cid_aes(seq: int, *, key: bytes = KEY, when: datetime = NOW) -> bytes:
    return dc09.encode_frame(
        "ADM-CID", seq, "5678", "#5678|1130 01 015", key=key, timestamp=when, rand=lambda n: PAD[:n]
    )


def drain(eng: Dc09Engine[str]) -> list[Accepted[str] | Rejected]:
    out: list[Accepted[str] | Rejected] = []
    while (event := eng.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        assert not isinstance(event, Crashed), event.exception
        out.append(event)
    return out


def summary(event: Accepted[str] | Rejected) -> tuple[object, ...]:
    if isinstance(event, Accepted):
        record = event.account.record if event.account else None
        return ("accepted", event.raw, event.events, record, event.reply)
    return ("rejected", event.reason, event.reply, event.raw)


def feed(chunks: list[bytes]) -> list[tuple[object, ...]]:
    """The frames' events; garbage is left out (how it is cut depends on the reads)."""
    eng = engine()
    out = []
    for chunk in chunks:
        eng.receive_data(chunk)
        out += [summary(e) for e in drain(eng) if not (isinstance(e, Rejected) and e.framing)]
    return out


good_frames = st.one_of(
    st.integers(0, 9999).map(sia),
    st.integers(0, 9999).map(lambda s: sia(s, account="9999")),
    st.integers(0, 9999).map(cid_aes),
    st.integers(0, 9999).map(lambda s: dc09.encode_frame("NULL", s, "1234")),
    st.integers(0, 9999).map(lambda s: sia(s, account="5678")),  # plaintext, keyed: DUH
    st.integers(0, 9999).map(lambda s: cid_aes(s, key=b"K" * 16)),  # wrong key: NAK
    st.integers(0, 9999).map(lambda s: cid_aes(s, when=NOW - timedelta(minutes=5))),  # stale
    st.integers(0, 9999).map(lambda s: dc09.encode_frame("ACR-SF", s, "1234", "#1234|X")),
)
garbage = st.sampled_from([b"", b"garbage", b"\x00\x00", b"\nnot a frame\r", b"\xff\xfe"])


def test_one_need_data_for_all_codecs() -> None:
    """The engine, the DC-09 splitter and the stream module share one NEED_DATA."""
    assert NEED_DATA is STREAM_NEED_DATA is dc09.NEED_DATA
    assert engine().next_event() is NEED_DATA


@given(st.lists(st.tuples(good_frames, garbage), min_size=1, max_size=6), st.data())
def test_any_chunking_gives_the_same_events(
    parts: list[tuple[bytes, bytes]], data: st.DataObject
) -> None:
    """Whole, byte by byte, and cut at random points: the same events, in the same order."""
    stream = b"".join(frame + junk for frame, junk in parts)
    whole = feed([stream])
    assert whole == feed([bytes([b]) for b in stream])
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert whole == feed(pieces)
    # Every frame comes out as an event of its own, whatever garbage surrounds it.
    assert len(whole) == len(parts)


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_random_bytes_never_crash_and_never_yield_an_ack(chunks: list[bytes]) -> None:
    """Arbitrary bytes, in arbitrary reads: only rejections (or NEED_DATA), never an ACK."""
    eng = engine()
    for chunk in chunks:
        eng.receive_data(b"\n" + chunk)
        for event in drain(eng):
            assert isinstance(event, Rejected)
    for chunk in chunks:
        assert isinstance(eng.receive_datagram(chunk), Rejected)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    frame = bytearray(draw(good_frames))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(1, len(frame) - 2))  # keep the LF ... CR framing
        frame[at] = draw(st.integers(0x20, 0x7E))
    return bytes(frame)


@pytest.mark.parametrize(
    "rules",
    [
        ReceiverRules(),
        ReceiverRules(bad_crc_reply=Reply.NAK, unknown_account=Reply.DUH),
        ReceiverRules(unknown_account=Reply.NAK),
    ],
)
@given(frame=st.one_of(good_frames, damaged()))
def test_a_rejected_frames_reply_is_the_one_its_error_names(
    rules: ReceiverRules, frame: bytes
) -> None:
    """Whatever is rejected, the reply bytes decode to the reply kind its error carries."""
    eng = engine(rules)
    eng.receive_data(frame)
    for event in drain(eng):
        if isinstance(event, Accepted):
            assert dc09.decode_reply(event.reply, key=KEY).kind is Reply.ACK
            continue
        if event.reply is None:
            assert event.error.reply is Reply.NONE or (
                event.error.reply is Reply.DUH and event.header is None
            )
        else:
            assert dc09.decode_reply(event.reply).kind is event.error.reply
            assert event.error.reply is not Reply.ACK


def test_accepted_frame_carries_its_account_events_and_ack() -> None:
    """A good encrypted frame: the lookup's record, the Contact ID event, an encrypted ACK."""
    eng = engine()
    eng.receive_data(cid_aes(7))
    [event] = drain(eng)
    assert isinstance(event, Accepted)
    assert event.account is not None
    assert event.account.record == "keyed 5678"
    assert [(e.cid.qualifier, e.cid.code) for e in event.events if e.cid] == [("E", "130")]
    reply = dc09.decode_reply(event.reply, key=KEY)
    assert (reply.kind, reply.encrypted, reply.sequence) == (Reply.ACK, True, "0007")
    assert event.received_at == NOW


def test_unknown_account_is_accepted_or_refused_by_policy() -> None:
    """Accept: Accepted without an account; DUH: a DUH echoing the header; NAK: a NAK."""
    accept = engine()
    accept.receive_data(sia(1, account="9999"))
    [event] = drain(accept)
    assert isinstance(event, Accepted)
    assert event.account is None
    for policy in (Reply.DUH, Reply.NAK):
        refuse = engine(ReceiverRules(unknown_account=policy))
        refuse.receive_data(sia(2, account="9999"))
        [rejected] = drain(refuse)
        assert isinstance(rejected, Rejected)
        assert rejected.reason == "unknown_account"
        assert rejected.reply is not None
        assert dc09.decode_reply(rejected.reply).kind is policy


def test_bad_crc_gets_nothing_or_a_nak_by_policy() -> None:
    """A CRC failure is never accepted: no reply by default, a NAK when configured."""
    bad = bytearray(sia(3))
    bad[1:5] = b"0000" if bad[1:5] != b"0000" else b"1111"
    quiet = engine()
    quiet.receive_data(bytes(bad))
    [event] = drain(quiet)
    assert isinstance(event, Rejected)
    assert (event.reason, event.reply) == ("bad_crc", None)
    naks = engine(ReceiverRules(bad_crc_reply=Reply.NAK))
    naks.receive_data(bytes(bad))
    [event] = drain(naks)
    assert isinstance(event, Rejected)
    assert event.reply is not None
    assert dc09.decode_reply(event.reply).kind is Reply.NAK


def test_plaintext_for_a_keyed_account_is_refused_with_duh() -> None:
    """An account with a key never has a plaintext frame accepted."""
    eng = engine()
    eng.receive_data(sia(4, account="5678"))
    [event] = drain(eng)
    assert isinstance(event, Rejected)
    assert event.reason == "plaintext_refused"
    assert event.reply is not None
    assert dc09.decode_reply(event.reply).kind is Reply.DUH


def test_a_good_frame_sharing_a_read_with_a_bad_one_comes_out() -> None:
    """Garbage, a bad CRC and a good frame in one read: two rejections, then the good frame."""
    bad = bytearray(sia(5))
    bad[3] ^= 0x01
    eng = engine()
    eng.receive_data(b"junk" + bytes(bad) + sia(6))
    events = drain(eng)
    assert [type(e).__name__ for e in events] == ["Rejected", "Rejected", "Accepted"]
    assert isinstance(events[0], Rejected)
    assert events[0].framing
    assert eng.pending_bytes == 0


def test_datagram_is_one_frame_and_oversized_ones_are_rejected() -> None:
    """A datagram (NUL padded) is judged whole; one longer than max_frame is not even read."""
    eng = engine(ReceiverRules(max_frame=64))
    event = eng.receive_datagram(dc09.encode_frame("NULL", 1, "1234") + b"\x00" * 5)
    assert isinstance(event, Accepted)
    big = eng.receive_datagram(b"\n" + b"9" * 100 + b"\r")
    assert isinstance(big, Rejected)
    assert (big.reason, big.reply, big.framing) == ("oversized", None, True)


def test_rules_refuse_replies_the_protocol_does_not_allow() -> None:
    """A bad CRC cannot be ACKed or DUH'd by configuration."""
    with pytest.raises(LocalProtocolError):
        ReceiverRules(bad_crc_reply=Reply.ACK)
    with pytest.raises(LocalProtocolError):
        ReceiverRules(unknown_account=Reply.NONE)


def test_a_bug_while_judging_costs_that_frame_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception outside the error tree while one frame is judged comes out as ``Crashed``
    (DUH echoing its header); the frames around it in the same bytes are still accepted."""
    real = parse_events

    def parse(token: str, data: str) -> tuple[Event, ...]:
        if "BA002" in data:
            raise RuntimeError("a bug in the codec")
        return real(token, data)

    monkeypatch.setattr("protocols.dc09_engine.parse_events", parse)
    eng = engine()
    eng.receive_data(sia(1) + sia(2) + sia(3))
    first, crashed, third = drain_all(eng)
    assert isinstance(first, Accepted)
    assert isinstance(third, Accepted)
    assert isinstance(crashed, Crashed)
    assert isinstance(crashed.exception, RuntimeError)
    assert crashed.reply is not None
    assert dc09.decode_reply(crashed.reply).kind is Reply.DUH


def drain_all(eng: Dc09Engine[str]) -> list[Accepted[str] | Rejected | Crashed]:
    out: list[Accepted[str] | Rejected | Crashed] = []
    while (event := eng.next_event()) is not NEED_DATA:
        assert not isinstance(event, type(NEED_DATA))
        out.append(event)
    return out


NEW_KEY = bytes.fromhex("F0E0D0C0B0A090807060504030201000")


@pytest.mark.parametrize(("grace", "accepted"), [(60.0, True), (-1.0, False)])
def test_the_previous_key_is_accepted_in_its_grace_and_acked_under_it(
    grace: float, accepted: bool
) -> None:
    """Account rotated from KEY to NEW_KEY: a frame under KEY is accepted while the grace lasts
    (its ACK encrypted under KEY), refused after it."""
    policy = AccountPolicy(
        "rotated", key=NEW_KEY, previous_key=KEY, grace_until=NOW.timestamp() + grace
    )
    eng = Dc09Engine(lambda _: policy, clock=lambda: NOW, rand=lambda n: PAD[:n])
    event = eng.receive_datagram(cid_aes(7))
    assert isinstance(event, Accepted) is accepted
    if isinstance(event, Accepted):
        assert dc09.decode_reply(event.reply, key=KEY).kind is Reply.ACK


@given(good_frames)
def test_an_accepted_frame_is_what_the_constructors_and_the_general_decoder_build(
    raw: bytes,
) -> None:
    """The hot path fills Accepted (and the common frame) slot by slot and picks the plain ACK
    itself: the event equals the one the constructors build from the general decoder's frame,
    the events parsed from it and the ACK ``dc09.ack`` builds."""
    event = engine().judge(raw)
    if not isinstance(event, Accepted):
        return
    header = event.header
    key = event.account.key if event.account is not None else None
    frame = dc09.decode_frame(raw, key=key, now=NOW)
    reply = dc09.ack(header, key=key if header.encrypted else None, now=NOW, rand=lambda n: PAD[:n])
    rebuilt = Accepted(frame, parse_events(header.token, frame.data), event.account, reply, NOW)
    assert event == rebuilt
