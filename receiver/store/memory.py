"""An in-memory fake of the store, for fast unit tests of the components above it.

It keeps the interface's rules that a component can observe (one outcome per write, duplicates
within the window absorbed with the repeat counted, journal order, cursors that only move on,
everything in one ``append`` applied together or not at all, writes under a lease fenced as
``receiver/store/fencing.py`` says) and nothing of durability. Not for the service: a
receiver's alarms belong on disk.

The registry's tables (``registry()``) are SQLite's in-memory database with the store's
migrations: the registry's rules live in its unique indexes and triggers.

Leases are kept as the SQLite store keeps them (``receiver/store/lease_sql.py``): taken when
free, expired or already the taker's, each take a new epoch (a renewal keeps it), released by
expiring now; the clock is ``time.time`` unless a test gives its own.

``fail_next`` makes the next calls raise :class:`StoreError` (a full disk, a lost server), so
tests can show what a component does when its store fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from protocols.signal import Signal
from receiver.store.fencing import FenceRefused, append_fenced, check_tokens, tokens_of
from receiver.store.interface import (
    BridgeStateRow,
    CursorUpdate,
    FencingToken,
    JournalWrite,
    Lease,
    OutputState,
    PrunePlan,
    StoreError,
    WriteOutcome,
)
from receiver.store.signal_rows import to_us

if TYPE_CHECKING:
    from receiver.history import HistoryQuery
    from receiver.store.interface import RegistryTables


@attrs.define
class StoredSignal:
    seq: int
    signal: Signal
    key: str | None
    repeats: int = 0


class MemoryStore:
    """The store's journal, cursor, bridge state and history sides, in memory."""

    def __init__(
        self, *, duplicate_window: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.window_us = int(duplicate_window * 1_000_000)
        self.clock = clock
        self.lease_rows: dict[str, Lease] = {}  # every lease ever taken, expired ones too
        self.rows: list[StoredSignal] = []
        self.by_key: dict[str, StoredSignal] = {}
        self.link_rows: dict[str, tuple[int, bool]] = {}
        self.outputs: dict[str, OutputState] = {}
        self.states: dict[str, BridgeStateRow] = {}
        self.dealers: dict[int, str] = {}  # site id -> dealer name (the registry's)
        self.failures = 0  # how many of the next calls fail
        self.appends = 0  # committed append calls (one per batch)
        self.closed = False
        self._next_seq = 1
        self._lock = threading.Lock()
        self._registry: RegistryTables | None = None

    def fail_next(self, calls: int = 1) -> None:
        self.failures += calls

    def _check(self, what: str) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreError(f"{what} failed: the test said so")

    def close(self) -> None:
        self.closed = True

    # -- registry ----------------------------------------------------------------------------

    def registry(self) -> RegistryTables:
        """The registry's tables, in memory: SQLite's ``:memory:`` database with the store's own
        migrations, so the unique indexes that enforce the registry's rules (an effective number
        once per station, a name, a serial, a zone per account) and the generation triggers are
        the store's, not a second copy of them. The same tables on every call (closing them
        ends this store's registry)."""
        with self._lock:
            if self._registry is None:
                from receiver.store import registry_sql  # noqa: PLC0415
                from receiver.store.registry_tables import SqlRegistryTables  # noqa: PLC0415
                from receiver.store.sqlite import connect  # noqa: PLC0415

                conn = connect(":memory:", check_same_thread=False)
                self._registry = SqlRegistryTables(conn, registry_sql)
            return self._registry

    # -- leases ------------------------------------------------------------------------------

    def _now_us(self) -> int:
        return int(self.clock() * 1_000_000)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take ``name`` if it is free, expired or already ``holder``'s: a new epoch each take."""
        with self._lock:
            self._check("lease")
            now = self._now_us()
            row = self.lease_rows.get(name)
            if row is not None and row.holder != holder and row.expires_us > now:
                return None
            epoch = 1 if row is None else row.epoch + 1
            lease = Lease(name, holder, now + int(ttl * 1_000_000), epoch)
            self.lease_rows[name] = lease
            return lease

    def renew_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Extend ``holder``'s unexpired lease, keeping its epoch; None if it is not theirs."""
        with self._lock:
            self._check("lease")
            now = self._now_us()
            row = self.lease_rows.get(name)
            if row is None or row.holder != holder or row.expires_us <= now:
                return None
            lease = attrs.evolve(row, expires_us=now + int(ttl * 1_000_000))
            self.lease_rows[name] = lease
            return lease

    def release_lease(self, name: str, holder: str) -> bool:
        """Expire ``holder``'s lease now (the row stays: its epoch keeps growing)."""
        with self._lock:
            now = self._now_us()
            row = self.lease_rows.get(name)
            if row is None or row.holder != holder or row.expires_us <= now:
                return False
            self.lease_rows[name] = attrs.evolve(row, expires_us=now - 1)
            return True

    def leases(self) -> list[Lease]:
        """The unexpired leases, by name."""
        now = self._now_us()
        return [
            self.lease_rows[n]
            for n in sorted(self.lease_rows)
            if self.lease_rows[n].expires_us > now
        ]

    # -- journal -----------------------------------------------------------------------------

    def append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        with self._lock:
            self._check("journal commit")
            if any(write.console for write in writes):
                raise StoreError("the console's writes are SQLite statements: not in memory")
            # Writes under a lease that changed hands are refused (receiver/store/fencing.py).
            return append_fenced(writes, self._append)

    def _append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        """One try of the batch, under the lock: nothing is applied before every check passed."""
        tokens = tokens_of(writes)
        if tokens:
            rows = (self.lease_rows.get(t.lease) for t in tokens)
            check_tokens(tokens, ((r.name, r.holder, r.epoch) for r in rows if r is not None))
        ids = {row.signal.id for row in self.rows}
        new_rows: list[StoredSignal] = []
        new_keys: dict[str, StoredSignal] = {}
        repeats: list[StoredSignal] = []
        outcomes: list[WriteOutcome] = []
        seq = self._next_seq
        for write in writes:
            stored: list[tuple[int, Signal]] = []
            duplicates: list[Signal] = []
            keys = write.keys or (None,) * len(write.signals)
            for signal, key in zip(write.signals, keys, strict=True):
                if key is not None:
                    hit = new_keys.get(key) or self.by_key.get(key)
                    received = to_us(signal.received_at)
                    if hit is not None and received - to_us(hit.signal.received_at) <= (
                        self.window_us
                    ):
                        repeats.append(hit)
                        duplicates.append(signal)
                        continue
                if signal.id in ids:  # the id is unique, as in every backend
                    raise StoreError(f"journal commit failed: signal {signal.id} exists")
                ids.add(signal.id)
                row = StoredSignal(seq, signal, key)
                seq += 1
                new_rows.append(row)
                if key is not None:
                    new_keys[key] = row
                stored.append((row.seq, signal))
            outcomes.append(WriteOutcome(tuple(stored), tuple(duplicates)))
        # Committed: apply everything at once.
        self.rows += new_rows
        self.by_key.update(new_keys)
        self._next_seq = seq
        for row in repeats:
            row.repeats += 1
        for write in writes:
            for touch in write.links:
                seen, trouble = self.link_rows.get(touch.link, (0, False))
                self.link_rows[touch.link] = (max(seen, touch.seen_us), trouble)
            for change in write.troubles:
                seen, _ = self.link_rows.get(change.link, (change.seen_us, False))
                self.link_rows[change.link] = (seen, change.open)
            for update in write.cursors:
                self._save_cursor(update)
            for state in write.bridge_states:
                self.states[state.serial] = state
            if write.prune_through is not None:
                self.rows = [r for r in self.rows if r.seq > write.prune_through]
        self.appends += 1
        return outcomes

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        self._check("journal read")
        return [(r.seq, r.signal) for r in self.rows if r.seq > seq][:limit]

    def last_seq(self) -> int:
        self._check("journal read")
        return self._next_seq - 1

    def recent_keys(self, since_us: int) -> list[tuple[str, int, int]]:
        return [
            (r.key, r.seq, to_us(r.signal.received_at))
            for r in self.rows
            if r.key is not None and to_us(r.signal.received_at) >= since_us
        ]

    def purge_keys(self, before_us: int) -> int:
        old = [k for k, r in self.by_key.items() if to_us(r.signal.received_at) < before_us]
        for key in old:
            del self.by_key[key]
        return len(old)

    def links(self) -> dict[str, tuple[int, bool]]:
        self._check("links read")
        return dict(self.link_rows)

    def links_seen_since(self, since_us: int) -> list[tuple[str, int]]:
        self._check("links read")
        return [(link, seen) for link, (seen, _) in self.link_rows.items() if seen > since_us]

    def prune_plan(self, before_us: int, limit: int, *, after_seq: int = 0) -> PrunePlan:
        held = min(((o.cursor, o.name) for o in self.outputs.values()), default=None)
        rows = [(r.seq, to_us(r.signal.received_at)) for r in self.rows if r.seq > after_seq]
        return PrunePlan.of(rows[:limit], before_us, (held[1], held[0]) if held else None)

    def site_dealers(self) -> dict[int, str]:
        return dict(self.dealers)

    # -- output cursors ----------------------------------------------------------------------

    def ensure_output(self, name: str, now_us: int) -> int:
        self._check("output cursor")
        if name not in self.outputs:
            self.outputs[name] = OutputState(
                name, self._next_seq - 1, 0, 0, False, None, None, now_us
            )
        return self.outputs[name].cursor

    def _save_cursor(self, update: CursorUpdate) -> None:
        state = self.outputs.get(update.output)
        if state is None:
            return  # as UPDATE ... WHERE name = ?: an output never ensured has no row
        self.outputs[update.output] = OutputState(
            name=update.output,
            cursor=max(state.cursor, update.cursor),
            delivered=state.delivered + update.delivered,
            undeliverable=state.undeliverable + update.undeliverable,
            connected=update.connected,
            last_error=update.last_error,
            last_success_us=update.last_success_us
            if update.last_success_us is not None
            else state.last_success_us,
            updated_us=update.updated_us,
        )

    def save_cursor(self, update: CursorUpdate, fence: FencingToken | None = None) -> bool:
        self._check("output cursor")
        with self._lock:
            if fence is not None:  # under the lock, as an append checks it
                row = self.lease_rows.get(fence.lease)
                try:
                    check_tokens({fence}, [(row.name, row.holder, row.epoch)] if row else [])
                except FenceRefused:
                    return False
            self._save_cursor(update)
        return True

    def output_states(self, names: Sequence[str]) -> list[OutputState]:
        return [self.outputs[n] for n in sorted(set(names)) if n in self.outputs]

    def backlog(self, cursor: int) -> tuple[int, int | None]:
        waiting = [r for r in self.rows if r.seq > cursor]
        return len(waiting), to_us(waiting[0].signal.received_at) if waiting else None

    # -- bridge state ------------------------------------------------------------------------

    def write_bridge_states(self, rows: Sequence[BridgeStateRow]) -> None:
        self._check("bridge state write")
        for row in rows:
            self.states[row.serial] = row

    def bridge_states(self) -> list[BridgeStateRow]:
        return [self.states[s] for s in sorted(self.states)]

    def arming_since(self, since_us: int) -> list[tuple[str, str, str, int]]:
        found = []
        for row in self.rows:
            signal, cid = row.signal, row.signal.cid
            received = to_us(signal.received_at)
            if (
                received >= since_us
                and signal.source.value == "bridge"
                and signal.device is not None
                and cid is not None
                and cid.code in ("401", "441")
                and cid.qualifier in ("E", "R")
            ):
                found.append((signal.device, cid.qualifier, cid.code, received))
        return sorted(found, key=lambda f: f[3])

    # -- history -----------------------------------------------------------------------------

    def history(self, query: HistoryQuery) -> list[tuple[int, Signal]]:
        found = [(r.seq, r.signal) for r in self.rows if _matches(query, r.signal)]
        found.sort(key=lambda f: (f[1].received_at, f[0]), reverse=True)
        return found[: query.limit] if query.limit > 0 else found

    def history_after(self, query: HistoryQuery, seq: int, limit: int) -> tuple[int, list[Signal]]:
        newest = self._next_seq - 1
        if newest <= seq:
            return seq, []
        rows = [r for r in self.rows if r.seq > seq and _matches(query, r.signal)][:limit]
        if len(rows) == limit:
            newest = rows[-1].seq
        return newest, [r.signal for r in rows]


# SQLite's upper(), which the history's ``upper(account) = ?`` runs: ASCII letters only
# ("é" stays "é", "ß" stays "ß"; Python's upper() makes them "É" and "SS").
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _ascii_upper(text: str) -> str:
    return text.translate(_ASCII_UPPER)


def _matches(query: HistoryQuery, signal: Signal) -> bool:
    """``receiver/store/history_sql.py``'s conditions, in Python."""
    from receiver.store.history_sql import QUALIFIED_CODE  # noqa: PLC0415

    if query.account:
        wanted = query.account.strip().upper()  # as history_sql.account_value
        if signal.effective_account != wanted and _ascii_upper(signal.account) != wanted:
            return False
    if query.station and signal.station != query.station:
        return False
    if query.since and signal.received_at < query.since:
        return False
    if query.until and signal.received_at > query.until:
        return False
    if query.code:
        code = query.code.strip().upper()
        cid, sia = signal.cid, signal.sia
        qualified = QUALIFIED_CODE.match(code)
        if qualified is not None:
            return cid is not None and (cid.qualifier, cid.code) == qualified.groups()
        return (cid is not None and cid.code == code) or (sia is not None and sia.code == code)
    return True
