"""The in-memory store fences writes made under a lease as the SQLite store does
(``receiver/store/fencing.py``): a component tested on it sees a lost lease refused."""

from __future__ import annotations

from receiver.store.interface import (
    CursorUpdate,
    FencingToken,
    JournalWrite,
    LinkSeen,
    LinkTrouble,
)
from receiver.store.memory import MemoryStore
from tests.receiver.test_journal import make_signal


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _stored(store: MemoryStore) -> list[str]:
    return [signal.account for _, signal in store.read_after(0, 100)]


def test_a_write_under_a_lease_that_changed_hands_is_refused_and_nothing_of_it_is_stored() -> None:
    """A's late write (signal, key, link, trouble, cursor) is refused whole; the panel's signal
    and B's write in the same batch commit, and the refused key is still free."""
    store = MemoryStore()
    store.ensure_output("xml", 0)
    a = store.acquire_lease("output:xml", "a", 30)
    assert a is not None
    assert store.release_lease("output:xml", "a")
    b = store.acquire_lease("output:xml", "b", 30)
    assert b is not None
    assert (a.epoch, b.epoch) == (1, 2)
    late = JournalWrite(
        signals=[make_signal("7001")],
        keys=["late-key"],
        links=[LinkSeen("account:7001", 5)],
        troubles=[LinkTrouble("account:7001", 5, True)],
        cursors=[CursorUpdate("xml", 40, delivered=40)],
        fence=a.token,
    )
    panel = JournalWrite(signals=[make_signal("7002")], keys=["panel-key"])
    current = JournalWrite(
        signals=[make_signal("7003")], cursors=[CursorUpdate("xml", 1, delivered=1)], fence=b.token
    )
    outcomes = store.append([late, panel, current])
    assert [o.refused for o in outcomes] == [True, False, False]
    assert outcomes[0].stored == ()
    assert outcomes[0].duplicates == ()
    assert _stored(store) == ["7002", "7003"]
    assert "account:7001" not in store.links()
    (state,) = store.output_states(["xml"])
    assert (state.cursor, state.delivered) == (1, 1)
    (again,) = store.append([JournalWrite(signals=[make_signal("7001")], keys=["late-key"])])
    assert (len(again.stored), again.duplicates) == (1, ())


def test_each_take_is_a_new_epoch_and_a_lease_without_a_row_is_not_held() -> None:
    store = MemoryStore()
    first = store.acquire_lease("supervisor", "a", 30)
    again = store.acquire_lease("supervisor", "a", 30)  # unexpired, already ours
    renewed = store.renew_lease("supervisor", "a", 30)
    assert first is not None
    assert again is not None
    assert renewed is not None
    assert (first.epoch, again.epoch, renewed.epoch) == (1, 2, 2)
    outcomes = store.append(
        [
            JournalWrite(signals=[make_signal("7101")], fence=first.token),
            JournalWrite(signals=[make_signal("7102")], fence=FencingToken("nowhere", "a", 1)),
            JournalWrite(signals=[make_signal("7103")], fence=renewed.token),
        ]
    )
    assert [o.refused for o in outcomes] == [True, True, False]
    assert _stored(store) == ["7103"]
    assert store.appends == 1  # the refused tries applied nothing


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_renew_it() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    a = store.acquire_lease("output:xml", "a", 30)
    assert a is not None
    assert store.acquire_lease("output:xml", "b", 30) is None  # A still holds it
    clock.now += 31
    assert store.leases() == []
    b = store.acquire_lease("output:xml", "b", 30)
    assert b is not None
    assert b.epoch == 2
    assert store.renew_lease("output:xml", "a", 30) is None
    assert store.release_lease("output:xml", "a") is False
    assert [lease.holder for lease in store.leases()] == ["b"]
    (outcome,) = store.append([JournalWrite(signals=[make_signal("7201")], fence=a.token)])
    assert outcome.refused


def test_a_direct_cursor_save_under_a_lost_lease_is_refused() -> None:
    """The dispatcher's shutdown save (``save_cursor`` with its hold's token) is fenced too."""
    store = MemoryStore()
    store.ensure_output("xml", 0)
    a = store.acquire_lease("output:xml", "a", 30)
    assert a is not None
    assert store.save_cursor(CursorUpdate("xml", 2, delivered=2), a.token)
    assert store.release_lease("output:xml", "a")
    b = store.acquire_lease("output:xml", "b", 30)
    assert b is not None
    assert not store.save_cursor(CursorUpdate("xml", 9, delivered=9), a.token)
    (state,) = store.output_states(["xml"])
    assert (state.cursor, state.delivered) == (2, 2)
    assert store.save_cursor(CursorUpdate("xml", 3, delivered=3), b.token)
    assert store.save_cursor(CursorUpdate("xml", 4, delivered=4))  # no token: never refused
