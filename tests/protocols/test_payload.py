"""parse_events: both views per event, flags, errors, and the fast path against the parsers."""

from __future__ import annotations

import contextlib
import functools
import json
import timeit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import payload
from protocols.errors import PayloadError, RemoteProtocolError, Reply, UnsupportedError
from protocols.payload import Event, parse_events
from protocols.signal import ContactIdView, SiaView
from tests.conftest import load_vectors


def test_sia_event_gets_derived_contact_id() -> None:
    """'#1234|Nri1/BA012' is a burglary alarm, shown as Contact ID E130 group 01 zone 012."""
    assert parse_events("SIA-DCS", "#1234|Nri1/BA012") == (
        Event(
            cid=ContactIdView("E", "130", "01", "012"),
            sia=SiaView("BA", "012", (("ri", "1"),)),
            name="Burglary Alarm",
            category="alarm",
            account="1234",
            flags=frozenset(),
        ),
    )


def test_cid_event_gets_derived_sia() -> None:
    """'#1234|1131 01 009' is a perimeter alarm, shown as SIA BA in area 01 on zone 009."""
    assert parse_events("ADM-CID", "#1234|1131 01 009") == (
        Event(
            cid=ContactIdView("E", "131", "01", "009"),
            sia=SiaView("BA", "009", (("ri", "01"),)),
            name="Perimeter",
            category="alarm",
            account="1234",
            flags=frozenset(),
        ),
    )


def test_multi_event_block_keeps_every_event() -> None:
    """A block with two events yields two events, the area held for both."""
    events = parse_events("SIA-DCS", "#1|Nri1/BA01/BA02")
    assert [(e.sia.code, e.sia.address, e.cid.zone) for e in events if e.sia and e.cid] == [
        ("BA", "01", "001"),
        ("BA", "02", "002"),
    ]


@pytest.mark.parametrize(
    ("token", "data"),
    [("SIA-DCS", "#1234|Nri1/ZQ12"), ("ADM-CID", "#1234|1999 01 009")],
)
def test_unknown_code_is_kept_and_flagged(token: str, data: str) -> None:
    """An unknown code is forwarded raw with the unknown_code flag, never dropped or DUHed."""
    (event,) = parse_events(token, data)
    assert event.flags == frozenset({"unknown_code"})
    assert event.name is None
    assert (event.sia or event.cid) is not None


def test_quirks_become_event_flags() -> None:
    """Tolerated quirks of the block show on each of its events."""
    (event,) = parse_events("ADM-CID", "10064|1602 00 000")
    assert event.account == "10064"
    assert event.flags == frozenset({"quirk:account_without_hash"})
    (event,) = parse_events("SIA-DCS", "|Nri1/CL501")
    assert event.account is None
    assert event.flags == frozenset({"quirk:no_account"})


def test_null_gives_no_events_even_with_data() -> None:
    """NULL polls carry no events; stray data inside them is tolerated."""
    assert parse_events("NULL", "") == ()
    assert parse_events("NULL", "#1234|junk") == ()


def test_an_empty_sia_block_is_a_link_test() -> None:
    """``SIA-DCS`` with ``[]`` carries no event (a link test, like NULL), not a DUH."""
    assert parse_events("SIA-DCS", "") == ()


def test_other_token_is_unsupported() -> None:
    """A token the receiver cannot handle answers DUH."""
    with pytest.raises(UnsupportedError) as info:
        parse_events("ACR-SF", "#1|x")
    assert info.value.reply is Reply.DUH


@pytest.mark.parametrize(("token", "data"), [("SIA-DCS", "hello"), ("ADM-CID", "#1|hello")])
def test_unparseable_is_payload_error(token: str, data: str) -> None:
    """Data that is no SIA block or Contact ID event answers DUH."""
    with pytest.raises(PayloadError) as info:
        parse_events(token, data)
    assert info.value.reply is Reply.DUH


