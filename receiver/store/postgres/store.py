"""The PostgreSQL store: the engine for several receiver nodes on one database.

Rules:
- Synchronous psycopg 3 connections (psycopg has no trio support), used from worker threads,
  one call per batch. A store object owns one connection (and one more for LISTEN); calls on
  one object are serialized by a lock. Each node's journal writer has its own store object.
- ``append`` is one transaction with ``synchronous_commit = on``: durable on return. It takes
  an advisory transaction lock first, so appends from every node serialize: seq order is commit
  order (an output's cursor never passes a signal still committing elsewhere), and appenders
  never deadlock on each other's dedupe keys or repeat counts.
- Each stored row extends the hash chain (``receiver/journal_chain.py``, the same rows and
  hashes as SQLite's): the head is read under that lock, in the append's transaction, so every
  node extends one chain in seq order and two nodes never chain from the same head. The chain
  is the database's (``node`` stays ''): per-node chains would buy nothing while the lock
  serializes appends anyway.
- Duplicates are caught by the primary key of ``dedupe_keys`` (INSERT ... ON CONFLICT), for
  every node: a key committed within the window absorbs the retry; an older one is replaced.
- A store object connects at its first call, in the thread making it (a worker thread: a
  component built inside trio never connects on the event loop), and migrates the schema then;
  a server it cannot reach is a :class:`StoreError` of that call, as a lost one is (SQLite opens
  its file the same way). :meth:`PostgresStore.open` connects at once, for a caller that wants
  an unreachable server to be a :class:`PostgresOpenError` (a ``StartupError``) now.
- A broken connection (server restarted, network cut) is reopened at the next call; the call
  that saw it fail raises :class:`StoreError` (outcome unknown: no ACK).
- Every transaction that stores signals NOTIFYs ``journal_committed`` with the newest seq (a
  statement trigger, migration 0014): :meth:`PostgresStore.wait_commits` LISTENs on a
  connection of its own and returns at the first notice, or reads the newest seq when none came
  within its timeout (the fallback poll, on that connection: a dead one is found and reopened).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import psycopg
from psycopg.types.json import Jsonb

from protocols.signal import Signal
from receiver.journal_chain import GENESIS, NODE, Verification, chain_rows, verify_chain
from receiver.store import history_sql
from receiver.store.fencing import FenceRefused, append_fenced, check_tokens, tokens_of
from receiver.store.interface import (
    BridgeStateRow,
    CursorUpdate,
    FencingToken,
    JournalWrite,
    Lease,
    NodeBeat,
    OutputState,
    PrunePlan,
    StoreError,
    User,
    UserRole,
    WriteOutcome,
)
from receiver.store.postgres import bridge_report_sql, usage_sql
from receiver.store.postgres.chain_sql import PgChainReader
from receiver.store.postgres.schema import (
    JOURNAL_LOCK,
    PgConnection,
    PostgresOpenError,
    connect,
)
from receiver.store.postgres.statements import StatementConnection
from receiver.store.signal_rows import SIGNAL_COLUMNS, signal_from_row, signal_row, to_us
from receiver.store.state_rows import cursor_params, state_params

if TYPE_CHECKING:
    from receiver.bridge_state import BridgeReportRead
    from receiver.history import HistoryQuery
    from receiver.store.interface import ConsoleTables, RegistryTables
    from receiver.store.usage_sql import UsageRead

_COLUMN_TYPES = {
    "received_us": "int8",
    "account_id": "int8",
    "site_id": "int8",
    "device_us": "int8",
    "channel": "int4",
    "raw": "bytea",
}
SIGNAL_TYPES = [*(_COLUMN_TYPES.get(c, "text") for c in SIGNAL_COLUMNS), "bytea"]
# Binary COPY: the cheapest way in from Python (a 256-row batch costs a few ms to encode).
# Each row carries its chain hash (receiver/journal_chain.py) after the fields it covers.
COPY_SIGNALS = f"COPY signals ({', '.join(SIGNAL_COLUMNS)}, chain_hash) FROM STDIN (FORMAT BINARY)"
# Under the journal lock: the newest seq and the hash the next row follows (the newest row's,
# else the anchor retention left, else NULL: GENESIS). One chain for every node: the lock
# already serializes their appends, so seq order is chain order (see the module's rules).
CHAIN_HEAD = f"""
SELECT coalesce(newest.seq, 0) AS seq,
       CASE WHEN newest.seq IS NOT NULL THEN newest.chain_hash
            ELSE (SELECT anchor_hash FROM journal_chain WHERE node = '{NODE}') END AS head
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
    SELECT seq, chain_hash FROM signals WHERE node = '{NODE}' ORDER BY seq DESC LIMIT 1
) AS newest ON true
"""
# A key is new, or replaces one received longer than the window before it; else a duplicate.
CLAIM_KEYS = """
INSERT INTO dedupe_keys AS d (key, signal_id, received_us)
SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[])
ON CONFLICT (key) DO UPDATE SET signal_id = excluded.signal_id, received_us = excluded.received_us
WHERE d.received_us < excluded.received_us - %s
RETURNING key
"""
COUNT_REPEATS = """
UPDATE signals s SET repeats = s.repeats + r.n,
                     last_repeat_us = greatest(s.last_repeat_us, r.last_us)
