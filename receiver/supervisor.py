"""Link supervision: a silent panel or bridge becomes a trouble signal.

Rules:
- Every supervised link has a deadline: its interval times the grace factor after the last
  traffic. Any traffic (NULL polls included) pushes the deadline out.
- A missed deadline writes exactly one trouble signal into the journal; the next traffic on the
  link writes its restore. The open/closed state is stored with the link, so it survives a
  restart.
- On start every link gets a full fresh deadline (no flood of false troubles because the
  receiver itself was down); a trouble that was open stays open until traffic restores it.
- Deadlines use trio's clock, so tests run a 90-second interval under the autojump clock.
- A trouble or restore the journal cannot commit (a full disk) stays due: it is retried with a
  backoff (``receiver.store.faults``) until it is stored; the supervisor never stops.
- With several ingest workers the supervisor runs once, in the coordinator, and learns of
  traffic from the store (``LinkActivity`` polls the links' last-seen times the workers commit);
  in one process the intake tells it directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

import attrs
import structlog
import trio

from protocols.catalog import cid_entry
from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.journal import AppendResult, to_us
from receiver.metrics import Counters
from receiver.store.faults import STORE_ERRORS, StoreOutage
from receiver.store.interface import JournalStore


class SignalSink(Protocol):
    async def append(
        self,
        signals: list[Signal],
        *,
        troubles: list[tuple[str, int, bool]],
    ) -> AppendResult: ...


@attrs.define
class Link:
    """One supervised link and what its trouble signal says."""

    interval: float
    deadline: float
    subject: Mapping[str, Any]  # Signal fields naming the account/bridge (account, account_id…)
    code: str = "356"
    trouble_open: bool = False
    restore_due: bool = False


def _now() -> datetime:
    return datetime.now(UTC)


class Supervisor:
    def __init__(
        self,
        sink: SignalSink,
        *,
        grace: float = 1.5,
        trouble_code: str = "356",
        wall_clock: Callable[[], datetime] = _now,
        counters: Counters | None = None,
    ) -> None:
        self.sink = sink
        self.grace = grace
        self.trouble_code = trouble_code
        self.wall_clock = wall_clock
        self.links: dict[str, Link] = {}
        self._wakeup = trio.Event()
        self.log = structlog.get_logger("receiver.supervisor")
        self._fault = StoreOutage("supervisor", "trouble_write", counters=counters, log=self.log)

    def watch(
        self,
        link: str,
        interval: float,
        subject: Mapping[str, Any],
        *,
        trouble_open: bool = False,
        code: str | None = None,
    ) -> None:
        """Start (or update) supervising ``link``; a new link gets a full fresh deadline."""
        existing = self.links.get(link)
        if existing is not None:
            if existing.interval != interval:
                existing.interval = interval
                existing.deadline = trio.current_time() + interval * self.grace
            existing.subject = subject
            return
        self.links[link] = Link(
            interval=interval,
            deadline=trio.current_time() + interval * self.grace,
            subject=subject,
            code=code or self.trouble_code,
            trouble_open=trouble_open,
        )
        self._wakeup.set()

    def unwatch(self, link: str) -> None:
        self.links.pop(link, None)

    def seen(self, link: str) -> None:
        """Traffic arrived on ``link`` (after its commit). Cheap: the hot path calls it."""
        state = self.links.get(link)
        if state is None:
            return
        state.deadline = trio.current_time() + state.interval * self.grace
        if state.trouble_open and not state.restore_due:
            state.restore_due = True
            self._wakeup.set()

    def _signal(self, link: Link, qualifier: str) -> Signal:
        now = self.wall_clock()
        entry = cid_entry(link.code)
        return Signal(
            id=new_signal_id(now),
            received_at=now,
            source=Source.SUPERVISION,
            cid=ContactIdView(qualifier, link.code, "00", "000"),
            name=entry.name if entry is not None else "Loss of supervision",
            category=str(entry.category) if entry is not None else "trouble",
            **link.subject,
        )

    async def _write(self, key: str, link: Link, *, trouble: bool) -> None:
        signal = self._signal(link, "E" if trouble else "R")
        await self.sink.append([signal], troubles=[(key, to_us(signal.received_at), trouble)])

    async def _write_due(self) -> None:
        """Write every due trouble and restore; stops at the first the journal refuses."""
        now = trio.current_time()
        for key, link in list(self.links.items()):
            if link.restore_due:
                await self._write(key, link, trouble=False)
                link.trouble_open = link.restore_due = False
            elif not link.trouble_open and link.deadline <= now:
                await self._write(key, link, trouble=True)
                link.trouble_open = True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            try:
                await self._write_due()
            except STORE_ERRORS as exc:
                # Still due (state changes only after a commit): try again after the backoff.
                await trio.sleep(self._fault.failed(exc))
                continue
            self._fault.succeeded()
            pending = [
                link.deadline
                for link in self.links.values()
                if not link.trouble_open and not link.restore_due
            ]
            next_deadline = min(pending, default=math.inf)
            self._wakeup = trio.Event()
            with trio.move_on_at(next_deadline):
                await self._wakeup.wait()


# How far back each poll looks: a worker stamps a link before its commit lands, and commits
# from several workers land out of order; the per-link times make the overlap harmless.
_ACTIVITY_OVERLAP_US = 30_000_000


class LinkActivity:
    """The coordinator's view of link traffic: the links table, polled.

    It is also the supervisor's sink (troubles go through it to the journal), so a trouble row
    written for a link that never reported is not mistaken for traffic on it."""

    def __init__(
        self,
        supervisor: Supervisor,
        sink: SignalSink,
        stored: Mapping[str, tuple[int, bool]],
        *,
        on_new_link: Callable[[str, int], None] = lambda link, seen_us: None,
    ) -> None:
        self.supervisor = supervisor
        self.sink = sink
        self.on_new_link = on_new_link
        self.last_seen: dict[str, int] = {link: seen for link, (seen, _) in stored.items()}
        self._newest = max(self.last_seen.values(), default=0)

    async def append(
        self, signals: list[Signal], *, troubles: list[tuple[str, int, bool]]
    ) -> AppendResult:
        for link, seen_us, _ in troubles:
            self.last_seen.setdefault(link, seen_us)
        return await self.sink.append(signals, troubles=troubles)

    def notice(self, rows: list[tuple[str, int]]) -> None:
        """Tell the supervisor of every link whose last-seen time moved."""
        for link, seen_us in rows:
            known = self.last_seen.get(link)
            if known is not None and seen_us <= known:
                continue
            self.last_seen[link] = seen_us
            self._newest = max(self._newest, seen_us)
            if known is None:
                self.on_new_link(link, seen_us)
            self.supervisor.seen(link)

    async def run(self, store: JournalStore, interval: float = 1.0) -> None:
        """Poll ``store`` (a store object of the coordinator's own) every ``interval`` seconds."""
        try:
            while True:
                since = self._newest - _ACTIVITY_OVERLAP_US
                rows = await trio.to_thread.run_sync(store.links_seen_since, since)
                self.notice(rows)
                await trio.sleep(interval)
        finally:
            store.close()
