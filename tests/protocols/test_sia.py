"""SIA DC-03 data blocks: the vectors, real panel quirks, the formatter and its round trip."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import LocalProtocolError, PayloadError, RemoteProtocolError, Reply
from protocols.sia import format_block, parse_block
from protocols.signal import SiaView
from tests.conftest import load_vectors


def _vectors() -> list[Any]:
    return [pytest.param(v, id=v["data"]) for v in load_vectors("sia_dc03_blocks.json")["vectors"]]


@pytest.mark.parametrize("vector", _vectors())
def test_vector(vector: dict[str, Any]) -> None:
    """Each block of sia_dc03_blocks.json gives exactly the expected events and modifiers."""
    _, events, _ = parse_block(vector["data"])
    assert len(events) == len(vector["expected_events"])
    for event, expected in zip(events, vector["expected_events"], strict=True):
        assert event.code == expected["code"]
        assert event.address == expected["addr"]
        modifiers = {k: v for k, v in expected.items() if k not in ("code", "addr", "text")}
        assert dict(event.modifiers) == modifiers
        if "text" in expected:
            assert event.text == expected["text"]


def test_ascii_block_text_lands_on_the_event() -> None:
    """'|Atest' (fioletoven) and '/AFire Zone 2' (Eaton) become the event's text."""
    assert parse_block("#1234|NRR|Atest") == (
        "1234",
        (SiaView("RR", "", (), "test"),),
        frozenset(),
    )
    _, events, _ = parse_block("#1234|Nri2/FA2/AFire Zone 2")
    assert events == (SiaView("FA", "2", (("ri", "2"),), "Fire Zone 2"),)


# Data blocks seen inside real and published DC-09 frames, with the quirks they need.
REAL_BLOCKS = [
    ("#78919|Nri1/BA012", "78919", [SiaView("BA", "012", (("ri", "1"),))], set()),
    ("#0000|Nri0/RP0000", "0000", [SiaView("RP", "0000", (("ri", "0"),))], set()),
    ("#51449|Nri0000/LR", "51449", [SiaView("LR", "", (("ri", "0000"),))], set()),
    ("#EA1984|Nri0/RP0000", "EA1984", [SiaView("RP", "0000", (("ri", "0"),))], set()),
    ("36214|NRP", "36214", [SiaView("RP", "")], {"quirk:account_without_hash"}),
    ("3044|NBC1", "3044", [SiaView("BC", "1")], {"quirk:account_without_hash"}),
    ("|Nri1/CL501", None, [SiaView("CL", "501", (("ri", "1"),))], {"quirk:no_account"}),
    ("Nri1/WA000", None, [SiaView("WA", "000", (("ri", "1"),))], {"quirk:no_account"}),
    (
        "#123456|Nri0KR1^TAST. 001 ^",
        "123456",
        [SiaView("KR", "1", (("ri", "0"),), "TAST. 001 ")],
        {"quirk:no_slash"},
    ),
    (
        "#006969|Nri04/OP001NM",
        "006969",
        [SiaView("OP", "001", (("ri", "04"),), "NM")],
        {"quirk:trailing_data"},
    ),
    ("#AAA|Nri1/XC12", "AAA", [SiaView("XC", "12", (("ri", "1"),))], set()),
    ("#1|NNL2", "1", [SiaView("NL", "2")], set()),
    ("#1|NL2", "1", [SiaView("NL", "2")], {"quirk:no_function_code"}),
    ("#1|OBA3", "1", [SiaView("BA", "3")], {"quirk:old_event"}),
    (
        "#1|N/ri4|FA2",
        "1",
        [SiaView("FA", "2", (("ri", "4"),))],
        {"quirk:pipe_separator"},
    ),
    (
        "#1|Npi07/id3/ri1/TA5",
        "1",
        [SiaView("TA", "5", (("pi", "07"), ("id", "3"), ("ri", "1")))],
        set(),
    ),
    ("#1|Nri1/ZQ12", "1", [SiaView("ZQ", "12", (("ri", "1"),))], {"unknown_code"}),
    ("#1|Nri1/xy9/BA1", "1", [SiaView("BA", "1", (("ri", "1"), ("xy", "9")))], set()),
    (
        "#1|Nri1/BA1/ri2/BA2",
        "1",
        [SiaView("BA", "1", (("ri", "1"),)), SiaView("BA", "2", (("ri", "2"),))],
        set(),
    ),
    ("#1|NBA1^open", "1", [SiaView("BA", "1", (), "open")], {"quirk:unterminated_text"}),
    (
        "#1|Nri1/BA1/?!/BA2",
        "1",
        [SiaView("BA", "1", (("ri", "1"),)), SiaView("BA", "2", (("ri", "1"),))],
        {"quirk:unparsed_data"},
    ),
]


