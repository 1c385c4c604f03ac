"""The store's interface: what the receiver asks of a database, with no SQL in it.

Each backend (SQLite, the embedded default; PostgreSQL, for several receiver nodes) implements
these protocols over its own SQL and numbered migrations. Every call is synchronous and made
from a worker thread (``trio.to_thread.run_sync``), one call per batch, never one per signal.

Rules every backend keeps:
- ``JournalStore.append`` returns only after its transaction committed durably (SQLite
  ``synchronous=FULL``, PostgreSQL ``synchronous_commit=on``); if it raises, the outcome is
  unknown and nobody may ACK. Everything in one call (signals, link updates, cursor updates,
  bridge state rows) commits together or not at all.
- A dedupe key committed within the window is a duplicate, for every writer of the store (a
  unique index, not a process's memory): the original row counts the repeat and the signal is
  reported as a duplicate (ACK it again, never forward it again).
- Journal order is commit order: a reader that has seen ``seq`` never later finds a newly
  committed signal at or below it (the cursor of each output relies on it).
- An account number is unique within its station on its effective form, enforced by the
  database: of two writers racing, one wins and the other gets :class:`RowRefusedError`.
- A lease has at most one holder; it is taken over only after it expired (database clock).
- A write made under a lease carries its :class:`FencingToken`: the store refuses it, storing
  nothing of it, when the lease row no longer has that holder and epoch, checked in the write's
  own transaction with the row locked until the commit (a takeover waits for it, or the write
  sees the takeover). The other writes of the batch commit as if it had not been there.

The typed records below replace ``Journal.append(statements=[(sql, params)])``: a cursor update
and a bridge state row ride in the journal's transaction without the caller writing SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import attrs

from protocols.errors import ReceiverError, RegistryError
from protocols.signal import Signal

if TYPE_CHECKING:
    from receiver.bridge_state import BridgeReportRead
    from receiver.history import HistoryQuery
    from receiver.journal_chain import Verification
    from receiver.store.console_sql import Credentials, Session, SignalFilter
    from receiver.store.console_sql import User as ConsoleUser
    from receiver.store.usage_sql import UsageRead


class StoreError(ReceiverError, OSError):
    """The store failed or its outcome is unknown (the caller must not ACK what it carried)."""


class RowRefusedError(RegistryError):
    """A unique index (or a check) of the database refused a registry row; the message is the
    database's own (either driver's). The CLI prints it in one line, the console answers 422."""


# -- what rides in a journal append ----------------------------------------------------------


@attrs.frozen
class LinkSeen:
    """Traffic on a supervised link (``account:<id>``, ``bridge:<serial>``...): last seen."""

    link: str
    seen_us: int


@attrs.frozen
class LinkTrouble:
    """A supervised link's trouble opened (``open``) or closed, at ``seen_us``."""

    link: str
    seen_us: int
    open: bool


@attrs.frozen
class CursorUpdate:
    """An output's delivery state (today ``dispatcher.SAVE_STATE``): the cursor only moves on.

    ``delivered`` and ``undeliverable`` are increments since the last update.
    ``last_success_us`` None keeps the stored value.
    """

    output: str
    cursor: int
    delivered: int = 0
    undeliverable: int = 0
    connected: bool = False
    last_error: str | None = None
    last_success_us: int | None = None
    updated_us: int = 0


ArmName = Literal["armed", "disarmed", "partial"]


@attrs.frozen
class BridgeStateRow:
    """What the receiver last heard from one video bridge (today ``bridge_state.UPSERT_STATE``)."""

    serial: str
    model: str | None
    channels: int | None
    firmware: str | None
    armed: ArmName | None
    armed_us: int | None
    peer: str | None
    connected_us: int | None
    updated_us: int

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> BridgeStateRow:
        """From a ``bridge_state`` row as either backend reads it (columns by name)."""
        return cls(
            serial=r["serial"],
            model=r["model"],
            channels=r["channels"],
            firmware=r["firmware"],
            armed=r["armed"],
            armed_us=r["armed_us"],
            peer=r["peer"],
            connected_us=r["connected_us"],
            updated_us=int(r["updated_us"]),
        )


