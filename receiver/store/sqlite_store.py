"""The SQLite store: the embedded default, one receiver node on one file.

Rules:
- One connection per store object, opened at the first call (a store that cannot be opened
  fails that call, as a store fault, and is retried by the next). Calls on one object are
  serialized by a lock, so an object is safe to share between threads; the service still gives
  each component its own object (``receiver.store.open_store``), so that a long read (history,
  a backlog count) never waits behind the journal's commits, nor they behind it.
- ``append`` is one ``BEGIN IMMEDIATE`` transaction (WAL, ``synchronous=FULL``): durable on
  return. The write lock is retried in sub-millisecond steps instead of SQLite's busy handler
  (which sleeps 1, 2, 5, 10 … up to 100 ms), for every write of this store.
- Duplicates: a keyed signal whose (account, sequence) was committed within the window with
  the same key is absorbed (the original row counts the repeat). The ``signals_by_dedupe``
  index is read inside the write transaction, so every process's commits are seen: a retry
  landing on another ingest worker is caught, and start-up loads nothing.
- Each stored row extends the hash chain (``receiver/journal_chain.py``) from the newest
  committed row, read under the write lock, so several writers extend one chain in commit order.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from protocols.signal import Signal
from receiver.journal_chain import NODE, Verification, chain_rows, verify_chain
from receiver.store import bridge_report_sql, history_sql, usage_sql
from receiver.store.chain_sql import SqliteChainReader, chain_head
from receiver.store.fencing import FenceRefused, append_fenced, check_tokens, tokens_of
from receiver.store.interface import (
    BridgeStateRow,
    CursorUpdate,
    FencingToken,
    JournalWrite,
    OutputState,
    PrunePlan,
    WriteOutcome,
)
from receiver.store.lease_sql import lease_rows_sql
from receiver.store.signal_rows import (
    SIGNAL_COLUMNS,
    SIGNAL_READ_SQL,
    signal_from_values,
    signal_row,
)
from receiver.store.sqlite import connect
from receiver.store.state_rows import cursor_params, state_params

if TYPE_CHECKING:
    from receiver.bridge_state import BridgeReportRead
    from receiver.history import HistoryQuery
    from receiver.store.interface import ConsoleTables, RegistryTables
    from receiver.store.usage_sql import UsageRead

T = TypeVar("T")

_COLUMNS = ", ".join(SIGNAL_COLUMNS)
_RECEIVED, _EFFECTIVE, _SEQUENCE, _KEY = (
    SIGNAL_COLUMNS.index(name)
    for name in ("received_us", "effective_account", "sequence", "dedupe_key")
)
_INSERTED = _COLUMNS + ", chain_hash"
_ROW = f"({', '.join('?' * (len(SIGNAL_COLUMNS) + 1))})"
# Rows per INSERT statement: one statement per chunk, so the worker thread drops and retakes
# the GIL once per chunk instead of once per row (each handoff costs a context switch while
# the trio thread is busy, which made commits five times slower under load).
_ROWS_PER_STATEMENT = 256


# Statement sizes: every size up to 32 rows, then multiples of 16 up to 256 (46 SQL strings).
_EXACT_UP_TO = 32
_STEP = 16


def statement_sizes(count: int, largest: int = _ROWS_PER_STATEMENT) -> list[int]:
    """``count`` rows as chunks of the statement sizes (largest first, at most ``largest``):
    one chunk up to 32 rows, else a multiple of 16 and the rest, at most two per 256 rows.

    One SQL string per size, so a few dozen statements serve every batch size: the
    connection's statement cache (128 entries) keeps them prepared, where one string per batch
    size (1..256 rows, and the duplicate lookup's 1..400 pairs) kept evicting each other and a
    34-column, 100-row INSERT was parsed again at most commits. Few chunks per batch: each
    statement drops and retakes the GIL (``_ROWS_PER_STATEMENT``)."""
    sizes = [largest] * (count // largest)
    rest = count % largest
    if rest > _EXACT_UP_TO:
        sizes.append(rest - rest % _STEP)
        rest %= _STEP
    if rest:
        sizes.append(rest)
    return sizes


def lookup_size(pairs: int) -> int:
    """The statement size that holds ``pairs`` (at most ``_LOOKUP_CHUNK``): exact up to 32,
    else the next multiple of 16 (the lookup is padded by repeating a pair)."""
    if pairs <= _EXACT_UP_TO:
        return pairs
    return -(-pairs // _STEP) * _STEP


# OR ROLLBACK: a row the table refuses (an id already stored) ends the whole transaction, as
# the append's own ROLLBACK would; with the default ABORT, SQLite must be able to undo one
# statement alone, so a multi-row INSERT copied every page it touched into a statement journal
# (spilled to a temporary file past 64 KiB): about a quarter of the append's CPU at 50 rows.
@functools.lru_cache(maxsize=64)
def _insert_sql(rows: int) -> str:
    return f"INSERT OR ROLLBACK INTO signals ({_INSERTED}) VALUES " + ", ".join([_ROW] * rows)


# Python's sqlite3 binds an exact int, float, str or bytearray directly, but sends every other
# value (None, bytes) through its adapter protocol first: a key tuple, a dict lookup and two
# attribute lookups, about 1 us each. A journal row has a dozen NULL columns and two blobs, so
# that was over half the INSERT's CPU. A NaN float binds as NULL (SQLite stores no NaN:
# ``sqlite3_bind_double`` of a NaN leaves the value NULL) and a bytearray as the same BLOB, so
# the stored row is the same, bound without the detour (a property test compares the two).
_NULL = float("nan")


def bind_values(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The rows' values, flat, as bound to a multi-row statement: None as a NaN (stored NULL),
    bytes as a bytearray (the same BLOB), every other value as it is."""
    return [
        _NULL if value is None else bytearray(value) if value.__class__ is bytes else value
        for value in chain.from_iterable(rows)
    ]


COUNT_REPEAT = "UPDATE signals SET repeats = repeats + 1, last_repeat_us = ? WHERE seq = ?"


@functools.lru_cache(maxsize=16)
def _touch_links_sql(rows: int) -> str:
    """The last-seen upsert of ``rows`` distinct links in one statement (one GIL handoff and
    one statement step for the batch, where ``executemany`` stepped once per link)."""
    return (
        f"INSERT INTO links (link, last_seen_us) VALUES {', '.join(['(?, ?)'] * rows)} "
        "ON CONFLICT (link) DO UPDATE SET last_seen_us = max(last_seen_us, excluded.last_seen_us)"
    )


def link_chunks(count: int) -> list[int]:
    """``count`` links as chunks of powers of two, largest first (at most 256): 9 SQL strings
    serve every batch, beside the INSERT's and the lookup's in the statement cache."""
    sizes = [256] * (count // 256)
    rest = count % 256
    size = 128
    while rest:
        if rest >= size:
            sizes.append(size)
            rest -= size
        size //= 2
    return sizes


SET_TROUBLE = (
    "INSERT INTO links (link, last_seen_us, trouble_open) VALUES (?, ?, ?) ON CONFLICT (link) "
    "DO UPDATE SET trouble_open = excluded.trouble_open"
)
LAST_SEQ = "SELECT max(seq) FROM signals"
LINKS = "SELECT link, last_seen_us, trouble_open FROM links"
LINKS_SEEN_SINCE = "SELECT link, last_seen_us FROM links WHERE last_seen_us > ?"
# Signals are read as plain tuples of seq and the reader's columns (no lookups by name).
_READ_COLUMNS = f"seq, {SIGNAL_READ_SQL}"
_READ = f"SELECT {_READ_COLUMNS} FROM signals"
READ_AFTER = f"{_READ} WHERE seq > ? ORDER BY seq LIMIT ?"
# Earlier signals that a batch's keyed signals may repeat: same account and sequence, within
# the window (then the key itself is compared). Pairs per statement: at most 256, a chunk
# padded up to its ``lookup_size`` with NULL pairs (``=`` with NULL matches nothing, and
# SQLite skips the index seek for it), so a few dozen SQL strings serve every batch. SQLite
# allows 32,766 parameters since 3.32.
_LOOKUP_CHUNK = 256
_LOOKUP_ONE = (
    "SELECT effective_account, sequence, seq, received_us, dedupe_key FROM signals "
    "INDEXED BY signals_by_dedupe WHERE effective_account IS ? AND sequence IS ? "
    "AND dedupe_key IS NOT NULL AND received_us >= ?"
)


@functools.lru_cache(maxsize=64)
def _lookup_sql(pairs: int) -> str:
    return (
        "SELECT s.effective_account, s.sequence, s.seq, s.received_us, s.dedupe_key "
        f"FROM (VALUES {', '.join(['(?, ?)'] * pairs)}) AS k "
        # Pinned: the planner once preferred to walk the account's whole window by
        # signals_by_account (dropped since, migration 0013, as no query used it).
        "JOIN signals AS s INDEXED BY signals_by_dedupe "
        "ON s.effective_account = k.column1 AND s.sequence = k.column2 "
        "WHERE s.dedupe_key IS NOT NULL AND s.received_us >= ?"
    )


def _cursor_values(update: CursorUpdate) -> list[Any]:
    """``SAVE_CURSOR``'s parameters as ``bind_values`` binds them: no None through sqlite3's
    adapter lookup (``last_error``, ``last_success_us`` are None on most saves)."""
    return bind_values([cursor_params(update)])


ENSURE_OUTPUT = (
    "INSERT INTO outputs (name, cursor, updated_us) "
    "VALUES (?, (SELECT coalesce(max(seq), 0) FROM signals), ?) ON CONFLICT (name) DO NOTHING"
)
SAVE_CURSOR = (
    "UPDATE outputs SET cursor = max(cursor, ?), delivered = delivered + ?, "
    "undeliverable = undeliverable + ?, connected = ?, "
    "last_error = ?, last_success_us = coalesce(?, last_success_us), updated_us = ? "
    "WHERE name = ?"
)
BACKLOG = "SELECT count(*), min(received_us) FROM signals WHERE seq > ?"
OLDEST_AFTER = "SELECT received_us FROM signals WHERE seq > ? ORDER BY seq LIMIT 1"
UPSERT_BRIDGE_STATE = """
INSERT INTO bridge_state
    (serial, model, channels, firmware, armed, armed_us, peer, connected_us, updated_us)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (serial) DO UPDATE SET
    model = excluded.model, channels = excluded.channels, firmware = excluded.firmware,
    armed = excluded.armed, armed_us = excluded.armed_us, peer = excluded.peer,
    connected_us = excluded.connected_us, updated_us = excluded.updated_us
"""


def _state_values(row: BridgeStateRow) -> list[Any]:
    """``UPSERT_BRIDGE_STATE``'s parameters as ``bind_values`` binds them: no None through
    sqlite3's adapter lookup (a bridge's firmware, arming and peer are often unknown)."""
    return bind_values([state_params(row)])


ARMING_SINCE = """
SELECT device, qualifier, code, received_us FROM signals
WHERE received_us >= ? AND source = 'bridge' AND device IS NOT NULL
  AND code IN ('401', '441') AND qualifier IN ('E', 'R')
ORDER BY received_us, seq
"""
SITE_DEALERS = (
    "SELECT sites.id, dealers.name FROM sites JOIN dealers ON dealers.id = sites.dealer_id"
)
# Retention: the anchor (the last removed row's seq and hash) and the delete, in one commit.
SET_ANCHOR = (
    "INSERT INTO journal_chain (node, anchor_seq, anchor_hash) "
    "SELECT node, seq, chain_hash FROM signals WHERE seq = ? AND true "
    "ON CONFLICT (node) DO UPDATE SET anchor_seq = excluded.anchor_seq, "
    "anchor_hash = excluded.anchor_hash"
)
DELETE_THROUGH = "DELETE FROM signals WHERE seq <= ? AND node = ?"
LOWEST_CURSOR = "SELECT name, cursor FROM outputs ORDER BY cursor, name LIMIT 1"
PRUNE_CANDIDATES = (
    "SELECT seq, received_us FROM signals WHERE node = ? AND seq > ? ORDER BY seq LIMIT ?"
)

# Waiting for another process's write lock: short sleeps, doubling up to this, for this long.
_LOCK_STEP_MAX = 0.002
_LOCK_TIMEOUT = 30.0


class WriteLockBusyError(Exception):
    """Another connection holds the write lock and the caller would not wait (``wait=False``)."""


def begin_immediate(conn: sqlite3.Connection, *, wait: bool = True) -> None:
    """``BEGIN IMMEDIATE``, retried in sub-millisecond steps while another process writes;
    ``wait=False``: one try, :class:`WriteLockBusyError` when the lock is held."""
    deadline = time.monotonic() + _LOCK_TIMEOUT
    step = 0.0001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if not wait:
                raise WriteLockBusyError(str(exc)) from None
            if time.monotonic() > deadline:
                raise
        time.sleep(step)
        step = min(step * 2, _LOCK_STEP_MAX)


@contextmanager
def write_transaction(
    conn: sqlite3.Connection, *, wait: bool = True
) -> Iterator[sqlite3.Connection]:
    begin_immediate(conn, wait=wait)
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteStore:
    """The store over one SQLite file (see the module's rules)."""

    def __init__(
        self, path: str | Path, *, duplicate_window: float = 600.0, create: bool = True
    ) -> None:
        self.path = Path(path)
        self.window_us = int(duplicate_window * 1_000_000)
        self.create = create
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- the connection ----------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            conn = connect(self.path, check_same_thread=False, create=self.create)
            # Lock waits are ours (``begin_immediate``), not SQLite's coarse busy handler.
            conn.execute("PRAGMA busy_timeout = 0")
            self._conn = conn
        return conn

    def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            return work(self._connection())

    def open(self) -> None:
        """Open (create, migrate) the file now rather than at the first call."""
        self._run(lambda conn: None)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def registry(self) -> RegistryTables:
        """The registry's tables on a connection of their own to this file (the caller closes
        them; usable from one worker thread at a time)."""
        from receiver.store import registry_sql  # noqa: PLC0415
        from receiver.store.registry_tables import SqlRegistryTables  # noqa: PLC0415

        conn = connect(self.path, check_same_thread=False, create=self.create)
        return SqlRegistryTables(conn, registry_sql)

    def console(self) -> ConsoleTables:
        """The console's users on a connection of their own to this file (the caller closes
        them)."""
        from receiver.store import bridge_report_sql, console_sql, registry_sql  # noqa: PLC0415
        from receiver.store.console_tables import SqlConsoleTables  # noqa: PLC0415

        conn = connect(self.path, check_same_thread=False, create=self.create)
        return SqlConsoleTables(
            conn, console_sql, registry_sql=registry_sql, bridge_report_sql=bridge_report_sql
        )

    def read_snapshot(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (this package's readers: journal verify) in one read transaction."""

        def snapshot(conn: sqlite3.Connection) -> T:
            conn.execute("BEGIN")  # one snapshot: rows committed meanwhile wait for the next run
            try:
                return work(conn)
            finally:
                conn.execute("ROLLBACK")

        return self._run(snapshot)

    # -- the read side for audits and reports (receiver/store/interface.py ``ReportStore``) --

    def verify_journal(self, since_us: int | None = None) -> Verification:
        return self.read_snapshot(
            lambda conn: verify_chain(SqliteChainReader(conn), since_us=since_us)
        )

    def usage_rows(self, dealer: str, start_us: int, end_us: int) -> UsageRead | None:
        return self.read_snapshot(lambda conn: usage_sql.read(conn, dealer, start_us, end_us))

    def bridge_report_rows(self, dealer: str | None, site: str | None) -> BridgeReportRead:
        return self.read_snapshot(
            lambda conn: bridge_report_sql.read(conn, dealer=dealer, site=site)
        )

    # -- journal -----------------------------------------------------------------------------

    def append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        # Writes under a lease this node lost are refused (receiver/store/fencing.py).
        return append_fenced(writes, lambda kept: self._run(lambda conn: self._append(conn, kept)))

    def append_now(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome] | None:
        """``append`` on the caller's thread if nobody holds the write lock (no other
        process's transaction, no other thread on this store object); None, nothing written,
        when someone does. The rows built before the try are then built again by ``append``:
        a contended try costs that much (``Journal`` counts the tries that found it held)."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._connection()
            return append_fenced(writes, lambda kept: self._append(conn, kept, wait=False))
        except WriteLockBusyError:
            return None
        finally:
            self._lock.release()

    def _append(
        self, conn: sqlite3.Connection, writes: Sequence[JournalWrite], *, wait: bool = True
    ) -> list[WriteOutcome]:
        # Built before taking the write lock (other processes wait while we hold it);
        # duplicates are rare, so a row built for one is cheap waste.
        rows: list[tuple[Any, ...]] = []
        keyed: list[int] = []  # indexes of rows with a dedupe key
        for write in writes:
            keys = write.keys or (None,) * len(write.signals)
            for signal, key in zip(write.signals, keys, strict=True):
                if key is not None:
                    keyed.append(len(rows))
                rows.append(signal_row(signal, key))
        with write_transaction(conn, wait=wait):
            dup_of: dict[int, int | tuple[int]] = {}  # row index -> seq (or (row index,))
            if keyed:
                dup_of = self._find_duplicates(conn, rows, keyed)
            kept = [i for i in range(len(rows)) if i not in dup_of] if dup_of else None
            stored_rows = rows if kept is None else [rows[i] for i in kept]
            first_seq = 0
            if stored_rows:
                stored_rows, _ = chain_rows(stored_rows, chain_head(conn))
                start = 0
                last = 0
                for size in statement_sizes(len(stored_rows)):
                    chunk = stored_rows[start : start + size]
                    start += size
                    cursor = conn.execute(_insert_sql(size), bind_values(chunk))
                    last = cursor.lastrowid or 0  # the statement's last row (last_insert_rowid)
                first_seq = last - len(stored_rows) + 1
            if dup_of:
                assert kept is not None
                seq_of = {index: first_seq + n for n, index in enumerate(kept)}
                repeats = [
                    (rows[index][_RECEIVED], seq_of[t[0]] if isinstance(t, tuple) else t)
                    for index, t in dup_of.items()
                ]
                conn.executemany(COUNT_REPEAT, repeats)
            self._write_state(conn, writes)
        outcomes: list[WriteOutcome] = []
        index = 0
        seq = first_seq
        for write in writes:
            if not dup_of:  # the usual case: everything stored, in order
                seqs = range(seq, seq + len(write.signals))
                stored = tuple(zip(seqs, write.signals, strict=True))
                seq += len(write.signals)
                outcomes.append(WriteOutcome(stored, ()))
                continue
            kept_here: list[tuple[int, Signal]] = []
            dups: list[Signal] = []
            for signal in write.signals:
                if index in dup_of:
                    dups.append(signal)
                else:
                    kept_here.append((seq, signal))
                    seq += 1
                index += 1
            outcomes.append(WriteOutcome(tuple(kept_here), tuple(dups)))
        return outcomes

    @staticmethod
    def _write_state(conn: sqlite3.Connection, writes: Sequence[JournalWrite]) -> None:
        """The link, cursor, bridge state and retention writes riding in the transaction; the
        check of the leases its writes were made under (the write lock is ours until the
        commit, so no lease changes hands meanwhile)."""
        tokens = tokens_of(writes)
        if tokens:
            names = sorted({t.lease for t in tokens})
            check_tokens(tokens, conn.execute(lease_rows_sql(len(names)), names).fetchall())
        seen: dict[str, int] = {}  # per link, the latest traffic of the batch
        for write in writes:
            for touch in write.links:
                if seen.get(touch.link, touch.seen_us) <= touch.seen_us:
                    seen[touch.link] = touch.seen_us
        if seen:
            links = list(seen.items())
            start = 0
            for size in link_chunks(len(links)):
                chunk = links[start : start + size]
                start += size
                conn.execute(_touch_links_sql(size), list(chain.from_iterable(chunk)))
        troubles = [(t.link, t.seen_us, int(t.open)) for w in writes for t in w.troubles]
        if troubles:
            conn.executemany(SET_TROUBLE, troubles)
        for write in writes:
            if write.cursors:
                conn.executemany(SAVE_CURSOR, [_cursor_values(c) for c in write.cursors])
            if write.bridge_states:
                conn.executemany(
                    UPSERT_BRIDGE_STATE, [_state_values(s) for s in write.bridge_states]
                )
            if write.prune_through is not None:
                conn.execute(SET_ANCHOR, (write.prune_through,))
                conn.execute(DELETE_THROUGH, (write.prune_through, NODE))
            for sql, params in write.console:
                conn.execute(sql, params)

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
            values = list(chain.from_iterable(chunk))
            values += [_NULL] * (2 * (lookup_size(len(chunk)) - len(chunk)))  # NULL pairs
            found += conn.execute(_lookup_sql(len(values) // 2), [*values, since]).fetchall()
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

    def _read_signals(self, sql: str, params: Sequence[Any]) -> list[tuple[int, Signal]]:
        """``sql`` selects ``seq`` then the reader's columns (``_READ``): (seq, Signal)s."""

        def read(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cursor = conn.cursor()
            cursor.row_factory = None  # plain tuples: the reader takes its values by position
            return cursor.execute(sql, params).fetchall()

        return [(row[0], signal_from_values(row[1:])) for row in self._run(read)]

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        return self._read_signals(READ_AFTER, (seq, limit))

    def last_seq(self) -> int:
        row = self._run(lambda conn: conn.execute(LAST_SEQ).fetchone())
        return int(row[0] or 0)

    def recent_keys(self, since_us: int) -> list[tuple[str, int, int]]:
        rows = self._run(
            lambda conn: conn.execute(
                "SELECT dedupe_key, seq, received_us FROM signals "
                "WHERE dedupe_key IS NOT NULL AND received_us >= ? ORDER BY seq",
                (since_us,),
            ).fetchall()
        )
        return [(str(key), int(seq), int(received)) for key, seq, received in rows]

    def purge_keys(self, before_us: int) -> int:
        """Nothing to forget: the keys live in the signal rows and the window is applied when
        they are read."""
        del before_us
        return 0

    def links(self) -> dict[str, tuple[int, bool]]:
        rows = self._run(lambda conn: conn.execute(LINKS).fetchall())
        return {str(link): (int(seen), bool(trouble)) for link, seen, trouble in rows}

    def links_seen_since(self, since_us: int) -> list[tuple[str, int]]:
        rows = self._run(lambda conn: conn.execute(LINKS_SEEN_SINCE, (since_us,)).fetchall())
        return [(str(link), int(seen)) for link, seen in rows]

    def prune_plan(self, before_us: int, limit: int, *, after_seq: int = 0) -> PrunePlan:
        def plan(conn: sqlite3.Connection) -> PrunePlan:
            held = conn.execute(LOWEST_CURSOR).fetchone()
            rows = conn.execute(PRUNE_CANDIDATES, (NODE, after_seq, limit)).fetchall()
            return PrunePlan.of(rows, before_us, (str(held[0]), int(held[1])) if held else None)

        return self._run(plan)

    def site_dealers(self) -> dict[int, str]:
        """Each site's dealer (the notifier's per-dealer targets)."""
        rows = self._run(lambda conn: conn.execute(SITE_DEALERS).fetchall())
        return {int(site): str(dealer) for site, dealer in rows}

    # -- output cursors ----------------------------------------------------------------------

    def ensure_output(self, name: str, now_us: int) -> int:
        def ensure(conn: sqlite3.Connection) -> int:
            with write_transaction(conn):
                conn.execute(ENSURE_OUTPUT, (name, now_us))
            row = conn.execute("SELECT cursor FROM outputs WHERE name = ?", (name,)).fetchone()
            return int(row[0])

        return self._run(ensure)

    def save_cursor(self, update: CursorUpdate, fence: FencingToken | None = None) -> bool:
        def save(conn: sqlite3.Connection) -> bool:
            try:
                with write_transaction(conn):
                    if fence is not None:  # under the write lock, as an append checks it
                        rows = conn.execute(lease_rows_sql(1), [fence.lease]).fetchall()
                        check_tokens({fence}, rows)
                    conn.execute(SAVE_CURSOR, _cursor_values(update))
            except FenceRefused:
                return False
            return True

        return self._run(save)

    def output_states(self, names: Sequence[str]) -> list[OutputState]:
        wanted = list(names)
        rows = self._run(
            lambda conn: conn.execute(
                f"SELECT * FROM outputs WHERE name IN ({', '.join('?' * len(wanted))}) "
                "ORDER BY name",
                wanted,
            ).fetchall()
        )
        return [OutputState.from_row(r) for r in rows]

    def backlog(self, cursor: int) -> tuple[int, int | None]:
        """How many signals wait after ``cursor``, and the oldest one's receive time."""

        def read(conn: sqlite3.Connection) -> tuple[int, int | None]:
            count = int(
                conn.execute("SELECT count(*) FROM signals WHERE seq > ?", (cursor,)).fetchone()[0]
            )
            first = conn.execute(OLDEST_AFTER, (cursor,)).fetchone()
            return count, int(first[0]) if first else None

        return self._run(read)

    # -- bridge state ------------------------------------------------------------------------

    def write_bridge_states(self, rows: Sequence[BridgeStateRow]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            with write_transaction(conn):
                conn.executemany(UPSERT_BRIDGE_STATE, [_state_values(r) for r in rows])

        self._run(write)

    def bridge_states(self) -> list[BridgeStateRow]:
        rows = self._run(
            lambda conn: conn.execute("SELECT * FROM bridge_state ORDER BY serial").fetchall()
        )
        return [BridgeStateRow.from_row(r) for r in rows]

    def arming_since(self, since_us: int) -> list[tuple[str, str, str, int]]:
        rows = self._run(lambda conn: conn.execute(ARMING_SINCE, (since_us,)).fetchall())
        return [(r["device"], r["qualifier"], r["code"], int(r["received_us"])) for r in rows]

    # -- history -----------------------------------------------------------------------------

    def history(self, query: HistoryQuery) -> list[tuple[int, Signal]]:
        return self._run(lambda conn: _history_rows(conn, query))

    def history_after(self, query: HistoryQuery, seq: int, limit: int) -> tuple[int, list[Signal]]:
        newest = self.last_seq()
        if newest <= seq:
            return seq, []

        def read(conn: sqlite3.Connection) -> list[tuple[int, Signal]]:
            sql, params = history_sql.history_after_statement(
                _scalar(conn),
                _READ_COLUMNS,
                query,
                history_sql.SQLITE,
                seq=seq,
                newest=newest,
                limit=limit,
            )
            return _signal_rows(conn, sql, params)

        rows = self._run(read)
        if len(rows) == limit:
            newest = rows[-1][0]
        return newest, [signal for _, signal in rows]


# -- history (the statements are receiver/store/history_sql.py's) ------------------------------


def _scalar(conn: sqlite3.Connection) -> history_sql.Scalar:
    def scalar(sql: str, params: Sequence[Any]) -> Any:
        row = conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    return scalar


def _signal_rows(
    conn: sqlite3.Connection, sql: str, params: Sequence[Any]
) -> list[tuple[int, Signal]]:
    """``sql`` selects ``seq`` then the reader's columns (``_READ_COLUMNS``)."""
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: the reader takes its values by position
    return [(row[0], signal_from_values(row[1:])) for row in cursor.execute(sql, params)]


def _history_rows(conn: sqlite3.Connection, query: HistoryQuery) -> list[tuple[int, Signal]]:
    sql, params = history_sql.history_statement(
        _scalar(conn), _READ_COLUMNS, query, history_sql.SQLITE
    )
    return _signal_rows(conn, sql, params)
