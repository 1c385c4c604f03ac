"""What the receiver knows about each video bridge: arming state, firmware, troubles, status.

Rules:
- The journal is the truth. Last seen and the offline trouble are the ``links`` row
  ``bridge:<serial>``; per-zone troubles (camera lost, tamper, power, privacy) are ``links``
  rows ``bridge:<serial>/<what>[/<channel>]`` with their open flag. Both are written by the
  journal in the same transaction as the signals that change them.
- Arming state, firmware and model go to ``bridge_state`` through ``BridgeStateStore``: updates
  are applied in memory first (the listener decides suppression from them), then written by one
  writer task, coalesced, one worker-thread call for many updates; never a thread call per frame.
  A caller that must not ACK before the row is on disk waits with ``wait_written``.
- A crash between a journal commit and the state write cannot lose an arming change: on start
  the store replays arming signals (R401, E401, R441, E441) journaled after its last write.
- ``bridge_report`` is what ``receiver report bridges`` prints; it reads only the store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs
import structlog
import trio

from protocols.bridge import ArmState
from receiver.journal import Journal, from_us, to_us
from receiver.metrics import Counters
from receiver.registry.backends import RegistryConnection, bridge_report_sql_for
from receiver.store.faults import StoreOutage
from receiver.store.interface import ArmName, BridgeStateRow
from receiver.store.interface import BridgeStateStore as StateTable

ARM_NAMES: Final[Mapping[ArmState, ArmName]] = {
    ArmState.ARMED: "armed",
    ArmState.DISARMED: "disarmed",
    ArmState.PARTIAL: "partial",
}
_ARM_BY_NAME: Final = {name: state for state, name in ARM_NAMES.items()}
# Contact ID arming signals (qualifier, code) and the state they leave the bridge in.
ARMING_SIGNALS: Final[Mapping[tuple[str, str], ArmState]] = {
    ("R", "401"): ArmState.ARMED,
    ("E", "401"): ArmState.DISARMED,
    ("R", "441"): ArmState.PARTIAL,
    ("E", "441"): ArmState.DISARMED,
}
# How far before the last state write a journaled arming signal may still be missing from the
# table (it was received before that write but committed after it).
_REPLAY_MARGIN_US: Final = 300 * 1_000_000


def bridge_link(serial: str) -> str:
    """The supervised link of a bridge (last seen, offline trouble)."""
    return f"bridge:{serial}"


def trouble_link(serial: str, what: str, channel: int | None = None) -> str:
    """The link row holding one of a bridge's open/closed troubles."""
    base = f"bridge:{serial}/{what}"
    return base if channel is None else f"{base}/{channel}"


@attrs.define
class BridgeStatus:
    """One bridge as the listener sees it now (mutable; lives in memory)."""

    serial: str
    model: str | None = None
    channels: int | None = None
    firmware: str | None = None
    armed: ArmState | None = None  # None: never heard; the listener then treats it as armed
    armed_us: int | None = None
    peer: str | None = None
    connected_us: int | None = None
    # Channels whose last alarm was suppressed: their restore is suppressed too.
    suppressed_alarms: set[int] = attrs.field(factory=set)

    def row(self, now_us: int) -> BridgeStateRow:
        return BridgeStateRow(
            serial=self.serial,
            model=self.model,
            channels=self.channels,
            firmware=self.firmware,
            armed=ARM_NAMES[self.armed] if self.armed is not None else None,
            armed_us=self.armed_us,
            peer=self.peer,
            connected_us=self.connected_us,
            updated_us=now_us,
        )


def load_states(store: StateTable) -> dict[str, BridgeStatus]:
    """The stored states, with arming signals the table may have missed replayed over them."""
    states: dict[str, BridgeStatus] = {}
    last_write = 0
    for row in store.bridge_states():
        states[row.serial] = BridgeStatus(
            serial=row.serial,
            model=row.model,
            channels=row.channels,
            firmware=row.firmware,
            armed=_ARM_BY_NAME.get(row.armed) if row.armed else None,
            armed_us=row.armed_us,
            peer=row.peer,
            connected_us=row.connected_us,
        )
        last_write = max(last_write, row.updated_us)
    since = max(last_write - _REPLAY_MARGIN_US, 0) if states else 0
    for device, qualifier, code, received in store.arming_since(since):
        state = ARMING_SIGNALS.get((qualifier, code))
        if state is None:
            continue
        status = states.setdefault(device, BridgeStatus(serial=device))
        if status.armed_us is None or received > status.armed_us:
            status.armed, status.armed_us = state, received
    return states


