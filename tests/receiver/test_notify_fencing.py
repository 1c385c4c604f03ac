"""A notifier without a journal saves its cursor through the store itself, fenced as the
journal's writes are: once the lease it works under changed hands, the save is refused (the
cursor in the SQLite file stays where the new holder has it), the hold is told, and the
notifier keeps its own cursor where it was (those lines are sent again: at-least-once)."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
from structlog.testing import capture_logs

from receiver.config import NotifyConfig
from receiver.journal import UNDER_LEASE
from receiver.notify import Notifier, cursor_name
from receiver.store.interface import FencingToken
from receiver.store.lease_sql import SqliteLeaseStore
from receiver.store.sqlite_store import SqliteStore


@attrs.define
class Hold:
    """What ``receiver.nodes`` sets in ``UNDER_LEASE`` for the work under a lease."""

    token: FencingToken
    refusals: int = 0

    def refused(self) -> None:
        self.refusals += 1


def stored_cursor(db: Path, name: str) -> int:
    store = SqliteStore(db)
    try:
        (state,) = store.output_states([cursor_name(name)])
        return state.cursor
    finally:
        store.close()


async def test_a_cursor_save_under_a_lease_that_changed_hands_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "j.sqlite3"
    leases = SqliteLeaseStore(db)
    first = leases.acquire_lease("notify", "node-a", 30)
    assert first is not None
    target = NotifyConfig(name="it", to=("it@station.example",), sender="r@station.example")
    notifier = Notifier([target], SqliteStore(db), None)
    await trio.to_thread.run_sync(notifier._open)
    (it,) = notifier.targets
    hold = Hold(first.token)
    UNDER_LEASE.set(hold)

    it.read_to = 5
    await notifier._save(it)  # still the holder: saved
    assert (it.cursor, stored_cursor(db, "it"), hold.refusals) == (5, 5, 0)

    assert leases.release_lease("notify", "node-a")
    assert leases.acquire_lease("notify", "node-b", 30) is not None
    it.read_to = 9
    with capture_logs() as logs:
        await notifier._save(it)
    assert stored_cursor(db, "it") == 5  # refused: nothing of it stored
    assert (it.cursor, hold.refusals) == (5, 1)
    assert [e["event"] for e in logs] == ["notify_cursor_not_saved"]
    assert "lease" in logs[0]["error"]

    UNDER_LEASE.set(None)  # no lease (a single node's notifier): never refused
    await notifier._save(it)
    assert (it.cursor, stored_cursor(db, "it")) == (9, 9)
    notifier.store.close()
    leases.close()