@pytest.mark.parametrize(("data", "account", "events", "flags"), REAL_BLOCKS)
def test_real_blocks(
    data: str, account: str | None, events: list[SiaView], flags: set[str]
) -> None:
    """Real panel data blocks parse to the events an operator should see, quirks flagged."""
    assert parse_block(data) == (account, tuple(events), frozenset(flags))


@pytest.mark.parametrize("data", ["", "#1234|", "#1234", "hello world", "#12 4|NBA1", "12345"])
def test_not_a_sia_block(data: str) -> None:
    """Data with no SIA event in it is a PayloadError (DUH)."""
    with pytest.raises(PayloadError) as info:
        parse_block(data)
    assert info.value.reply is Reply.DUH


def test_format_bytes() -> None:
    """The simulator's block is '#acct|N' with modifiers written once and held."""
    events = [SiaView("BA", "01", (("ri", "1"),)), SiaView("BA", "02", (("ri", "1"),))]
    assert format_block("1234", events) == "#1234|Nri1/BA01/BA02"
    assert format_block(None, [SiaView("RP", "")]) == "NRP"


def test_format_refuses_dropped_modifier() -> None:
    """A later event without the area an earlier one set cannot be written in one block."""
    with pytest.raises(LocalProtocolError):
        format_block("1", [SiaView("BA", "1", (("ri", "1"),)), SiaView("BA", "2")])


def test_format_refuses_caret_in_text() -> None:
    """Text containing '^' cannot be carried in ^text^."""
    with pytest.raises(LocalProtocolError):
        format_block("1", [SiaView("BA", "1", (), "a^b")])


_MODIFIER_VALUES = {
    "ri": st.text(st.sampled_from("0123456789"), max_size=4),
    "id": st.text(st.sampled_from("0123456789"), max_size=4),
    "pi": st.text(st.sampled_from("0123456789"), max_size=3),
    "zq": st.text(st.sampled_from("0123456789"), max_size=3),
    "ti": st.builds(
        lambda h, m, s: f"{h:02d}:{m:02d}" + ("" if s is None else f":{s:02d}"),
        st.integers(0, 23),
        st.integers(0, 59),
        st.none() | st.integers(0, 59),
    ),
    "da": st.builds(
        lambda mo, d, y: f"{mo:02d}-{d:02d}-{y:02d}",
        st.integers(1, 12),
        st.integers(1, 31),
        st.integers(0, 99),
    ),
}
_updates = st.lists(
    st.sampled_from(sorted(_MODIFIER_VALUES)).flatmap(
        lambda name: st.tuples(st.just(name), _MODIFIER_VALUES[name])
    ),
    max_size=3,
)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[str | None, tuple[SiaView, ...]]:
    """An account and events whose modifiers evolve the way a DC-03 block holds them."""
    account = draw(st.none() | st.text(st.sampled_from("0123456789ABCDEFabc"), min_size=1))
    state: dict[str, str] = {}
    events = []
    for _ in range(draw(st.integers(1, 4))):
        state.update(draw(_updates))
        events.append(
            SiaView(
                code=draw(
                    st.text(st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), min_size=2, max_size=2)
                ),
                address=draw(st.text(st.sampled_from("0123456789"), max_size=4)),
                modifiers=tuple(state.items()),
                text=draw(st.none() | st.text(max_size=12).filter(lambda t: "^" not in t)),
            )
        )
    return account, tuple(events)