@attrs.frozen
class JournalWrite:
    """One caller's part of a grouped commit: its signals (with one dedupe key each, None: never
    a duplicate) and the state that commits with them.

    ``prune_through`` removes the journal's prefix up to that seq (retention, with the chain's
    anchor). ``console`` are the operator console's writes (sessions, audit rows, manual
    acknowledgements: ``receiver/store/console_sql.py`` statements), SQLite only until the
    console has typed records of its own; the PostgreSQL store refuses them. ``fence``: the
    hold of a lease the write is made under (see the module's rules).
    """

    signals: Sequence[Signal] = ()
    keys: Sequence[str | None] = ()
    links: Sequence[LinkSeen] = ()
    troubles: Sequence[LinkTrouble] = ()
    cursors: Sequence[CursorUpdate] = ()
    bridge_states: Sequence[BridgeStateRow] = ()
    prune_through: int | None = None
    console: Sequence[tuple[str, tuple[Any, ...]]] = ()
    fence: FencingToken | None = None

    def __attrs_post_init__(self) -> None:
        if self.keys and len(self.keys) != len(self.signals):
            raise ValueError("one dedupe key (or None) per signal")


@attrs.frozen
class WriteOutcome:
    """What one :class:`JournalWrite` became: stored signals with their journal position, and the
    signals absorbed as duplicates of a committed key; or ``refused`` (nothing of it stored):
    its lease had changed hands."""

    stored: tuple[tuple[int, Signal], ...]
    duplicates: tuple[Signal, ...]
    refused: bool = False


# -- other records ---------------------------------------------------------------------------


@attrs.frozen
class PrunePlan:
    """What one retention batch would remove: ``count`` rows, seq ``first``..``through``."""

    count: int
    first: int | None
    through: int | None
    oldest_us: int | None
    newest_us: int | None
    held_by: str | None  # the output whose cursor stopped the batch short, if one did

    @classmethod
    def of(
        cls,
        rows: Sequence[tuple[int, int]],
        before_us: int,
        lowest_cursor: tuple[str, int] | None,
    ) -> PrunePlan:
        """The plan over (seq, received_us) candidates in seq order: the prefix received before
        ``before_us`` and not past the lowest output cursor (name, cursor)."""
        taken: list[tuple[int, int]] = []
        held_by = None
        for seq, received_us in rows:
            if received_us >= before_us:
                break
            if lowest_cursor is not None and seq > lowest_cursor[1]:
                held_by = lowest_cursor[0]
                break
            taken.append((int(seq), int(received_us)))
        if not taken:
            return cls(0, None, None, None, None, held_by)
        return cls(
            len(taken),
            taken[0][0],
            taken[-1][0],
            min(r for _, r in taken),
            max(r for _, r in taken),
            held_by,
        )


@attrs.frozen
class OutputState:
    """An output's stored delivery state (for ``receiver report`` and the console)."""

    name: str
    cursor: int
    delivered: int
    undeliverable: int
    connected: bool
    last_error: str | None
    last_success_us: int | None
    updated_us: int | None

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> OutputState:
        """From an ``outputs`` row as either backend reads it (columns by name)."""
        return cls(
            name=r["name"],
            cursor=int(r["cursor"]),
            delivered=int(r["delivered"]),
            undeliverable=int(r["undeliverable"]),
            connected=bool(r["connected"]),
            last_error=r["last_error"],
            last_success_us=r["last_success_us"],
            updated_us=r["updated_us"],
        )


@attrs.frozen
class Lease:
    """Who handles ``name`` (an output, a supervised link) until ``expires_us`` (database clock).

    ``epoch`` grows each time the lease is taken (not when it is renewed): with the holder, the
    fencing token of that hold.
    """

    name: str
    holder: str
    expires_us: int
    epoch: int

    @classmethod
    def from_row(cls, r: Mapping[str, Any]) -> Lease:
        """From a ``leases`` row as either backend reads it (columns by name)."""
        return cls(r["name"], r["holder"], int(r["expires_us"]), int(r["epoch"]))

    @property
    def token(self) -> FencingToken:
        return FencingToken(self.name, self.holder, self.epoch)


@attrs.frozen
class FencingToken:
    """The hold a write is made under: lease ``lease`` taken by ``holder`` at ``epoch``."""

    lease: str
    holder: str
    epoch: int


@attrs.frozen
class NodeBeat:
    """A receiver node's last heartbeat (database clock)."""

    name: str
    started_us: int
    heartbeat_us: int
    info: Mapping[str, Any]