FROM (SELECT d.signal_id, u.n, u.last_us
      FROM unnest(%s::text[], %s::integer[], %s::bigint[]) AS u (key, n, last_us)
      JOIN dedupe_keys d ON d.key = u.key) AS r
WHERE s.id = r.signal_id
"""
TOUCH_LINKS = """
INSERT INTO links AS l (link, last_seen_us)
SELECT * FROM unnest(%s::text[], %s::bigint[])
ON CONFLICT (link) DO UPDATE SET last_seen_us = greatest(l.last_seen_us, excluded.last_seen_us)
"""
SET_TROUBLE = """
INSERT INTO links (link, last_seen_us, trouble_open) VALUES (%s, %s, %s)
ON CONFLICT (link) DO UPDATE SET trouble_open = excluded.trouble_open
"""
SAVE_CURSOR = """
UPDATE outputs SET cursor = greatest(cursor, %s), delivered = delivered + %s,
    undeliverable = undeliverable + %s, connected = %s, last_error = %s,
    last_success_us = coalesce(%s, last_success_us), updated_us = %s
WHERE name = %s
"""
ENSURE_OUTPUT = """
INSERT INTO outputs (name, cursor, updated_us)
VALUES (%s, (SELECT coalesce(max(seq), 0) FROM signals), %s) ON CONFLICT (name) DO NOTHING
"""
UPSERT_BRIDGE_STATE = """
INSERT INTO bridge_state
    (serial, model, channels, firmware, armed, armed_us, peer, connected_us, updated_us)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (serial) DO UPDATE SET
    model = excluded.model, channels = excluded.channels, firmware = excluded.firmware,
    armed = excluded.armed, armed_us = excluded.armed_us, peer = excluded.peer,
    connected_us = excluded.connected_us, updated_us = excluded.updated_us
"""
# Retention: the chain's anchor (the last removed row's seq and hash) with the delete.
SET_ANCHOR = """
INSERT INTO journal_chain (node, anchor_seq, anchor_hash)
SELECT node, seq, chain_hash FROM signals WHERE seq = %s
ON CONFLICT (node) DO UPDATE SET anchor_seq = excluded.anchor_seq,
    anchor_hash = excluded.anchor_hash
"""
ARMING_SINCE = """
SELECT device, qualifier, code, received_us FROM signals
WHERE received_us >= %s AND source = 'bridge' AND device IS NOT NULL
  AND code IN ('401', '441') AND qualifier IN ('E', 'R')
