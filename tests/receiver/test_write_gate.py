"""The writers' gate: receiver processes writing one SQLite file queue on a flock beside it,
so a waiting writer is woken as the holder commits instead of polling SQLite's lock.

Two store objects in one process hold separate open files, so they contend as two processes
would; the SIGKILL test uses a real child process."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from receiver.store.interface import JournalWrite
from receiver.store.sqlite_store import SqliteStore, write_transaction
from receiver.store.write_gate import WriteGate
from tests.receiver.test_journal import make_signal


def _stored(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM signals").fetchone()[0])


def test_the_gate_file_sits_beside_the_store_once_a_write_happened(tmp_path: Path) -> None:
    path = tmp_path / "receiver.sqlite3"
    store = SqliteStore(path)
    store.append([JournalWrite(signals=[make_signal()])])
    assert (tmp_path / "receiver.sqlite3.writers").exists()
    assert (tmp_path / "receiver.sqlite3.writers").stat().st_mode & 0o777 == 0o600
    store.close()


def test_a_held_gate_makes_an_inline_append_give_way_and_a_waiting_append_follow_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "receiver.sqlite3"
    first, second = SqliteStore(path), SqliteStore(path)
    first.open()
    second.open()
    holder = WriteGate(path)
    assert holder.acquire(wait=False)
    # The gate is held (by "another process"): an inline try writes nothing and says so.
    assert second.append_now([JournalWrite(signals=[make_signal()])]) is None
    assert _stored(path) == 0
    # A blocking append sleeps on the gate and commits once it is released.
    done = threading.Event()

    def append_and_say() -> None:
        first.append([JournalWrite(signals=[make_signal()])])
        done.set()

    worker = threading.Thread(target=append_and_say)
    worker.start()
    assert not done.wait(0.3)
    holder.release()
    assert done.wait(10)
    worker.join()
    assert _stored(path) == 1
    # Free again: the inline path commits.
    assert second.append_now([JournalWrite(signals=[make_signal()])]) is not None
    assert _stored(path) == 2
    for each in (first, second):
        each.close()
    holder.close()


def test_a_transaction_that_fails_releases_the_gate(tmp_path: Path) -> None:
    path = tmp_path / "receiver.sqlite3"
    SqliteStore(path).open()
    gate = WriteGate(path)
    conn = sqlite3.connect(path, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError), write_transaction(conn, gate=gate):
        conn.execute("INSERT INTO no_such_table VALUES (1)")
    assert not conn.in_transaction
    other = WriteGate(path)
    assert other.acquire(wait=False)  # nobody holds it
    other.close()
    gate.close()
    conn.close()


def test_a_writer_killed_while_holding_the_gate_never_blocks_the_others(tmp_path: Path) -> None:
    path = tmp_path / "receiver.sqlite3"
    store = SqliteStore(path)
    store.open()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from receiver.store.write_gate import WriteGate; "
            f"g = WriteGate({str(path)!r}); assert g.acquire(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"held"
        assert store.append_now([JournalWrite(signals=[make_signal()])]) is None
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
        deadline = time.monotonic() + 10
        outcome = None
        while outcome is None and time.monotonic() < deadline:
            outcome = store.append_now([JournalWrite(signals=[make_signal()])])
        assert outcome is not None
        assert _stored(path) == 1
    finally:
        child.kill()
        child.wait()
        store.close()


def test_an_in_memory_database_has_no_gate_and_writes_as_before(tmp_path: Path) -> None:
    gate = WriteGate(":memory:")
    assert gate.path is None
    assert gate.acquire(wait=False)  # nothing to hold
    gate.release()
    gate.close()
