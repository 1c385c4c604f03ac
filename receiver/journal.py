"""The journal: every signal is committed here before anyone acknowledges it.

Rules:
- One writer task drains a bounded channel and commits a whole batch in one worker-thread call
  (SQLite WAL, ``synchronous=FULL``); never a thread call per frame. A full channel makes
  ``append`` wait: backpressure, not unbounded memory, when the disk is slow.
- ``append`` returns only after the transaction holding its signals has committed. If the
  commit fails, ``append`` raises ``JournalError`` and the caller must not ACK: the panel retries
  and the dedupe key absorbs the retry.
- A signal carrying a dedupe key that was committed within the window is not stored again: the
  original row counts the repeat, and ``append`` reports it as a duplicate (ACK it again, never
  forward it again). The store decides (the ``signals_by_dedupe`` index, read inside the
  commit's write transaction), not this process's memory: a retry landing on another ingest
  worker is caught, memory does not grow with rate x window, and start-up loads nothing.
- Several processes share the file: the write lock is retried in sub-millisecond steps
  instead of SQLite's busy handler (which sleeps 1, 2, 5, 10 … up to 100 ms).
- Links named in an append get their last-seen time in the same transaction, so supervision
  deadlines survive a restart.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from itertools import chain
from pathlib import Path
from typing import Any

import attrs
import trio

from protocols.errors import ReceiverError
from protocols.signal import Signal
from receiver.journal_chain import chain_head, chain_rows
from receiver.metrics import Counters
from receiver.store.signal_rows import signal_from_row
from receiver.store.sqlite import connect


class JournalError(ReceiverError, OSError):
    """The commit failed or its outcome is unknown: do not ACK."""


class JournalClosedError(JournalError):
    """The journal no longer takes appends (the receiver is stopping)."""


def to_us(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000)


def from_us(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, UTC)


_COLUMNS = (
    "id, received_us, source, peer, station, receiver_no, line, account, account_id, "
    "effective_account, site_id, site_name, token, sequence, device_us, qualifier, code, grp, "
    "zone, sia_code, sia_address, sia_modifiers, sia_text, name, category, device, channel, "
    "zone_type, extended, flags, raw, dedupe_key"
)
_RECEIVED, _EFFECTIVE, _SEQUENCE, _KEY = 1, 9, 13, 31  # positions in a signal row
# What a row's chain hash covers (receiver/journal_chain.py): every column inserted before it.
CHAINED_COLUMNS = _COLUMNS
_COLUMNS += ", chain_hash"
_COLUMN_COUNT = _COLUMNS.count(",") + 1
INSERT_SIGNAL = f"INSERT INTO signals ({_COLUMNS}) VALUES ({', '.join('?' * _COLUMN_COUNT)})"
_ROW = f"({', '.join('?' * _COLUMN_COUNT)})"
# Rows per INSERT statement: one statement per chunk, so the worker thread drops and retakes
# the GIL once per chunk instead of once per row (each handoff costs a context switch while
# the trio thread is busy, which made commits five times slower under load).
_ROWS_PER_STATEMENT = 256


@functools.lru_cache(maxsize=_ROWS_PER_STATEMENT)
def _insert_sql(rows: int) -> str:
    return f"INSERT INTO signals ({_COLUMNS}) VALUES " + ", ".join([_ROW] * rows)


COUNT_REPEAT = "UPDATE signals SET repeats = repeats + 1, last_repeat_us = ? WHERE seq = ?"
TOUCH_LINK = (
    "INSERT INTO links (link, last_seen_us) VALUES (?, ?) ON CONFLICT (link) DO UPDATE "
    "SET last_seen_us = max(last_seen_us, excluded.last_seen_us)"
)
SET_TROUBLE = (
    "INSERT INTO links (link, last_seen_us, trouble_open) VALUES (?, ?, ?) ON CONFLICT (link) "
    "DO UPDATE SET trouble_open = excluded.trouble_open"
)
LAST_SEQ = "SELECT max(seq) FROM signals"
LINKS_SEEN_SINCE = "SELECT link, last_seen_us FROM links WHERE last_seen_us > ?"
# Earlier signals that a batch's keyed signals may repeat: same account and sequence, within
# the window (then the key itself is compared). Pairs per statement: SQLite allows 32,766
# parameters since 3.32.
_LOOKUP_CHUNK = 400
_LOOKUP_ONE = (
    "SELECT effective_account, sequence, seq, received_us, dedupe_key FROM signals "
    "INDEXED BY signals_by_dedupe WHERE effective_account IS ? AND sequence IS ? "
    "AND dedupe_key IS NOT NULL AND received_us >= ?"
)


@functools.lru_cache(maxsize=_LOOKUP_CHUNK)
def _lookup_sql(pairs: int) -> str:
    return (
        "SELECT s.effective_account, s.sequence, s.seq, s.received_us, s.dedupe_key "
        f"FROM (VALUES {', '.join(['(?, ?)'] * pairs)}) AS k "
        # The planner would rather walk the account's whole window by signals_by_account.
        "JOIN signals AS s INDEXED BY signals_by_dedupe "
        "ON s.effective_account = k.column1 AND s.sequence = k.column2 "
        "WHERE s.dedupe_key IS NOT NULL AND s.received_us >= ?"
    )


# Waiting for another process's write lock: short sleeps, doubling up to this, for this long.
_LOCK_STEP_MAX = 0.002
_LOCK_TIMEOUT = 30.0


def begin_immediate(conn: sqlite3.Connection) -> None:
    """``BEGIN IMMEDIATE``, retried in sub-millisecond steps while another process writes."""
    deadline = time.monotonic() + _LOCK_TIMEOUT
    step = 0.0001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise
        time.sleep(step)
        step = min(step * 2, _LOCK_STEP_MAX)


# The JSON columns and the flags column repeat from signal to signal (the same modifiers, the
# same flags): their text is cached, keyed by the immutable tuple / frozenset itself.
@functools.lru_cache(maxsize=4096)
def _cached_json(pairs: tuple[tuple[str, str], ...]) -> str:
    return json.dumps(pairs)


@functools.lru_cache(maxsize=1024)
def _cached_flags(flags: frozenset[str]) -> str:
    return ",".join(sorted(flags))


def _json_pairs(pairs: tuple[tuple[str, str], ...]) -> str:
    try:
        return _cached_json(pairs)
    except TypeError:  # not hashable (a list where a tuple belongs): no cache, same text
        return json.dumps(pairs)


def _flags_text(flags: frozenset[str]) -> str:
    try:
        return _cached_flags(flags)
    except TypeError:
        return ",".join(sorted(flags))


def signal_row(signal: Signal, dedupe_key: str | None) -> tuple[Any, ...]:
    cid, sia = signal.cid, signal.sia
    device_time = signal.device_time
    qualifier: str | None
    code: str | None
    group: str | None
    zone: str | None
    sia_code: str | None
    sia_address: str | None
    sia_text: str | None
    modifiers: str | None
    if cid is not None:
        qualifier, code, group, zone = cid.qualifier, cid.code, cid.group, cid.zone
    else:
        qualifier = code = group = zone = None
    if sia is not None:
        sia_code, sia_address, sia_text = sia.code, sia.address, sia.text
        modifiers = _json_pairs(sia.modifiers) if sia.modifiers else None
    else:
        sia_code = sia_address = sia_text = modifiers = None
    return (
        signal.id,
        int(signal.received_at.timestamp() * 1_000_000),
        signal.source.value,
        signal.peer,
        signal.station,
        signal.receiver_no,
        signal.line,
        signal.account,
        signal.account_id,
        signal.effective_account,
        signal.site_id,
        signal.site_name,
        signal.token,
        signal.sequence,
        int(device_time.timestamp() * 1_000_000) if device_time is not None else None,
        qualifier,
        code,
        group,
        zone,
        sia_code,
        sia_address,
        modifiers,
        sia_text,
        signal.name,
        signal.category,
        signal.device,
        signal.channel,
        signal.zone_type,
        _json_pairs(signal.extended) if signal.extended else None,
        _flags_text(signal.flags) if signal.flags else "",
        signal.raw,
        dedupe_key,
    )


@attrs.frozen
class AppendResult:
    """What happened to one append: the signals stored, and those absorbed as duplicates."""

    stored: tuple[Signal, ...]
    duplicates: tuple[Signal, ...]

    @property
    def is_duplicate(self) -> bool:
        return bool(self.duplicates) and not self.stored


@attrs.define(eq=False)
class _Request:
    signals: Sequence[Signal]
    keys: Sequence[str | None]
    links: Sequence[tuple[str, int]]
    troubles: Sequence[tuple[str, int, bool]]
    statements: Sequence[tuple[str, tuple[Any, ...]]] = ()
    done: trio.Event = attrs.field(factory=trio.Event)
    result: AppendResult | None = None
    error: BaseException | None = None


class Journal:
    """Group-committing writer over the store's ``signals`` table."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_batch: int = 512,
        queue_size: int = 4096,
        duplicate_window: float = 600.0,
        counters: Counters | None = None,
    ) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self.window_us = int(duplicate_window * 1_000_000)
        self.counters = counters or Counters()
        self._send, self._receive = trio.open_memory_channel[_Request](queue_size)
        self._conn: sqlite3.Connection | None = None
        self._committed = trio.Event()
        self.last_seq = 0

    # -- writer side ---------------------------------------------------------------------

    def _open(self) -> None:
        conn = connect(self.path, check_same_thread=False)
        # Lock waits are ours (``begin_immediate``), not SQLite's coarse busy handler.
        conn.execute("PRAGMA busy_timeout = 0")
        row = conn.execute(LAST_SEQ).fetchone()
        self.last_seq = int(row[0] or 0)
        self._conn = conn

    def _commit(self, batch: list[_Request]) -> int:
        """Commit one batch in one transaction (runs in a worker thread)."""
        conn = self._conn
        assert conn is not None
        # Built before taking the write lock (other processes wait while we hold it);
        # duplicates are rare, so a row built for one is cheap waste.
        rows: list[tuple[Any, ...]] = []
        keyed: list[int] = []  # indexes of rows with a dedupe key
        owners: list[tuple[_Request, int]] = []  # per row: its request and signal index
        for req in batch:
            for position, (signal, key) in enumerate(zip(req.signals, req.keys, strict=True)):
                if key is not None:
                    keyed.append(len(rows))
                rows.append(signal_row(signal, key))
                owners.append((req, position))
        links = [link for req in batch for link in req.links]
        troubles = [t for req in batch for t in req.troubles]
        begin_immediate(conn)
        try:
            dup_of: dict[int, int | tuple[int]] = {}  # row index -> seq (or (row index,))
            if keyed:
                dup_of = self._find_duplicates(conn, rows, keyed)
            kept = [i for i in range(len(rows)) if i not in dup_of] if dup_of else None
            stored_rows = rows if kept is None else [rows[i] for i in kept]
            if stored_rows:
                # The chain follows the newest committed row, read under the write lock, so
                # several writers (ingest workers) extend one chain in commit order.
                stored_rows, _ = chain_rows(stored_rows, chain_head(conn))
            first_seq = self.last_seq + 1
            if stored_rows:
                for start in range(0, len(stored_rows), _ROWS_PER_STATEMENT):
                    chunk = stored_rows[start : start + _ROWS_PER_STATEMENT]
                    conn.execute(_insert_sql(len(chunk)), list(chain.from_iterable(chunk)))
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                first_seq = last - len(stored_rows) + 1
            if dup_of:
                assert kept is not None
                seq_of = {index: first_seq + n for n, index in enumerate(kept)}
                repeats = [
                    (rows[index][1], seq_of[target[0]] if isinstance(target, tuple) else target)
                    for index, target in dup_of.items()
                ]
                conn.executemany(COUNT_REPEAT, repeats)
            if links:
                conn.executemany(TOUCH_LINK, links)
            if troubles:
                conn.executemany(SET_TROUBLE, [(k, t, int(o)) for k, t, o in troubles])
            for req in batch:
                for sql, params in req.statements:
                    conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if stored_rows:
            self.last_seq = first_seq + len(stored_rows) - 1
        if not dup_of:  # the usual case: everything stored
            for req in batch:
                req.result = AppendResult(tuple(req.signals), ())
            return len(stored_rows)
        results: dict[int, tuple[list[Signal], list[Signal]]] = {id(req): ([], []) for req in batch}
        for index, (req, position) in enumerate(owners):
            stored, dups = results[id(req)]
            (dups if index in dup_of else stored).append(req.signals[position])
        for req in batch:
            stored, dups = results[id(req)]
            req.result = AppendResult(tuple(stored), tuple(dups))
        return len(stored_rows)

    def _find_duplicates(
        self, conn: sqlite3.Connection, rows: list[tuple[Any, ...]], keyed: list[int]
    ) -> dict[int, int | tuple[int]]:
        """Rows whose key was committed within the window (row index -> the original's seq),
        or repeat a key first seen earlier in this batch (row index -> (that row's index,)).
        Runs inside the write transaction, so every process's committed signals are seen."""
        since = min(rows[index][_RECEIVED] for index in keyed) - self.window_us
        pairs = list({(rows[i][_EFFECTIVE], rows[i][_SEQUENCE]) for i in keyed})
        found: list[tuple[Any, ...]] = []
        plain = [pair for pair in pairs if pair[0] is not None and pair[1] is not None]
        for start in range(0, len(plain), _LOOKUP_CHUNK):
            chunk = plain[start : start + _LOOKUP_CHUNK]
            found += conn.execute(
                _lookup_sql(len(chunk)), [*chain.from_iterable(chunk), since]
            ).fetchall()
        for pair in pairs:
            if pair[0] is None or pair[1] is None:
                found += conn.execute(_LOOKUP_ONE, (*pair, since)).fetchall()
        known: dict[str, tuple[int, int]] = {}  # key -> (seq, received_us) of the latest
        for _, _, seq, received, key in found:
            if key not in known or seq > known[key][0]:
                known[key] = (seq, received)
        dup_of: dict[int, int | tuple[int]] = {}
        first_in_batch: dict[str, int] = {}
        for index in keyed:
            row = rows[index]
            key = row[_KEY]
            if key in first_in_batch:
                dup_of[index] = (first_in_batch[key],)
                continue
            hit = known.get(key)
            if hit is not None and row[_RECEIVED] - hit[1] <= self.window_us:
                dup_of[index] = hit[0]
                continue
            first_in_batch[key] = index
        return dup_of

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop. Returns once ``close()`` was called and every append was answered."""
        await trio.to_thread.run_sync(self._open)
        task_status.started()
        try:
            async with self._receive:
                while True:
                    try:
                        first = await self._receive.receive()
                    except trio.EndOfChannel:
                        break
                    batch = [first]
                    size = len(first.signals)
                    while size < self.max_batch:
                        try:
                            more = self._receive.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        batch.append(more)
                        size += len(more.signals)
                    await self._commit_batch(batch)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _commit_batch(self, batch: list[_Request]) -> None:
        started = trio.current_time()
        try:
            # Not abandoned on cancel: we must learn the outcome before answering anyone.
            stored = await trio.to_thread.run_sync(self._commit, batch)
        except Exception as exc:  # the outcome is unknown to the appenders: no ACK
            self.counters.inc("journal_commit_failed")
            self.counters.inc("store_errors")  # the same fault counter as every component
            for req in batch:
                req.error = JournalError(f"journal commit failed: {exc}")
                req.done.set()
            return
        self.counters.batch(len(batch))
        self.counters.observe("commit_seconds", trio.current_time() - started)
        self.counters.inc("journal_signals_stored", stored)
        for req in batch:
            req.done.set()
        if stored:
            self._committed.set()
            self._committed = trio.Event()

    def close(self) -> None:
        """Stop accepting appends; the writer commits what is queued, then ``run`` returns."""
        self._send.close()

    # -- caller side ---------------------------------------------------------------------

    async def append(
        self,
        signals: Sequence[Signal],
        *,
        keys: Sequence[str | None] | None = None,
        links: Iterable[tuple[str, int]] = (),
        troubles: Iterable[tuple[str, int, bool]] = (),
        statements: Sequence[tuple[str, tuple[Any, ...]]] = (),
    ) -> AppendResult:
        """Commit ``signals`` (and link state); return once it is durable.

        ``keys`` are dedupe keys, one per signal (None: never a duplicate). ``links`` are
        (link, last_seen_us) pairs to touch; ``troubles`` are (link, seen_us, open) updates.
        ``statements`` are other writes (an output's cursor, bridge state) that ride in the same
        transaction: every write to the store goes through this one writer, so no connection
        ever waits on SQLite's busy handler (which sleeps in steps of up to 100 ms).
        """
        req = _Request(
            signals,
            keys if keys is not None else [None] * len(signals),
            list(links),
            list(troubles),
            statements,
        )
        await self._submit(req)
        assert req.result is not None
        return req.result

    async def _submit(self, req: _Request) -> None:
        try:
            await self._send.send(req)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise JournalClosedError("journal is closed") from exc
        await req.done.wait()
        if req.error is not None:
            raise req.error

    async def wait_committed(self) -> None:
        """Wait until the next commit that stores at least one signal."""
        await self._committed.wait()

    async def watch_other_writers(self, interval: float = 0.02) -> None:
        """Wake ``wait_committed`` when other processes (the ingest workers) commit signals:
        the coordinator's dispatcher then reads after its cursors as when it shares a journal."""
        conn = await trio.to_thread.run_sync(
            functools.partial(connect, self.path, check_same_thread=False)
        )
        try:
            seen = self.last_seq
            while True:
                await trio.sleep(interval)
                row = await trio.to_thread.run_sync(lambda: conn.execute(LAST_SEQ).fetchone())
                newest = int(row[0] or 0)
                if newest > seen:
                    seen = newest
                    self._committed.set()
                    self._committed = trio.Event()
        finally:
            conn.close()


def read_after(conn: sqlite3.Connection, seq: int, limit: int) -> list[tuple[int, Signal]]:
    """Signals committed after ``seq``, in journal order (the dispatcher's read)."""
    rows = conn.execute(
        "SELECT * FROM signals WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
    ).fetchall()
    return [(int(row["seq"]), signal_from_row(row)) for row in rows]


def load_links(conn: sqlite3.Connection) -> dict[str, tuple[int, bool]]:
    """Last-seen time and open-trouble state of every supervised link."""
    return {
        row["link"]: (int(row["last_seen_us"]), bool(row["trouble_open"]))
        for row in conn.execute("SELECT link, last_seen_us, trouble_open FROM links")
    }


def links_seen_since(conn: sqlite3.Connection, since_us: int) -> list[tuple[str, int]]:
    """(link, last_seen_us) of every link with traffic after ``since_us``."""
    return [(str(link), int(seen)) for link, seen in conn.execute(LINKS_SEEN_SINCE, (since_us,))]