ORDER BY received_us, seq
"""
_LEASE_COLUMNS = (
    "name, holder, (extract(epoch FROM expires_at) * 1000000)::bigint AS expires_us, epoch"
)
# Free, expired or already ours: take it. The upsert locks the row, so two takers serialize and
# the second sees the first's unexpired lease: never two holders. Every take is a new hold with
# a new epoch (a renewal keeps it): the fencing token of that hold's writes.
ACQUIRE_LEASE = f"""
INSERT INTO leases AS l (name, holder, acquired_at, expires_at)
VALUES (%(name)s, %(holder)s, clock_timestamp(),
        clock_timestamp() + %(ttl)s * interval '1 second')
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at
                       ELSE excluded.acquired_at END,
    expires_at = excluded.expires_at,
    epoch = l.epoch + 1
WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()
RETURNING {_LEASE_COLUMNS}
"""
RENEW_LEASE = f"""
UPDATE leases SET expires_at = clock_timestamp() + %(ttl)s * interval '1 second'
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > clock_timestamp()
RETURNING {_LEASE_COLUMNS}
"""
# Expire it now rather than delete it: the epoch keeps growing.
RELEASE_LEASE = """
UPDATE leases SET expires_at = clock_timestamp() - interval '1 microsecond'
WHERE name = %(name)s AND holder = %(holder)s AND expires_at > clock_timestamp()
RETURNING name
"""
# The fencing check of a journal write (receiver/store/fencing.py), in the append's
# transaction: FOR SHARE holds off a takeover's update until the commit, and waits for (then
# sees) one already under way.
LEASE_ROWS = "SELECT name, holder, epoch FROM leases WHERE name = ANY(%s) FOR SHARE"
LEASES = f"SELECT {_LEASE_COLUMNS} FROM leases WHERE expires_at > clock_timestamp() ORDER BY name"
_NODE_COLUMNS = (
    "name, (extract(epoch FROM started_at) * 1000000)::bigint AS started_us, "
    "(extract(epoch FROM heartbeat_at) * 1000000)::bigint AS heartbeat_us, info"
)
# Commit notices (migration 0014): the channel, and what a listener reads when none came.
COMMIT_NOTICES = "journal_committed"
NEWEST_SEQ = "SELECT coalesce(max(seq), 0) AS seq FROM signals"
# ``wait_commits`` waits in slices at most this long: a thread its caller left waiting (a
# cancelled trio task) sees ``close()`` within a slice, and closes the connection then.
_NOTICE_SLICE = 1.0
HEARTBEAT = f"""
INSERT INTO nodes AS n (name, started_at, heartbeat_at, info)
VALUES (%s, clock_timestamp(), clock_timestamp(), %s)
ON CONFLICT (name) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, info = excluded.info
RETURNING {_NODE_COLUMNS}
"""


class PostgresStore:
    """The store over one PostgreSQL database (``postgresql://USER@HOST:PORT/DB``)."""

    def __init__(self, url: str, *, duplicate_window: float = 600.0) -> None:
        self.url = url
        self.window_us = int(duplicate_window * 1_000_000)
        self._lock = threading.Lock()
        self._conn: PgConnection | None = None  # connected (and migrated) at the first call
        self._migrated = False
        self._listener: PgConnection | None = None
        self._seen_generation: int | None = None
        # Commit notices: their own connection and lock (a wait blocks for up to its timeout).
        self._notices_lock = threading.Lock()
        self._notices: PgConnection | None = None
        self._notices_closing = False

    # -- connections -----------------------------------------------------------------------

    def open(self) -> PostgresStore:
        """Connect (and migrate) now, in the calling thread: a server that cannot be reached is
        a :class:`PostgresOpenError` here rather than a :class:`StoreError` at the first call."""
        with self._lock:
            self._connection()
        return self

    def _connection(self) -> PgConnection:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._conn = conn = connect(self.url, migrate_schema=not self._migrated)
            self._migrated = True
        return conn

    @contextmanager
    def _use(self, what: str) -> Iterator[PgConnection]:
        """The connection, for one call; a failure (the server unreachable, the connection
        lost, a statement refused) is a StoreError naming ``what``."""
        with self._lock:
            try:
                conn = self._connection()
            except PostgresOpenError as exc:
                raise StoreError(f"{what} failed: {exc}") from exc
            try:
                yield conn
            except psycopg.Error as exc:
                raise StoreError(f"{what} failed: {str(exc).strip()}") from exc

    def close(self) -> None:
        with self._lock:
            for conn in (self._conn, self._listener):
                if conn is not None:
                    conn.close()
            self._conn = self._listener = None
        self._close_notices()

    def _close_notices(self) -> None:
        """Close the commit notices' connection now, or, while a thread waits on it, have that
        thread close it as it leaves (within ``_NOTICE_SLICE``): never under its feet."""
        self._notices_closing = True
        if not self._notices_lock.acquire(blocking=False):
            return
        try:
            if self._notices_closing:
                if self._notices is not None:
                    self._notices.close()
                self._notices = None
                self._notices_closing = False
        finally:
            self._notices_lock.release()

    # -- journal ---------------------------------------------------------------------------

    def append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        # Writes under a lease this node lost are refused (receiver/store/fencing.py).
        return append_fenced(writes, self._append)

    def _append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        if any(write.console for write in writes):
            raise StoreError("the console's writes are SQLite statements: not on PostgreSQL")
        # Sort out repeats inside the batch first: a key's first signal is the candidate.
        candidates: dict[str, Signal] = {}  # key -> the first signal carrying it
        plan: list[list[tuple[Signal, str | None, bool]]] = []  # (signal, key, repeat in batch)
        for write in writes:
            keys = write.keys or [None] * len(write.signals)
            entries = []
            for signal, key in zip(write.signals, keys, strict=True):
                repeat = key is not None and key in candidates
                if key is not None and not repeat:
                    candidates[key] = signal
                entries.append((signal, key, repeat))
            plan.append(entries)
        with self._use("journal commit") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (JOURNAL_LOCK,))
            fresh: set[str] = set()
            if candidates:
                ordered = sorted(candidates)
                received = [to_us(candidates[k].received_at) for k in ordered]
                ids = [candidates[k].id for k in ordered]
                cursor = conn.execute(CLAIM_KEYS, (ordered, ids, received, self.window_us))
                fresh = {row["key"] for row in cursor.fetchall()}
            rows: list[tuple[Any, ...]] = []
            repeats: dict[str, tuple[int, int]] = {}  # key -> (count, last received_us)
            for entries in plan:
                for signal, key, repeat in entries:
                    row = signal_row(signal, key)
                    if key is None or (not repeat and key in fresh):
                        rows.append(row)
                        continue
                    count, last = repeats.get(key, (0, 0))
                    repeats[key] = (count + 1, max(last, row[1]))
            seqs: dict[str, int] = {}
            if rows:
                # Under the journal lock nobody else inserts: ours are the rows after `before`,
                # and the chain's head (read in the same query) cannot move until we commit.
                before = conn.execute(CHAIN_HEAD).fetchone()
                assert before is not None
                head = before["head"]
                rows, _ = chain_rows(rows, bytes(head) if head is not None else GENESIS)
                with conn.cursor() as cur, cur.copy(COPY_SIGNALS) as copy:
                    copy.set_types(SIGNAL_TYPES)
                    for row in rows:
                        copy.write_row(row)
                cursor = conn.execute(
                    "SELECT seq, id FROM signals WHERE seq > %s ORDER BY seq", (before["seq"],)
                )
                seqs = {row["id"]: int(row["seq"]) for row in cursor.fetchall()}
                assert len(seqs) == len(rows), "another writer inserted without the lock"
            if repeats:
                keys = sorted(repeats)
                conn.execute(
                    COUNT_REPEATS,
                    (keys, [repeats[k][0] for k in keys], [repeats[k][1] for k in keys]),
                )
            self._write_state(conn, writes)
        outcomes = []
        for entries in plan:
            stored = []
            duplicates = []
            for signal, _, _ in entries:
                seq = seqs.get(signal.id)
                if seq is not None:
                    stored.append((seq, signal))
                else:
                    duplicates.append(signal)
            outcomes.append(WriteOutcome(tuple(stored), tuple(duplicates)))
        return outcomes

    @staticmethod
    def _write_state(conn: PgConnection, writes: Sequence[JournalWrite]) -> None:
        """The link, cursor and bridge state updates that ride in the append's transaction; the
        check of the leases its writes were made under (their rows locked until the commit: a
        takeover waits for it, or this check sees the takeover)."""
        tokens = tokens_of(writes)
        if tokens:
            names = sorted({t.lease for t in tokens})
            rows = conn.execute(LEASE_ROWS, (names,)).fetchall()
            check_tokens(tokens, [(r["name"], r["holder"], r["epoch"]) for r in rows])
        seen: dict[str, int] = {}
        for write in writes:
            for touch in write.links:
                seen[touch.link] = max(seen.get(touch.link, touch.seen_us), touch.seen_us)
        if seen:
            links = sorted(seen)
            conn.execute(TOUCH_LINKS, (links, [seen[k] for k in links]))
        troubles = [(t.link, t.seen_us, int(t.open)) for w in writes for t in w.troubles]
        cursors = [cursor_params(c) for w in writes for c in w.cursors]
        states = [state_params(s) for w in writes for s in w.bridge_states]
        with conn.cursor() as cur:
            if troubles:
                cur.executemany(SET_TROUBLE, troubles)
            if cursors:
                cur.executemany(SAVE_CURSOR, cursors)
            if states:
                cur.executemany(UPSERT_BRIDGE_STATE, states)
        for write in writes:
            if write.prune_through is not None:
                conn.execute(SET_ANCHOR, (write.prune_through,))
                conn.execute("DELETE FROM signals WHERE seq <= %s", (write.prune_through,))

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        with self._use("journal read") as conn:
            rows = conn.execute(
                "SELECT * FROM signals WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)
            ).fetchall()
        return [(int(row["seq"]), signal_from_row(row)) for row in rows]

    def last_seq(self) -> int:
        with self._use("journal read") as conn:
            row = conn.execute(NEWEST_SEQ).fetchone()
        return int(row["seq"]) if row else 0

    def wait_commits(self, timeout: float) -> int:
        """Block (a worker thread) until a commit notice arrives, at most ``timeout`` seconds;
        the newest seq committed: the highest told, else (no notice in time, or none with a
        seq) read from the store. The first call, and the first after a lost connection,
        LISTENs and then reads: a commit made while nobody listened is not missed."""
        try:
            with self._notices_lock:
                try:
                    return self._wait_commits(timeout)
                except (psycopg.Error, PostgresOpenError) as exc:
                    if self._notices is not None:
                        self._notices.close()
                    self._notices = None
                    raise StoreError(f"commit notices failed: {str(exc).strip()}") from exc
        finally:
            if self._notices_closing:  # close() came while we waited
                self._close_notices()

    def _wait_commits(self, timeout: float) -> int:
        conn = self._notices
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                conn.close()
            self._notices = conn = connect(
                self.url,
                migrate_schema=not self._migrated,
                application_name="receiver commit notices",
            )
            self._migrated = True
            conn.execute(f"LISTEN {COMMIT_NOTICES}")
            return _newest_seq(conn)
        deadline = time.monotonic() + timeout
        told: list[str] = []
        while not told and not self._notices_closing:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # A list, not a loop over the generator: psycopg's notifies() holds the
            # connection's lock (not reentrant) until its generator is over.
            wait = min(left, _NOTICE_SLICE)
            told = [n.payload for n in conn.notifies(timeout=wait, stop_after=1)]
        if self._notices_closing:
            raise StoreError("commit notices: the store was closed during the wait")
        if told:
            told += [n.payload for n in conn.notifies(timeout=0)]  # the backlog, if any
            seqs = [int(payload) for payload in told if payload.isdigit()]
            if seqs:
                return max(seqs)
        return _newest_seq(conn)  # the fallback poll

    def recent_keys(self, since_us: int) -> list[tuple[str, int, int]]:
        with self._use("journal read") as conn:
            rows = conn.execute(
                "SELECT d.key, s.seq, d.received_us FROM dedupe_keys d "
                "JOIN signals s ON s.id = d.signal_id WHERE d.received_us >= %s ORDER BY s.seq",
                (since_us,),
            ).fetchall()
        return [(row["key"], int(row["seq"]), int(row["received_us"])) for row in rows]

    def purge_keys(self, before_us: int) -> int:
        with self._use("dedupe purge") as conn:
            cursor = conn.execute("DELETE FROM dedupe_keys WHERE received_us < %s", (before_us,))
            return cursor.rowcount

    def links(self) -> dict[str, tuple[int, bool]]:
        with self._use("links read") as conn:
            rows = conn.execute("SELECT link, last_seen_us, trouble_open FROM links").fetchall()
        return {r["link"]: (int(r["last_seen_us"]), bool(r["trouble_open"])) for r in rows}

    def links_seen_since(self, since_us: int) -> list[tuple[str, int]]:
        with self._use("links read") as conn:
            rows = conn.execute(
                "SELECT link, last_seen_us FROM links WHERE last_seen_us > %s", (since_us,)
            ).fetchall()
        return [(r["link"], int(r["last_seen_us"])) for r in rows]

    def prune_plan(self, before_us: int, limit: int, *, after_seq: int = 0) -> PrunePlan:
        with self._use("journal read") as conn:
            held = conn.execute(
                "SELECT name, cursor FROM outputs ORDER BY cursor, name LIMIT 1"
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, received_us FROM signals WHERE seq > %s ORDER BY seq LIMIT %s",
                (after_seq, limit),
            ).fetchall()
        lowest = (str(held["name"]), int(held["cursor"])) if held else None
        return PrunePlan.of(
            [(int(r["seq"]), int(r["received_us"])) for r in rows], before_us, lowest
        )

    def site_dealers(self) -> dict[int, str]:
        with self._use("registry read") as conn:
            rows = conn.execute(
                "SELECT sites.id, dealers.name FROM sites "
                "JOIN dealers ON dealers.id = sites.dealer_id"
            ).fetchall()
        return {int(r["id"]): str(r["name"]) for r in rows}

    # -- registry --------------------------------------------------------------------------

    def registry(self) -> RegistryTables:
        """The registry's tables on a connection of their own (the caller closes them)."""
        from receiver.store.postgres import registry_sql  # noqa: PLC0415
        from receiver.store.postgres.statements import StatementConnection  # noqa: PLC0415
        from receiver.store.registry_tables import SqlRegistryTables  # noqa: PLC0415

        return SqlRegistryTables(StatementConnection.open(self.url), registry_sql)

    def console(self) -> ConsoleTables:
        """The console's users on a connection of their own (the caller closes them)."""
        from receiver.store.console_tables import SqlConsoleTables  # noqa: PLC0415
        from receiver.store.postgres import (  # noqa: PLC0415
            bridge_report_sql,
            console_sql,
            registry_sql,
        )
        from receiver.store.postgres.statements import StatementConnection  # noqa: PLC0415

        return SqlConsoleTables(
            StatementConnection.open(self.url),
            console_sql,
            registry_sql=registry_sql,
            bridge_report_sql=bridge_report_sql,
        )

    def registry_generation(self) -> int:
        with self._use("registry read") as conn:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = 'registry_generation'"
            ).fetchone()
        return int(row["value"]) if row else 0

    def wait_registry_change(self, timeout: float) -> bool:
        try:
            listener = self._listening()
            for _ in listener.notifies(timeout=0):  # already counted below
                pass
            generation = self.registry_generation()
            seen, self._seen_generation = self._seen_generation, generation
            if seen is not None and generation != seen:
                return True
            # psycopg's notifies() holds the connection's lock (not reentrant) while it yields:
            # the wait's generator must be over before the backlog is drained.
            woken = any(True for _ in listener.notifies(timeout=timeout, stop_after=1))
            if woken:
                for _ in listener.notifies(timeout=0):
                    pass
                self._seen_generation = self.registry_generation()
                return True
        except (psycopg.Error, PostgresOpenError) as exc:
            raise StoreError(f"registry watch failed: {str(exc).strip()}") from exc
        return False

    def _listening(self) -> PgConnection:
        """The LISTEN connection (listening before the generation is read: no change lost)."""
        listener = self._listener
        if listener is None or listener.closed or listener.broken:
            if listener is not None:
                listener.close()
            self._listener = listener = connect(self.url, migrate_schema=False)
            listener.execute("LISTEN registry_changed")
        return listener

    # -- output cursors --------------------------------------------------------------------

    def ensure_output(self, name: str, now_us: int) -> int:
        with self._use("output cursor") as conn:
            conn.execute(ENSURE_OUTPUT, (name, now_us))
            row = conn.execute("SELECT cursor FROM outputs WHERE name = %s", (name,)).fetchone()
        assert row is not None
        return int(row["cursor"])

    def save_cursor(self, update: CursorUpdate, fence: FencingToken | None = None) -> bool:
        with self._use("output cursor") as conn:
            try:
                with conn.transaction():
                    if fence is not None:  # the lease row locked until the commit
                        rows = conn.execute(LEASE_ROWS, ([fence.lease],)).fetchall()
                        check_tokens({fence}, [(r["name"], r["holder"], r["epoch"]) for r in rows])
                    conn.execute(SAVE_CURSOR, cursor_params(update))
            except FenceRefused:
                return False
        return True

    def output_states(self, names: Sequence[str]) -> list[OutputState]:
        with self._use("output read") as conn:
            rows = conn.execute(
                "SELECT * FROM outputs WHERE name = ANY(%s) ORDER BY name", (list(names),)
            ).fetchall()
        return [OutputState.from_row(r) for r in rows]

    def backlog(self, cursor: int) -> tuple[int, int | None]:
        with self._use("output read") as conn:
            row = conn.execute(
                "SELECT count(*) AS n FROM signals WHERE seq > %s", (cursor,)
            ).fetchone()
            first = conn.execute(
                "SELECT received_us FROM signals WHERE seq > %s ORDER BY seq LIMIT 1", (cursor,)
            ).fetchone()
        return (int(row["n"]) if row else 0), (int(first["received_us"]) if first else None)

    # -- leases and nodes ------------------------------------------------------------------

    def _lease(self, sql: str, name: str, holder: str, ttl: float) -> Lease | None:
        with self._use("lease") as conn:
            row = conn.execute(sql, {"name": name, "holder": holder, "ttl": ttl}).fetchone()
        return Lease.from_row(row) if row is not None else None

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        return self._lease(ACQUIRE_LEASE, name, holder, ttl)

    def renew_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        return self._lease(RENEW_LEASE, name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> bool:
        with self._use("lease") as conn:
            row = conn.execute(RELEASE_LEASE, {"name": name, "holder": holder}).fetchone()
        return row is not None

    def leases(self) -> list[Lease]:
        with self._use("lease") as conn:
            rows = conn.execute(LEASES).fetchall()
        return [Lease.from_row(r) for r in rows]

    def heartbeat(self, node: str, info: Mapping[str, Any]) -> NodeBeat:
        with self._use("heartbeat") as conn:
            row = conn.execute(HEARTBEAT, (node, Jsonb(dict(info)))).fetchone()
        assert row is not None
        return _node(row)

    def nodes(self) -> list[NodeBeat]:
        with self._use("nodes read") as conn:
            rows = conn.execute(f"SELECT {_NODE_COLUMNS} FROM nodes ORDER BY name").fetchall()
        return [_node(row) for row in rows]

    # -- bridge state ----------------------------------------------------------------------

    def write_bridge_states(self, rows: Sequence[BridgeStateRow]) -> None:
        with self._use("bridge state write") as conn, conn.transaction(), conn.cursor() as cur:
            cur.executemany(UPSERT_BRIDGE_STATE, [state_params(r) for r in rows])

    def bridge_states(self) -> list[BridgeStateRow]:
        with self._use("bridge state read") as conn:
            rows = conn.execute("SELECT * FROM bridge_state ORDER BY serial").fetchall()
        return [BridgeStateRow.from_row(r) for r in rows]

    def arming_since(self, since_us: int) -> list[tuple[str, str, str, int]]:
        with self._use("journal read") as conn:
            rows = conn.execute(ARMING_SINCE, (since_us,)).fetchall()
        return [(r["device"], r["qualifier"], r["code"], int(r["received_us"])) for r in rows]

    # -- history ---------------------------------------------------------------------------

    def history(self, query: HistoryQuery) -> list[tuple[int, Signal]]:
        with self._use("history") as conn:
            sql, params = history_sql.history_statement(
                _scalar(conn), "*", query, history_sql.POSTGRES
            )
            rows = conn.execute(_marks(sql), params).fetchall()
        return [(int(row["seq"]), signal_from_row(row)) for row in rows]

    def history_after(self, query: HistoryQuery, seq: int, limit: int) -> tuple[int, list[Signal]]:
        newest = self.last_seq()
        if newest <= seq:
            return seq, []
        with self._use("history") as conn:
            sql, params = history_sql.history_after_statement(
                _scalar(conn),
                "*",
                query,
                history_sql.POSTGRES,
                seq=seq,
                newest=newest,
                limit=limit,
            )
            rows = conn.execute(_marks(sql), params).fetchall()
        if len(rows) == limit:
            newest = int(rows[-1]["seq"])
        return newest, [signal_from_row(row) for row in rows]

    # -- the read side for audits and reports (receiver/store/interface.py ``ReportStore``) --

    @contextmanager
    def _snapshot(self, what: str) -> Iterator[PgConnection]:
        """One read-only repeatable-read transaction: every query sees the same commits."""
        with self._use(what) as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield conn

    def verify_journal(self, since_us: int | None = None) -> Verification:
        with self._snapshot("journal verify") as conn:
            return verify_chain(PgChainReader(conn), since_us=since_us)

    def usage_rows(self, dealer: str, start_us: int, end_us: int) -> UsageRead | None:
        with self._snapshot("usage report") as conn:
            return usage_sql.read(conn, dealer, start_us, end_us)

    def bridge_report_rows(self, dealer: str | None, site: str | None) -> BridgeReportRead:
        with self._snapshot("bridge report") as conn:
            return bridge_report_sql.read(StatementConnection(conn), dealer=dealer, site=site)

    # -- users -----------------------------------------------------------------------------

    def add_user(self, user: User) -> None:
        with self._use("add user") as conn:
            conn.execute(
                "INSERT INTO users (name, role, password_hash) VALUES (%s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET role = excluded.role, "
                "password_hash = excluded.password_hash",
                (user.name, user.role, user.password_hash),
            )

    def user(self, name: str) -> User | None:
        with self._use("users read") as conn:
            row = conn.execute("SELECT * FROM users WHERE name = %s", (name,)).fetchone()
        return _user(row) if row else None

    def users(self) -> list[User]:
        with self._use("users read") as conn:
            rows = conn.execute("SELECT * FROM users ORDER BY name").fetchall()
        return [_user(row) for row in rows]


def _newest_seq(conn: PgConnection) -> int:
    row = conn.execute(NEWEST_SEQ).fetchone()
    return int(row["seq"]) if row else 0


def _node(row: Mapping[str, Any]) -> NodeBeat:
    info = row["info"]
    return NodeBeat(
        row["name"],
        int(row["started_us"]),
        int(row["heartbeat_us"]),
        info if isinstance(info, dict) else json.loads(info),
    )


def _user(row: Mapping[str, Any]) -> User:
    return User(row["name"], cast("UserRole", row["role"]), row["password_hash"])


def _marks(sql: str) -> bytes:
    """A statement of ``receiver/store/history_sql.py`` (written for SQLite's ``?``) in
    psycopg's placeholders; none of its statements holds a literal ``?`` or ``%``."""
    return sql.replace("?", "%s").encode()


def _scalar(conn: PgConnection) -> history_sql.Scalar:
    def scalar(sql: str, params: Sequence[Any]) -> Any:
        row = conn.execute(_marks(sql), params).fetchone()
        return None if row is None else next(iter(row.values()))

    return scalar
