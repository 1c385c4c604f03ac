"""Waiting for another process's SQLite write lock (``begin_immediate``): fine steps while the
wait is as young as another writer's commit, so a waiter starts its own commit a fine step after
the other's instead of sleeping through up to 2 ms more; coarser steps after that; and the wait
still gives up after its 30 s bound (nothing is then stored, the caller does not ACK).

The other writer is a real process holding a real write transaction on a real file; the
waiter's clock and sleeps are a fake clock, so the schedule is read, never timed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from receiver.store import sqlite_store
from receiver.store.sqlite import connect
from receiver.store.sqlite_store import begin_immediate

_ROOT = Path(__file__).resolve().parents[2]

# Another receiver process's writer: holds a write transaction until a line arrives on stdin.
_HOLDER = """
import sys
from receiver.store.sqlite import connect
conn = connect(sys.argv[1])
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO links (link, last_seen_us) VALUES ('holder', 1)")
print("held", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
sys.stdin.readline()
"""


@contextmanager
def _holder(store: Path) -> Iterator[subprocess.Popen[str]]:
    """A process holding a write transaction on ``store`` (it printed ``held``)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store)],
        cwd=_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "held\n"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


class _FakeTime:
    """``time`` for ``begin_immediate``: sleeping advances the clock; ``at`` runs once when
    the clock passes its moment."""

    def __init__(self, at: float = float("inf"), then: Callable[[], None] = lambda: None) -> None:
        self.now = 1000.0
        self.start = self.now
        self.steps: list[tuple[float, float]] = []  # (waited so far, step)
        self._at, self._then = at, then

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.steps.append((self.now - self.start, seconds))
        self.now += seconds
        if self.now - self.start >= self._at:
            self._at = float("inf")
            self._then()


def _store(tmp_path: Path) -> tuple[Path, sqlite3.Connection]:
    path = tmp_path / "r.sqlite3"
    conn = connect(path)
    conn.execute("PRAGMA busy_timeout = 0")  # as the store's connection
    return path, conn


def test_a_waiter_polls_in_fine_steps_and_begins_a_fine_step_after_the_other_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, conn = _store(tmp_path)
    with _holder(path) as holder:
        stdin, stdout = holder.stdin, holder.stdout
        assert stdin is not None
        assert stdout is not None

        def commit() -> None:
            stdin.write("commit\n")
            stdin.flush()
            assert stdout.readline() == "committed\n"

        fake = _FakeTime(at=0.05, then=commit)  # the other's commit lasts 50 ms of the clock
        monkeypatch.setattr(sqlite_store, "time", fake)
        begin_immediate(conn)
        assert conn.in_transaction
        conn.execute("ROLLBACK")
    # Until the commit, no step exceeded 0.25 ms; the waiter began one step after it.
    assert max(step for _, step in fake.steps) <= 0.00025
    assert fake.now - fake.start < 0.05 + 0.00025 + 1e-9
    conn.close()


def test_a_long_wait_backs_off_and_gives_up_after_its_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, conn = _store(tmp_path)
    with _holder(path):
        fake = _FakeTime()
        monkeypatch.setattr(sqlite_store, "time", fake)
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            begin_immediate(conn)
        assert not conn.in_transaction
    assert 30.0 < fake.now - fake.start < 30.0 + 0.002 + 1e-9
    fine = [step for waited, step in fake.steps if waited < 0.1]
    late = [step for waited, step in fake.steps if waited >= 0.2]
    assert max(fine) <= 0.00025
    assert set(late) == {0.002}  # a stopped holder costs one attempt per 2 ms, not per 0.25
    with sqlite3.connect(path) as reader:  # the holder's uncommitted row is not there
        assert reader.execute("SELECT count(*) FROM links").fetchone()[0] == 0
    conn.close()
