"""Supervision: a silent link raises one trouble, traffic restores it; no real time passes."""

from __future__ import annotations

from datetime import UTC, datetime

import trio
import trio.testing

from protocols.signal import Signal
from receiver.journal import AppendResult
from receiver.supervisor import Supervisor


class Recorder:
    """A journal stand-in that keeps what the supervisor writes (unit test only)."""

    def __init__(self) -> None:
        self.signals: list[Signal] = []
        self.troubles: list[tuple[str, int, bool]] = []

    async def append(
        self, signals: list[Signal], *, troubles: list[tuple[str, int, bool]]
    ) -> AppendResult:
        self.signals.extend(signals)
        self.troubles.extend(troubles)
        return AppendResult(tuple(signals), ())


SUBJECT = {"account": "1234", "account_id": 7, "effective_account": "1234"}


async def test_missed_deadline_writes_one_trouble_and_traffic_restores(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """90 s interval, grace 1.5: trouble at 135 s, only one, then a restore on traffic."""
    sink = Recorder()
    sup = Supervisor(sink, grace=1.5)
    async with trio.open_nursery() as nursery:
        sup.watch("account:7", 90.0, SUBJECT)
        await nursery.start(sup.run)
        await trio.sleep(134)
        assert sink.signals == []
        await trio.sleep(2)
        assert [(s.cid.qualifier, s.cid.code) for s in sink.signals if s.cid] == [("E", "356")]
        await trio.sleep(1000)
        assert len(sink.signals) == 1, "a trouble is written once, not once per interval"
        sup.seen("account:7")
        await trio.sleep(0.1)
        assert [(s.cid.qualifier, s.cid.code) for s in sink.signals if s.cid] == [
            ("E", "356"),
            ("R", "356"),
        ]
        assert sink.signals[0].account == "1234"
        assert [open_ for _, _, open_ in sink.troubles] == [True, False]
        nursery.cancel_scope.cancel()


async def test_traffic_keeps_the_link_quiet(autojump_clock: trio.testing.MockClock) -> None:
    """A link polled every 60 s with a 90 s interval never raises a trouble."""
    sink = Recorder()
    sup = Supervisor(sink)
    async with trio.open_nursery() as nursery:
        sup.watch("account:7", 90.0, SUBJECT)
        await nursery.start(sup.run)
        for _ in range(20):
            await trio.sleep(60)
            sup.seen("account:7")
        assert sink.signals == []
        nursery.cancel_scope.cancel()


async def test_open_trouble_survives_restart_without_a_second_trouble(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A link whose trouble was open before a restart gets its restore, not another trouble."""
    sink = Recorder()
    sup = Supervisor(sink, wall_clock=lambda: datetime(2026, 1, 1, tzinfo=UTC))
    async with trio.open_nursery() as nursery:
        sup.watch("account:7", 90.0, SUBJECT, trouble_open=True)
        await nursery.start(sup.run)
        await trio.sleep(500)
        assert sink.signals == []
        sup.seen("account:7")
        await trio.sleep(0.1)
        assert [s.cid.qualifier for s in sink.signals if s.cid] == ["R"]
        nursery.cancel_scope.cancel()