@attrs.frozen
class AccountRow:
    """An account as the registry inserts it (numbers already normalized by the registry)."""

    station_id: int
    line_id: int
    number: str
    effective: str
    site_id: int | None = None
    key_text: str | None = None
    key_format: Literal["hex", "ascii"] | None = None
    supervision: float | None = None
    window_past: float | None = None
    window_future: float | None = None
    window_policy: str | None = None  # "reject" or "flag" (the registry checked it)


class RegistryRow(Protocol):
    """A registry row read by column name (``row["id"]``): a ``sqlite3.Row`` or psycopg's dict
    row as the driver gives it (no copy: the index reads every account at each refresh)."""

    def __getitem__(self, column: str, /) -> Any: ...

    def keys(self) -> Iterable[str]: ...


# The registry's two savepoints: one waiting bridge attached, one CSV row of a bridge import.
Savepoint = Literal["attach_bridge", "import_row"]


UserRole = Literal["admin", "operator", "viewer"]


@attrs.frozen
class User:
    """An operator console user; the password only as its hash."""

    name: str
    role: UserRole
    password_hash: str


# -- the protocols ---------------------------------------------------------------------------


class JournalStore(Protocol):
    def append(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome]:
        """Commit every write in one transaction (one call per batch); one outcome per write."""
        ...

    def read_after(self, seq: int, limit: int) -> list[tuple[int, Signal]]:
        """Signals committed after ``seq``, in journal order, at most ``limit``."""
        ...

    def last_seq(self) -> int:
        """The journal position of the newest signal (0 when empty)."""
        ...

    def recent_keys(self, since_us: int) -> list[tuple[str, int, int]]:
        """(dedupe key, seq, received_us) of keyed signals received at or after ``since_us``."""
        ...

    def purge_keys(self, before_us: int) -> int:
        """Forget dedupe keys received before ``before_us``; how many were forgotten."""
        ...

    def links(self) -> dict[str, tuple[int, bool]]:
        """Last-seen time and open-trouble state of every supervised link."""
        ...

    def links_seen_since(self, since_us: int) -> list[tuple[str, int]]:
        """(link, last_seen_us) of every link with traffic after ``since_us``."""
        ...

    def prune_plan(self, before_us: int, limit: int, *, after_seq: int = 0) -> PrunePlan:
        """The next retention batch after ``after_seq`` (written by ``JournalWrite``)."""
        ...

    def close(self) -> None:
        """Close the store's connection (a later call may open a new one)."""
        ...


@runtime_checkable
class AppendNowStore(Protocol):
    """A store that can commit on the caller's thread when no other writer holds its lock."""

    def append_now(self, writes: Sequence[JournalWrite]) -> list[WriteOutcome] | None:
        """``append`` at once if the write lock is free now, without waiting for another
        writer; None (nothing written) when another holds it: then call ``append``."""
        ...


@runtime_checkable
class CommitNoticeStore(Protocol):
    """A store that tells its commits to every node (PostgreSQL's LISTEN/NOTIFY)."""

    def wait_commits(self, timeout: float) -> int:
        """Block (a worker thread) until a commit notice arrives, at most ``timeout`` seconds;
        the newest seq committed (read from the store when no notice came)."""
        ...


class RegistrySource(Protocol):
    """Where the registry's tables are read and written (either backend's store object)."""

    def registry(self) -> RegistryTables:
        """The registry's tables (what ``receiver.registry.Registry`` and ``RegistryIndex.load``
        run on), on a connection of their own: the caller closes them."""
        ...

    def close(self) -> None: ...


class RegistryStore(RegistrySource, Protocol):
    """The registry's tables (every read and write, ``RegistryTables``) and its change
    generation, which every node watches."""

    def registry_generation(self) -> int:
        """A number that changes with every committed registry change."""
        ...

    def wait_registry_change(self, timeout: float) -> bool:
        """Block (a worker thread) until a registry change is committed by anyone, at most
        ``timeout`` seconds; whether one was seen."""
        ...


