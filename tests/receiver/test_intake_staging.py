"""Intake staging: the engine's accepted frames as Signals and dedupe keys, and the account
lookup the engine asks per frame. The shortcuts (one event staged without a list, lookups
remembered per registry index) give what the general formulation gives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from protocols import dc09
from protocols.dc09_engine import Accepted
from protocols.signal import Signal
from receiver.config import Dc09Config
from receiver.ingest.intake import Dc09Intake
from receiver.registry_index import ResolvedAccount

NOW = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def _account(number: str, account_id: int, *, supervised: bool = False) -> ResolvedAccount:
    return ResolvedAccount(
        account_id=account_id,
        station="S1",
        line="1",
        number=number,
        effective=number.upper(),
        site_id=None,
        site_name=None,
        dealer=None,
        key=None,
        key_format=None,
        supervision=60.0 if supervised else None,
        window_past=None,
        window_future=None,
        window_policy=None,
    )


class _Index:
    """A registry index: ``accounts`` by (line, account as received)."""

    def __init__(self, accounts: dict[tuple[str | None, str], ResolvedAccount]) -> None:
        self.accounts = accounts
        self.calls = 0

    def resolve(self, station: str | None, line: str | None, account: str) -> Any:
        self.calls += 1
        return self.accounts.get((line, account))


def _intake(index: list[_Index]) -> Dc09Intake:
    return Dc09Intake(Dc09Config(), journal=None, registry=lambda: index[0])  # type: ignore[arg-type, return-value]


def _general_stage(intake: Dc09Intake, accepted: Accepted[Any], peer: str) -> tuple[Any, ...]:
    """What staging means, event by event (the formulation before the one-event shortcut)."""
    account = accepted.account.record if accepted.account is not None else None
    frame, header = accepted.frame, accepted.frame.header
    signals = [
        Signal.from_dc09(frame, event, received_at=accepted.received_at, peer=peer, account=account)
        for event in accepted.events
    ]
    keys = [
        f"{s.effective_account}|{header.token}|{header.sequence}|{header.receiver}|"
        f"{header.line}|{frame.data}|{i}"
        for i, s in enumerate(signals)
    ]
    return [attrs.evolve(s, id="") for s in signals], keys


_SIA_EVENT = st.sampled_from(["BA", "BR", "FA", "OP", "CL", "ZZ"]).flatmap(
    lambda code: st.integers(0, 999).map(lambda zone: f"{code}{zone:03d}")
)
_DATA = st.one_of(
    st.lists(_SIA_EVENT, min_size=1, max_size=4).map(
        lambda ev: ("SIA-DCS", "#1234|N" + "/".join(ev))
    ),
    st.tuples(st.sampled_from("136"), st.sampled_from(["130", "401", "110", "999"])).map(
        lambda q: ("ADM-CID", f"#1234|{q[0]}{q[1]} 01 015")
    ),
    st.just(("NULL", "")),
    st.just(("SIA-DCS", "")),
)


@given(_DATA, st.integers(0, 9999), st.sampled_from(["1234", "9999"]), st.none() | st.just("7"))
def test_staging_gives_the_signals_and_keys_of_the_general_formulation(
    token_data: tuple[str, str], sequence: int, number: str, receiver: str | None
) -> None:
    """Any frame, one event or several or none, known account or not: the same signals (but
    their fresh ids) and dedupe keys as staging event by event; the counts are exact."""
    token, data = token_data
    index = [_Index({("1", "1234"): _account("1234", 5)})]
    intake = _intake(index)
    raw = dc09.encode_frame(token, sequence, number, data, receiver=receiver, line="1")
    accepted = intake.engine().judge(raw)
    assert isinstance(accepted, Accepted)
    staged = intake.stage(accepted, "127.0.0.1:1")
    signals, keys = _general_stage(intake, accepted, "127.0.0.1:1")
    assert [attrs.evolve(s, id="") for s in staged.signals] == signals
    assert staged.keys == keys
    assert len({s.id for s in staged.signals}) == len(signals)
    counts = intake.counters.values
    assert counts["frames_ok"] == 1
    assert counts["frames_link_test"] == (0 if signals else 1)
    assert counts["frames_unknown_account"] == (1 if number == "9999" else 0)


@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("look"),
                st.sampled_from(["1", "2", None]),
                st.sampled_from(["1234", "ab12", "77"]),
            ),
            st.tuples(st.just("swap"), st.none(), st.sampled_from(["1234", "ab12", "77"])),
        ),
        max_size=30,
    )
)
def test_a_remembered_lookup_is_what_the_registry_index_answers(steps: list[Any]) -> None:
    """Lookups and registry refreshes in any order: every answer is the current index's
    (an account added or removed by a refresh is seen at the next frame), one policy object
    per account, and an index is asked once per address."""
    index = [_Index({})]
    intake = _intake(index)
    known: dict[tuple[str | None, str], ResolvedAccount] = {}
    addresses: set[tuple[str | None, str]] = set()  # looked up since the last refresh
    for n, (what, line, number) in enumerate(steps):
        if what == "swap":
            if ("1", number) in known:
                del known[("1", number)]
            else:
                known[("1", number)] = _account(number, n)
            index[0] = _Index(dict(known))
            addresses = set()
            continue
        header = dc09.Dc09Header("SIA-DCS", False, "0001", None, line, number, "hex")
        policy = intake.lookup(header)
        addresses.add((line, number))
        expected = index[0].accounts.get((line, number))
        if expected is None:
            assert policy is None
        else:
            assert policy is not None
            assert policy.record is expected
            assert intake.lookup(header) is policy
        assert index[0].calls == len(addresses)
