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
  forward it again).
- Links named in an append get their last-seen time in the same transaction, so supervision
  deadlines survive a restart.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import trio

from protocols.errors import ReceiverError
from protocols.signal import ContactIdView, SiaView, Signal, Source
from receiver.journal_chain import chain_head, chain_rows
from receiver.metrics import Counters
from receiver.store.sqlite import connect


class JournalError(ReceiverError, OSError):
    """The commit failed or its outcome is unknown: do not ACK."""


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
RECENT_KEYS = (
    "SELECT dedupe_key, seq, received_us FROM signals "
    "WHERE dedupe_key IS NOT NULL AND received_us >= ? ORDER BY seq"
)


def signal_row(signal: Signal, dedupe_key: str | None) -> tuple[Any, ...]:
    cid, sia = signal.cid, signal.sia
    return (
        signal.id,
        to_us(signal.received_at),
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
        to_us(signal.device_time) if signal.device_time else None,
        cid.qualifier if cid else None,
        cid.code if cid else None,
        cid.group if cid else None,
        cid.zone if cid else None,
        sia.code if sia else None,
        sia.address if sia else None,
        json.dumps(sia.modifiers) if sia and sia.modifiers else None,
        sia.text if sia else None,
        signal.name,
        signal.category,
        signal.device,
        signal.channel,
        signal.zone_type,
        json.dumps(signal.extended) if signal.extended else None,
        ",".join(sorted(signal.flags)),
        signal.raw,
        dedupe_key,
    )


def signal_from_row(row: sqlite3.Row) -> Signal:
    """Rebuild the Signal from a journal row (``SELECT * FROM signals``)."""
    cid = (
        ContactIdView(row["qualifier"], row["code"], row["grp"], row["zone"])
        if row["code"] is not None
        else None
    )
    sia = (
        SiaView(
            row["sia_code"],
            row["sia_address"] or "",
            tuple(tuple(m) for m in json.loads(row["sia_modifiers"]))
            if row["sia_modifiers"]
            else (),
            row["sia_text"],
        )
        if row["sia_code"] is not None
        else None
    )
    flags = frozenset(f for f in row["flags"].split(",") if f)
    if row["repeats"]:
        flags |= {"duplicate_received"}
    return Signal(
        id=row["id"],
        received_at=from_us(row["received_us"]),
        source=Source(row["source"]),
        peer=row["peer"] or "",
        account=row["account"],
        station=row["station"],
        receiver_no=row["receiver_no"],
        line=row["line"],
        account_id=row["account_id"],
        effective_account=row["effective_account"],
        site_id=row["site_id"],
        site_name=row["site_name"],
        token=row["token"],
        sequence=row["sequence"],
        device_time=from_us(row["device_us"]) if row["device_us"] is not None else None,
        cid=cid,
        sia=sia,
        name=row["name"],
        category=row["category"],
        device=row["device"],
        channel=row["channel"],
        zone_type=row["zone_type"],
        extended=tuple(tuple(x) for x in json.loads(row["extended"])) if row["extended"] else (),
        flags=flags,
        raw=bytes(row["raw"] or b""),
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
        self._recent: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._committed = trio.Event()
        self.last_seq = 0
        self._chain_head = b""  # the hash the next stored row follows (journal_chain.py)

    # -- writer side ---------------------------------------------------------------------

    def _open(self) -> None:
        conn = connect(self.path, check_same_thread=False)
        since = to_us(datetime.now(UTC)) - self.window_us
        for key, seq, received_us in conn.execute(RECENT_KEYS, (since,)):
            self._recent[key] = (seq, received_us)
        row = conn.execute("SELECT max(seq) FROM signals").fetchone()
        self.last_seq = int(row[0] or 0)
        self._chain_head = chain_head(conn)
        self._conn = conn

    def _commit(self, batch: list[_Request]) -> int:
        """Commit one batch in one transaction (runs in a worker thread)."""
        conn = self._conn
        assert conn is not None
        rows: list[tuple[Any, ...]] = []
        pending: dict[str, int] = {}  # keys first seen in this batch -> index in rows
        repeats: list[tuple[int, int]] = []
        repeat_of_pending: list[tuple[int, int]] = []
        outcomes: list[tuple[list[Signal], list[Signal]]] = []
        for req in batch:
            stored: list[Signal] = []
            dups: list[Signal] = []
            for signal, key in zip(req.signals, req.keys, strict=True):
                received = to_us(signal.received_at)
                if key is not None:
                    hit = self._recent.get(key)
                    if hit is not None and received - hit[1] <= self.window_us:
                        repeats.append((received, hit[0]))
                        dups.append(signal)
                        continue
                    if key in pending:
                        repeat_of_pending.append((received, pending[key]))
                        dups.append(signal)
                        continue
                    pending[key] = len(rows)
                rows.append(signal_row(signal, key))
                stored.append(signal)
            outcomes.append((stored, dups))
        links = [link for req in batch for link in req.links]
        troubles = [t for req in batch for t in req.troubles]
        rows, chain_head_after = chain_rows(rows, self._chain_head)
        conn.execute("BEGIN IMMEDIATE")
        try:
            first_seq = self.last_seq + 1
            if rows:
                for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                    chunk = rows[start : start + _ROWS_PER_STATEMENT]
                    conn.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
                first_seq = last - len(rows) + 1
            for received, index in repeat_of_pending:
                repeats.append((received, first_seq + index))
            if repeats:
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
        self._chain_head = chain_head_after
        # Only a committed key may absorb later retries.
        for key, index in pending.items():
            self._recent[key] = (first_seq + index, rows[index][1])
        if rows:
            self.last_seq = first_seq + len(rows) - 1
        self._prune()
        for req, (stored, dups) in zip(batch, outcomes, strict=True):
            req.result = AppendResult(tuple(stored), tuple(dups))
        return len(rows)

    def _prune(self) -> None:
        if not self._recent:
            return
        newest = next(reversed(self._recent.values()))[1]
        while self._recent:
            _, (_, received) = next(iter(self._recent.items()))
            if newest - received <= self.window_us:
                break
            self._recent.popitem(last=False)

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
        try:
            # Not abandoned on cancel: we must learn the outcome before answering anyone.
            stored = await trio.to_thread.run_sync(self._commit, batch)
        except Exception as exc:  # the outcome is unknown to the appenders: no ACK
            self.counters.inc("journal_commit_failed")
            for req in batch:
                req.error = JournalError(f"journal commit failed: {exc}")
                req.done.set()
            return
        self.counters.batch(len(batch))
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
        try:
            await self._send.send(req)
        except (trio.ClosedResourceError, trio.BrokenResourceError) as exc:
            raise JournalError("journal is closed") from exc
        await req.done.wait()
        if req.error is not None:
            raise req.error
        assert req.result is not None
        return req.result

    async def wait_committed(self) -> None:
        """Wait until the next commit that stores at least one signal."""
        await self._committed.wait()


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