class ConsoleTables(Protocol):
    """The console's users and API tokens as ``receiver users`` writes and lists them (each
    write one transaction with its audit row), and what the running console's pages, API and
    ``/metrics`` read; ``receiver.store.console_tables``."""

    def close(self) -> None: ...

    def commit(self, statements: Sequence[tuple[str, tuple[Any, ...]]]) -> None:
        """The backend's console statements in one transaction of their own, all or none."""
        ...

    def user_by_name(self, name: str) -> Credentials | None: ...

    def session(self, token_hash: str) -> Session | None: ...

    def token_user(self, token_hash: str) -> ConsoleUser | None: ...

    def audit(self, limit: int = 100) -> list[dict[str, Any]]: ...

    def signal_rows(self, query: SignalFilter) -> list[Mapping[str, Any]]: ...

    def signal_row(self, signal_id: str) -> Mapping[str, Any] | None: ...

    def manual_ack(self, signal_id: str) -> dict[str, Any] | None: ...

    def manual_acks(self, signal_ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...

    def waiting_alarms(self, cursor: int, limit: int) -> list[Mapping[str, Any]]: ...

    def recent_manual_acks(self, limit: int) -> list[Mapping[str, Any]]: ...

    def max_seq(self) -> int: ...

    def open_troubles(self) -> list[dict[str, Any]]: ...

    def links(self) -> list[dict[str, Any]]: ...

    def registry_size(self) -> tuple[int, int]: ...

    def registry(self) -> RegistryTables:
        """The registry's tables on the same connection (closed with it)."""
        ...

    def bridge_report_rows(self, dealer: str | None, site: str | None) -> BridgeReportRead: ...

    def alive(self) -> bool: ...

    def save_user(self, name: str, role: str, password_hash: str, at_us: int, by: str) -> None:
        """Add a user, or reset its role and password (its sessions end)."""
        ...

    def users(self) -> list[dict[str, Any]]:
        """Every user (id, name, role, created_us, disabled), by name."""
        ...

    def add_api_token(
        self, name: str, token_hash: str, label: str | None, at_us: int, by: str
    ) -> bool:
        """A new API token (its hash) for the user ``name``; false: no such user."""
        ...


class ConsoleSource(Protocol):
    """Where the console's users are read and written (either backend's store object)."""

    def console(self) -> ConsoleTables:
        """The console's tables on a connection of their own: the caller closes them."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class RegistryTables(Protocol):
    """The registry's tables as the registry service (``receiver.registry.service``) and the
    hot path's index (``receiver.registry_index``) use them: one typed method per read or
    write, no SQL. ``receiver.store.registry_tables.SqlRegistryTables`` implements it for
    SQLite and PostgreSQL (each through its own registry SQL module); ``MemoryStore.registry``
    gives one in memory.

    The caller owns the transaction: ``begin_write`` serializes registry writers (SQLite
    ``BEGIN IMMEDIATE``; PostgreSQL an advisory lock, on every node), ``begin_read`` is one
    snapshot. The unique indexes are the last line of defence: a refused row raises
    :class:`RowRefusedError` (inside a write, roll back or to a savepoint).
    """

    def close(self) -> None: ...

    @property
    def in_transaction(self) -> bool: ...

    def begin_write(self) -> None: ...

    def begin_read(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def savepoint(self, name: Savepoint) -> None: ...

    def rollback_to(self, name: Savepoint) -> None: ...

    def release(self, name: Savepoint) -> None: ...

    def generation(self) -> int: ...

    def station_by_name(self, name: str) -> RegistryRow | None: ...

    def stations(self) -> list[RegistryRow]: ...

    def insert_station(self, name: str, xml_output: str | None, passkey: str | None) -> int: ...

    def update_station(
        self, station_id: int, name: str, xml_output: str | None, passkey: str | None
    ) -> None: ...

    def station_lines(self, station_id: int) -> list[RegistryRow]: ...

    def line(self, station_id: int, number: str) -> RegistryRow | None: ...

    def line_by_id(self, line_id: int) -> RegistryRow: ...

    def lines_of_station(self, station_id: int) -> list[RegistryRow]: ...

    def all_lines(self) -> list[RegistryRow]: ...

    def insert_line(self, station_id: int, number: str, prefix: str) -> None: ...

    def dealer_by_name(self, name: str) -> RegistryRow | None: ...

    def dealers(self) -> list[RegistryRow]: ...

    def insert_dealer(self, name: str) -> None: ...

    def rename_dealer(self, dealer_id: int, name: str) -> None: ...

    def remove_dealer(self, dealer_id: int, at: float) -> None: ...

    def sites_of_dealer(self, dealer_id: int) -> list[RegistryRow]: ...

    def site_by_name(self, name: str) -> RegistryRow | None: ...

    def site_by_id(self, site_id: int) -> RegistryRow: ...

    def site_details(self, site_id: int) -> RegistryRow: ...

    def site_ids(self) -> list[RegistryRow]: ...

    def sites(self) -> list[RegistryRow]: ...

    def site_dealers(self) -> list[RegistryRow]: ...

    def insert_site(
        self, name: str, dealer_id: int, address: str | None, arming_source: str | None
    ) -> None: ...

    def update_site(
        self,
        site_id: int,
        name: str,
        dealer_id: int,
        address: str | None,
        arming_source: str | None,
    ) -> None: ...

    def remove_site(self, site_id: int, at: float) -> None: ...

    def holder(self, station_id: int, effective: str) -> RegistryRow | None: ...

    def holders_of_station(self, station_id: int) -> list[RegistryRow]: ...

    def insert_account_rows(self, rows: Sequence[AccountRow]) -> None: ...

    def accounts_of_site(self, site_id: int) -> list[RegistryRow]: ...

    def account_by_id(self, account_id: int) -> RegistryRow: ...

    def account_by_effective(self, station_id: int, effective: str) -> RegistryRow | None: ...

    def account_settings(self, account_id: int) -> RegistryRow: ...

    def update_account(
        self,
        account_id: int,
        *,
        line_id: int,
        number: str,
        effective: str,
        site_id: int | None,
        supervision: float | None,
        window_past: float | None,
        window_future: float | None,
        window_policy: str | None,
    ) -> None: ...

    def set_account_key(
        self,
        account_id: int,
        *,
        key_text: str,
        key_format: str,
        previous_text: str | None,
        previous_format: str | None,
        grace_until: float | None,
    ) -> None: ...

    def remove_account(self, account_id: int, at: float) -> None: ...

    def accounts(self) -> list[RegistryRow]:
        """Every account with what the receiver needs to act on a frame (any order)."""
        ...

    def accounts_ordered(self) -> list[RegistryRow]: ...

    def accounts_of_station(self, station: str) -> list[RegistryRow]: ...

    def dealer_override(self, dealer_id: int, zone_type: str) -> RegistryRow | None: ...

    def site_override(self, site_id: int, zone_type: str) -> RegistryRow | None: ...

    def insert_override(
        self,
        dealer_id: int | None,
        site_id: int | None,
        zone_type: str,
        code: str | None,
        enabled: int | None,
    ) -> None: ...

    def update_override(self, override_id: int, code: str | None, enabled: int | None) -> None: ...

    def delete_override(self, override_id: int) -> None: ...

    def dealer_overrides(self) -> list[RegistryRow]: ...

    def site_overrides(self) -> list[RegistryRow]: ...

    def bridge_by_serial(self, serial: str) -> RegistryRow | None: ...

    def bridges(self) -> list[RegistryRow]: ...

    def bridges_of_account(self, account_id: int) -> list[RegistryRow]: ...

    def bridges_of_site(self, site_id: int) -> list[RegistryRow]: ...

    def waiting_bridges(self, site_id: int) -> list[RegistryRow]: ...

    def sites_waiting(self) -> list[RegistryRow]: ...

    def insert_bridge(
        self,
        serial: str,
        *,
        token: str,
        model: str | None,
        channels: int,
        site_id: int,
        account_id: int | None,
    ) -> int: ...

    def update_bridge(
        self,
        bridge_id: int,
        *,
        serial: str,
        model: str | None,
        site_id: int,
        account_id: int | None,
    ) -> None: ...

    def set_bridge_token(
        self, bridge_id: int, token: str, previous: str | None, grace_until: float | None
    ) -> None: ...

    def remove_bridge(self, bridge_id: int, at: float) -> None: ...

    def attach_bridge(self, bridge_id: int, account_id: int) -> None:
        """The bridge and its channels report under ``account_id`` (it waited for it)."""
        ...

    def detach_bridge(self, bridge_id: int) -> None:
        """The bridge and its channels report under no account (they wait for one)."""
        ...

    def insert_channels(self, rows: Sequence[tuple[int, int, int | None, int, str]]) -> None:
        """(bridge id, channel, account id, zone, zone type) rows."""
        ...

    def channel(self, bridge_id: int, channel: int) -> RegistryRow: ...

    def channels(self) -> list[RegistryRow]: ...

    def update_channel(
        self,
        bridge_id: int,
        channel: int,
        *,
        zone: int,
        zone_type: str,
        camera: str | None,
        code: str | None,
        enabled: int | None,
    ) -> None: ...

    def detach_channels(self, bridge_id: int) -> None: ...

    def set_channels_account(self, bridge_id: int, account_id: int | None) -> None: ...

    def shift_bridge_zones(self, bridge_id: int, first_zone: int) -> None: ...

    def bridge_zones(self, bridge_id: int) -> list[RegistryRow]: ...

    def delete_bridge_channels(self, bridge_id: int) -> None: ...

    def zone_holders(self, account_id: int) -> list[RegistryRow]: ...

    def zone_holders_of_bridge(self, bridge_id: int) -> list[RegistryRow]: ...


class OutputCursorStore(Protocol):
    def ensure_output(self, name: str, now_us: int) -> int:
        """Create the output's cursor at the journal's end if it has none; return its cursor."""
        ...

    def save_cursor(self, update: CursorUpdate, fence: FencingToken | None = None) -> bool:
        """Write a cursor update on its own (at shutdown, when the journal's writer is gone).
        ``fence``: the hold it is made under, checked as an append's are; False when that lease
        changed hands (nothing written)."""
        ...

    def output_states(self, names: Sequence[str]) -> list[OutputState]: ...

    def backlog(self, cursor: int) -> tuple[int, int | None]:
        """How many signals wait after ``cursor``, and the oldest one's receive time."""
        ...


class LeaseStore(Protocol):
    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take ``name`` for ``ttl`` seconds if it is free, expired or already ours; None if
        another node holds it."""
        ...

    def renew_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Extend our unexpired lease; None if it is not (or no longer) ours."""
        ...

    def release_lease(self, name: str, holder: str) -> bool:
        """Give up our lease at once (clean shutdown); whether we held it."""
        ...

    def leases(self) -> list[Lease]: ...

    def heartbeat(self, node: str, info: Mapping[str, Any]) -> NodeBeat: ...

    def nodes(self) -> list[NodeBeat]: ...


class BridgeStateStore(Protocol):
    def write_bridge_states(self, rows: Sequence[BridgeStateRow]) -> None:
        """Upsert rows on their own (when no journal writer carries them)."""
        ...

    def bridge_states(self) -> list[BridgeStateRow]: ...

    def close(self) -> None: ...

    def arming_since(self, since_us: int) -> list[tuple[str, str, str, int]]:
        """(device, qualifier, code, received_us) of bridge arming signals since ``since_us``,
        in receive order (to replay over a stale state row)."""
        ...


class HistoryStore(Protocol):
    def history(self, query: HistoryQuery) -> list[tuple[int, Signal]]:
        """Matching signals with their journal position, newest first, at most its limit."""
        ...

    def history_after(self, query: HistoryQuery, seq: int, limit: int) -> tuple[int, list[Signal]]:
        """Matching signals committed after ``seq``, oldest first; and the position read to."""
        ...


class UserStore(Protocol):
    def add_user(self, user: User) -> None: ...

    def user(self, name: str) -> User | None: ...

    def users(self) -> list[User]: ...


class ReportStore(Protocol):
    """The read side for audits and reports, each in one consistent snapshot (the SQL per
    backend; the logic in ``receiver/journal_chain.py``, ``usage.py``, ``bridge_state.py``)."""

    def verify_journal(self, since_us: int | None = None) -> Verification:
        """Recompute the journal's hash chain; the first row that does not match, if any."""
        ...

    def usage_rows(self, dealer: str, start_us: int, end_us: int) -> UsageRead | None:
        """The dealer's signals in ``[start_us, end_us)`` per site, account and station, and its
        registered accounts; None for an unknown dealer."""
        ...

    def bridge_report_rows(self, dealer: str | None, site: str | None) -> BridgeReportRead:
        """The registry's bridges with their state, channel zones and open troubles."""
        ...

    def close(self) -> None: ...


class SignalStore(JournalStore, OutputCursorStore, BridgeStateStore, HistoryStore, Protocol):
    """What the signal path of one node asks of its database: the journal, the outputs'
    cursors, bridge state and history (``receiver.store.open_store`` gives one)."""

    def site_dealers(self) -> dict[int, str]:
        """Each site's dealer name, by site id (the notifier's per-dealer targets)."""
        ...

    def close(self) -> None: ...


class Store(
    JournalStore,
    RegistryStore,
    OutputCursorStore,
    LeaseStore,
    BridgeStateStore,
    HistoryStore,
    UserStore,
    Protocol,
):
    """Everything a receiver node asks of its database."""

    def close(self) -> None: ...