class BridgeStateStore:
    """In-memory bridge states, written to ``bridge_state`` by one coalescing writer task."""

    def __init__(
        self,
        store: StateTable,
        journal: Journal | None = None,
        *,
        counters: Counters | None = None,
    ) -> None:
        self.store = store  # its own object: reads at start, direct writes at shutdown
        # With a journal, states are written in its transactions (the store's one writer), so
        # this writer never waits behind the journal's commits for the store's write lock.
        self.journal = journal
        self.states: dict[str, BridgeStatus] = {}
        self._opened = False
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._flushed = trio.Event()
        self._generation = 0  # bumped by every change
        self._written = 0  # the generation the table holds
        self._failed = 0  # the generation whose write failed last (waiters give up)
        self.log = structlog.get_logger("receiver.bridge_state")
        self._fault = StoreOutage("bridge_state", "state_write", counters=counters, log=self.log)

    async def open(self) -> None:
        """Load the states (before the listener takes connections)."""
        self.states = await trio.to_thread.run_sync(load_states, self.store)
        self._opened = True

    def get(self, serial: str) -> BridgeStatus:
        status = self.states.get(serial)
        if status is None:
            status = self.states[serial] = BridgeStatus(serial=serial)
        return status

    def update(self, serial: str, **changes: Any) -> int | None:
        """Apply ``changes`` in memory; the ticket to wait for, or None when nothing changed."""
        status = self.get(serial)
        changed = False
        for name, value in changes.items():
            if getattr(status, name) != value:
                setattr(status, name, value)
                changed = True
        if not changed:
            return None
        self._generation += 1
        self._dirty.add(serial)
        self._wake.set()
        return self._generation

    async def wait_written(self, ticket: int) -> bool:
        """Wait until the change with ``ticket`` is on disk; False when its write failed."""
        while self._written < ticket:
            if self._failed >= ticket:
                return False
            await self._flushed.wait()
        return True

    async def flush(self, *, direct: bool = False) -> None:
        """Write every dirty state now (through the journal, or one worker-thread call)."""
        if not self._dirty:
            return
        generation = self._generation
        now_us = to_us(datetime.now(UTC))
        serials = sorted(self._dirty)
        rows = [self.states[s].row(now_us) for s in serials]
        self._dirty.clear()
        try:
            if self.journal is not None and not direct:
                await self.journal.append([], bridge_states=rows)
            else:
                await trio.to_thread.run_sync(self.store.write_bridge_states, rows)
        except Exception as exc:  # keep the changes dirty; waiters must not ACK
            self._dirty.update(serials)
            self._failed = generation
            self._fault.failed(exc)
        else:
            self._fault.succeeded()
            self._written = max(self._written, generation)
        self._flushed.set()
        self._flushed = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop; on cancellation it writes what is pending (shielded, bounded)."""
        if not self._opened:
            await self.open()
        task_status.started()
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                failed_before = self._failed
                await self.flush()
                if self._failed != failed_before:
                    await self._fault.wait()  # a failing disk: retry, but do not spin
                    self._wake.set()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + 5.0
                await self.flush(direct=True)
            self.store.close()


# -- the bridge status report ----------------------------------------------------------------

REPORT_COLUMNS: Final = (
    "serial",
    "site",
    "dealer",
    "account",
    "model",
    "channels",
    "firmware",
    "status",
    "last_seen",
    "armed",
    "site_state",
    "troubles",
)


def site_state(states: Iterable[str | None]) -> str:
    """A site's arming state from its bridges': armed, disarmed, partially armed or unknown."""
    known = [s for s in states if s is not None]
    if not known:
        return "unknown"
    if all(s == "armed" for s in known):
        return "armed"
    if all(s == "disarmed" for s in known):
        return "disarmed"
    return "partially armed"


def _trouble_name(link: str, zones: Mapping[tuple[str, int], int]) -> tuple[str, str]:
    """(serial, a readable trouble) for a ``links`` row of a bridge."""
    serial, _, rest = link.removeprefix("bridge:").partition("/")
    if not rest:
        return serial, "offline"
    what, _, channel = rest.partition("/")
    if not channel:
        return serial, what
    number = int(channel)
    if number == 0:
        return serial, f"{what}:bridge"
    return serial, f"{what}:zone {zones.get((serial, number), number):03d}"


def bridge_report(
    conn: RegistryConnection,
    *,
    dealer: str | None = None,
    site: str | None = None,
    offline_after: float,
    now: datetime,
) -> list[dict[str, Any]]:
    """One row per bridge: site, model, firmware, online/offline, armed, site state, troubles.

    A bridge is online when it has been seen within ``offline_after`` seconds and no offline
    trouble is open; ``never`` when it never connected. Raises ``NotFoundError`` for an unknown
    dealer or site.
    """
    report_sql = bridge_report_sql_for(conn)  # SQLite's or PostgreSQL's
    read = report_sql.read(conn, dealer=dealer, site=site)
    return bridge_report_rows(read, offline_after=offline_after, now=now)


# The report's rows, each bridge channel's zone, and the open bridge trouble links, as every
# backend reads them (receiver/store/bridge_report_sql.py, postgres/bridge_report_sql.py).
BridgeReportRead = tuple[Sequence[Any], Mapping[tuple[str, int], int], Sequence[str]]


def bridge_report_rows(
    read: BridgeReportRead, *, offline_after: float, now: datetime
) -> list[dict[str, Any]]:
    """``bridge_report`` over rows a store read (SQLite or PostgreSQL)."""
    rows, zones, open_links = read
    troubles: dict[str, list[str]] = {}
    for link in open_links:
        serial, name = _trouble_name(link, zones)
        troubles.setdefault(serial, []).append(name)
    by_site: dict[int, list[str | None]] = {}
    for row in rows:
        by_site.setdefault(row["site_id"], []).append(row["armed"])
    now_us = to_us(now)
    limit_us = offline_after * 1_000_000 if math.isfinite(offline_after) else math.inf
    report = []
    for row in rows:
        last_seen = row["last_seen_us"]
        if last_seen is None:
            status = "never"
        elif row["trouble_open"] or now_us - int(last_seen) > limit_us:
            status = "offline"
        else:
            status = "online"
        report.append(
            {
                "serial": row["serial"],
                "site": row["site"],
                "dealer": row["dealer"],
                "account": row["account"],
                "model": row["reported_model"] or row["model"],
                "channels": row["reported_channels"] or row["channels"],
                "firmware": row["firmware"],
                "status": status,
                "last_seen": from_us(int(last_seen)).isoformat(timespec="seconds")
                if last_seen is not None
                else None,
                "armed": row["armed"],
                "site_state": site_state(by_site[row["site_id"]]),
                "troubles": troubles.get(row["serial"], []),
            }
        )
    return report