def _vector_payloads() -> list[tuple[str, str]]:
    """(token, data) of every DC-09 vector frame and plaintext that carries events."""
    found = []
    for name in ("dc09_frames.json", "dc09_encrypted.json"):
        text = json.dumps(load_vectors(name))
        for token in ("SIA-DCS", "ADM-CID"):
            for part in text.split(f'\\"{token}\\"')[1:]:
                start = part.find("[")
                end = part.find("]", start)
                if 0 <= start < end and part[start + 1 : start + 2] in "#|0123456789N":
                    found.append((token, part[start + 1 : end]))
    return sorted(set(found))


def test_every_vector_payload_decodes() -> None:
    """Every event payload inside the DC-09 vectors gives at least one named event."""
    payloads = _vector_payloads()
    assert len(payloads) >= 12
    for token, data in payloads:
        events = parse_events(token, data)
        assert events, data
        assert all(e.cid is not None or e.sia is not None for e in events)


simple_sia = st.builds(
    lambda acct, ri, code, addr: f"#{acct}|N" + ("" if ri is None else f"ri{ri}/") + code + addr,
    st.text(st.sampled_from("0123456789ABCDEF"), min_size=1, max_size=8),
    st.none() | st.text(st.sampled_from("0123456789"), max_size=4),
    st.sampled_from(sorted(["BA", "BH", "FA", "CL", "OP", "RP", "NL", "NR", "ZQ", "AT", "XC"])),
    st.text(st.sampled_from("0123456789"), max_size=5),
)
simple_cid = st.builds(
    lambda acct, q, code, g, z: f"#{acct}|{q}{code} {g} {z}",
    st.text(st.sampled_from("0123456789ABCDEF"), min_size=1, max_size=8),
    st.sampled_from("1369"),
    st.sampled_from(["130", "131", "401", "602", "999", "1A0"]),
    st.text(st.sampled_from("0123456789ABCDEF"), min_size=2, max_size=2),
    st.text(st.sampled_from("0123456789ABCDEF"), min_size=3, max_size=3),
)


@given(simple_sia)
def test_sia_fast_path_matches_general_parser(data: str) -> None:
    """The hand-sliced fast path gives exactly what the general SIA parser gives."""
    fast = payload._fast_sia(data)
    if fast is not None:
        assert fast == payload._general_sia(data)


@given(simple_cid)
def test_cid_fast_path_matches_general_parser(data: str) -> None:
    """The hand-sliced fast path gives exactly what the general ADM-CID parser gives."""
    fast = payload._fast_cid(data)
    if fast is not None:
        assert fast == payload._general_cid(data)


@given(st.sampled_from(["SIA-DCS", "ADM-CID", "NULL"]), st.text(max_size=40))
def test_random_data_raises_only_project_errors(token: str, data: str) -> None:
    """Random data never raises anything but a RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        parse_events(token, data)


def test_fast_path_cost_is_reported() -> None:
    """The common shapes take the fast path (not a timing assertion: the figure is printed)."""
    for token, data in (("SIA-DCS", "#1234|Nri1/BA012"), ("ADM-CID", "#1234|1131 01 009")):
        fast = payload._fast_sia(data) if token == "SIA-DCS" else payload._fast_cid(data)
        assert fast is not None
        n = 2000
        cost = timeit.timeit(functools.partial(parse_events, token, data), number=n) / n
        print(f"parse_events({token}, {data!r}): {cost * 1e6:.2f} us")


_NEAR_SHAPES = st.builds(
    str.__add__,
    st.sampled_from(["#1234|N", "#1234|Nri", "#12|1", "#A|3", "#1|6", "#|N", ""]),
    st.text(st.sampled_from(list("#|Nri/0123456789ABCDEFZaz \n\u0660")), max_size=14),
)


@given(_NEAR_SHAPES)
def test_fast_paths_decline_or_agree_with_the_general_parsers_near_their_shapes(data: str) -> None:
    """Text close to the common shapes (stray bars, slashes, spaces, lower case, non-ASCII
    digits): each fast path declines, or gives exactly what the general parser gives."""
    fast_sia = payload._fast_sia(data)
    if fast_sia is not None:
        assert fast_sia == payload._general_sia(data)
    fast_cid = payload._fast_cid(data)
    if fast_cid is not None:
        assert fast_cid == payload._general_cid(data)