@given(blocks())
def test_round_trip(block: tuple[str | None, tuple[SiaView, ...]]) -> None:
    """parse_block(format_block(a, events)) gives back the same account and events."""
    account, events = block
    parsed_account, parsed, _ = parse_block(format_block(account, events))
    assert (parsed_account, parsed) == (account, events)


@given(st.text(max_size=40))
def test_random_text_raises_only_project_errors(text: str) -> None:
    """Random text never raises anything but a RemoteProtocolError."""
    with contextlib.suppress(RemoteProtocolError):
        parse_block(text)


@given(st.text(st.sampled_from("#|/^NOAriti:da-0123BAKRCLOP xy"), max_size=40))
def test_random_sia_like_text_raises_only_project_errors(text: str) -> None:
    """Text from the SIA alphabet (the likelier way to hit a corner) is also safe."""
    try:
        _, events, _ = parse_block(text)
    except RemoteProtocolError:
        return
    assert events


def _newlines_as_returns(
    decoded: tuple[str | None, tuple[SiaView, ...], frozenset[str]],
) -> tuple[str | None, tuple[SiaView, ...], frozenset[str]]:
    account, events, flags = decoded
    swapped = tuple(
        SiaView(e.code, e.address, e.modifiers, e.text.replace("\n", "\r") if e.text else e.text)
        for e in events
    )
    return account, swapped, flags


def test_an_a_packet_before_a_final_line_end_is_an_event_for_cr_and_lf_alike() -> None:
    """ "/AT" (AC trouble) followed by a stray line end at the block's end is the event, its
    line end flagged as trailing data, whether that is "\n", "\r" or both; followed by other
    text it is a text record, as before. Before, ``$`` in the packet's lookahead matched
    before a final "\n" only: with "\r" the AC trouble became the text "T\r" on the alarm."""
    for end in ("\n", "\r", "\r\n", "\n\n"):
        assert parse_block(f"#1234|NBA12/AT{end}") == (
            "1234",
            (SiaView("BA", "12"), SiaView("AT", "", (), end)),
            frozenset({"quirk:trailing_data"}),
        ), repr(end)
    _, events, _ = parse_block("#1234|NBA12/AT x")
    assert events == (SiaView("BA", "12", (), "T x"),)
    _, events, _ = parse_block("#1234|Nri2/FA2/AFire Zone 2\r")
    assert events == (SiaView("FA", "2", (("ri", "2"),), "Fire Zone 2\r"),)


SIA_LIKE = st.text(st.sampled_from("#|/^NOAriti:da-0123BAKRCLOP x\n\r"), max_size=30)
# Blocks ending the way that once differed: an "A" packet, then line ends.
ENDINGS = st.sampled_from(["", "/AB", "|AB12", "/AC^t^", "AB", "/ri1BA"])
LINE_ENDS = st.sampled_from(["", "\n", "\r", "\n\n", "\r\n", "\n\r"])


@given(st.builds(lambda *parts: "".join(parts), SIA_LIKE, ENDINGS, LINE_ENDS))
def test_a_newline_decodes_as_a_carriage_return_does(text: str) -> None:
    """Any SIA-like block decodes the same with its "\\n" written as "\\r" (both line ends,
    neither a separator): same events, texts and quirks, or both refused."""
    outcomes: list[tuple[str | None, tuple[SiaView, ...], frozenset[str]] | type[Exception]] = []
    for block in (text, text.replace("\n", "\r")):
        try:
            outcomes.append(parse_block(block))
        except RemoteProtocolError as exc:
            outcomes.append(type(exc))
    first, second = outcomes
    if isinstance(first, tuple):
        first = _newlines_as_returns(first)
    assert first == second
