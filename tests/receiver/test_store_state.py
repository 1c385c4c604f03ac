"""Supervision and bridge state kept in the store, on SQLite and on PostgreSQL (``backend``):
a silent link's trouble and its restore are journaled with the link's row, and a bridge's state
survives a restart."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import trio
import trio.testing

from protocols.bridge import ArmState
from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.bridge_state import BridgeStateStore
from receiver.journal import Journal
from receiver.supervisor import Supervisor
from tests.conftest import Backend
from tests.receiver.test_supervisor import SUBJECT

# Under the autojump clock a commit in a worker thread takes no trio time, so each check first
# appends nothing: the journal answers in order, after what the supervisor queued before.


def codes(backend: Backend) -> list[tuple[str, str]]:
    return [
        (str(q), str(c)) for q, c in backend.sql("SELECT qualifier, code FROM signals ORDER BY seq")
    ]


async def test_a_silent_link_gets_one_trouble_and_traffic_restores_it_in_the_store(
    backend: Backend, autojump_clock: trio.testing.MockClock
) -> None:
    """The trouble (E356) and the restore (R356) are journaled with the link's open flag; a
    supervisor started again on that store restores instead of raising a second trouble."""
    journal = Journal(backend.open())
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        supervisor = Supervisor(journal, grace=1.5)
        supervisor.watch("account:7", 90.0, SUBJECT)
        await nursery.start(supervisor.run)
        await trio.sleep(1000)
        await journal.append([])  # after whatever the supervisor queued before it
        assert codes(backend) == [("E", "356")]
        assert backend.sql("SELECT link, trouble_open FROM links") == [("account:7", 1)]
        nursery.cancel_scope.cancel()
    store = backend.open()
    stored = store.links()
    store.close()
    journal = Journal(backend.open())
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        again = Supervisor(journal, grace=1.5)
        again.watch("account:7", 90.0, SUBJECT, trouble_open=stored["account:7"][1])
        await nursery.start(again.run)
        await trio.sleep(1000)
        await journal.append([])
        assert codes(backend) == [("E", "356")], "no second trouble after a restart"
        autojump_clock.autojump_threshold = math.inf  # no next deadline while we look
        again.seen("account:7")
        await trio.testing.wait_all_tasks_blocked()  # the restore is queued
        await journal.append([])
        nursery.cancel_scope.cancel()
    assert codes(backend) == [("E", "356"), ("R", "356")]
    assert backend.sql("SELECT trouble_open FROM links") == [(0,)]


def arming(serial: str, qualifier: str) -> Signal:
    now = datetime.now(UTC)
    return Signal(
        id=new_signal_id(now),
        received_at=now,
        source=Source.BRIDGE,
        account="1234",
        device=serial,
        cid=ContactIdView(qualifier, "401", "01", "000"),
    )


async def test_bridge_state_is_written_through_the_journal_and_read_back(
    backend: Backend,
) -> None:
    """A bridge's firmware and arming go to the store with the journal's commit; a new state
    store loads them, with an arming signal journaled after the last state write replayed."""
    journal = Journal(backend.open())
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        states = BridgeStateStore(backend.open(), journal)
        await nursery.start(states.run)
        ticket = states.update("VB-1", firmware="2.1", armed=ArmState.ARMED, armed_us=1)
        assert ticket is not None
        assert await states.wait_written(ticket)
        await journal.append([arming("VB-1", "E")])  # disarmed, the state row not written yet
        nursery.cancel_scope.cancel()
    loaded = BridgeStateStore(backend.open())
    await loaded.open()
    status = loaded.get("VB-1")
    loaded.store.close()
    assert (status.firmware, status.armed) == ("2.1", ArmState.DISARMED)
