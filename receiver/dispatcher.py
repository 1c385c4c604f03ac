"""Where a signal leaves: one cursor per output over the journal.

Rules:
- Each output has its own task and its own cursor (the journal ``seq`` of the last signal it
  delivered and had acknowledged). An output that is down holds up nobody else.
- Delivery is at-least-once and in journal order (so in order per account): a signal is
  retried, with backoff, until the far side acknowledges it; only then does the cursor move.
  Outputs that can pipeline (``deliver_batch``) get up to ``window`` packages per round trip;
  the cursor moves past the ACKed prefix only.
  The package id is the signal id, so the far side can drop a repeat.
- An output whose cost is per exchange rather than per package (the spool: two flushes per
  batch) may ask to ``coalesce``: after a small batch (under ``window // 8``) the cursor waits
  that long (a few ms) before reading again, so steady traffic is handed over in fewer,
  larger batches. An alarm after a quiet spell is never held; one arriving just behind a
  small batch waits at most ``coalesce``. A backlog (full windows) never waits.
- The cursor is saved at most every ``save_interval`` seconds: a crash redelivers at most that
  much, which at-least-once allows; it never skips anything.
- Suppressed signals (a zone type switched off) and absorbed duplicates are never sent.
- A new output starts at the journal's end: adding an output does not replay old alarms.
- Retries: an output that cannot be reached (``UnreachableError``: nothing was sent) is probed
  every ``reconnect_interval`` (1 s, after a short ramp), so an automation that comes back gets
  its backlog within about a second; any other failure (NAK, a timeout mid-exchange) backs off
  from 0.2 s up to ``max_backoff`` (30 s), so a far side that refuses is not hammered. A
  repeated failure is logged once a minute with its count, not once a probe.
- A store that cannot be read or written (a full disk) never ends the dispatcher: the cursor
  stays in memory (deliveries go on; a crash then redelivers, never skips), the save is
  retried with a backoff, and the fault is logged and counted (``receiver.store.faults``).
- Automation failure is an event: an output that cannot deliver for ``trouble_after`` seconds
  (``[delivery]``) gets a receiver trouble journaled (source receiver, E ``trouble_code``,
  zone = the output's number in the configuration, account 0000), which the other outputs
  deliver like any signal; the first delivery after it journals the restore (R). An output
  that connects to its alternate address journals E ``failover_code``, back on its primary R.
  The open/closed state is stored in ``links`` (``output:<name>``, ``output:<name>/failover``)
  in the same transaction, so a restart never opens a trouble twice.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog
import trio

from adapters.output import Output, UndeliverableError, UnreachableError
from protocols import catalog
from protocols.signal import ContactIdView, Flag, Signal, Source, new_signal_id
from receiver.journal import UNDER_LEASE, Journal, JournalClosedError, LeaseLostError, to_us
from receiver.metrics import Counters
from receiver.store.faults import STORE_ERRORS, StoreOutage
from receiver.store.interface import CursorUpdate, SignalStore

# A suppressed signal is never sent (the flag as the plain string a signal's flags hold).
_SUPPRESSED = Flag.SUPPRESSED.value

# The same delivery error is logged again at most this often (with the count of tries).
FAILURE_LOG_INTERVAL = 60.0


def _now_us() -> int:
    return to_us(datetime.now(UTC))


def output_link(name: str) -> str:
    """The link row holding an output's delivery trouble (open or closed)."""
    return f"output:{name}"


def failover_link(name: str) -> str:
    """The link row holding whether an output is on its alternate address."""
    return f"output:{name}/failover"


# The account receiver troubles carry (the receiver's own, as Sur-Gard receivers use).
RECEIVER_ACCOUNT = "0000"


@attrs.frozen
class TroublePolicy:
    """When an output's failure becomes a journaled trouble, and with which codes."""

    trouble_after: float = 60.0
    trouble_code: str = "354"
    failover_code: str = "350"


class OutputCursor:
    """Delivery of the journal to one output."""

    def __init__(
        self,
        output: Output,
        store: SignalStore,
        journal: Journal | None,
        *,
        save_interval: float = 0.25,
        max_backoff: float = 30.0,
        reconnect_interval: float = 1.0,
        read_batch: int = 256,
        window: int = 64,
        coalesce: float = 0.0,
        counters: Counters | None = None,
        policy: TroublePolicy | None = None,
        number: int = 1,
    ) -> None:
        self.output = output
        self.policy = policy or TroublePolicy()
        self.number = number  # the output's place in the configuration: its troubles' zone
        self.trouble_open = False
        self.failover_open = False
        self._failing_since: float | None = None  # first failed try of the current streak
        self._delivered = False  # an ACK since the last failure (evidence it works)
        self._opened = trio.Event()
        self._supervised = getattr(output, "run_heartbeats", None) is not None
        self._unlinked_since: float | None = None
        self.store = store  # this cursor's own (its reads never wait behind another's)
        self.journal = journal
        self.save_interval = save_interval
        self.max_backoff = max_backoff
        self.reconnect_interval = reconnect_interval
        self.read_batch = read_batch
        self.window = window
        self.coalesce = coalesce
        # How the read's thread waits out ``coalesce`` (a test holds it to see what is asked).
        self.pause: Callable[[float], None] = time.sleep
        self.cursor = 0
        self.delivered_unsaved = 0
        self.undeliverable_unsaved = 0
        self._skipped: set[str] = set()  # passed over as undeliverable, not delivered
        self.last_success_us: int | None = None
        self.log = structlog.get_logger("receiver.dispatcher").bind(output=output.name)
        self._store_open = False
        self._saved_cursor = 0
        self._logged_error: str | None = None
        self._logged_at = -float("inf")
        self._failures_unlogged = 0
        self._save_fault, self._read_fault, self._open_fault, self._trouble_fault = (
            StoreOutage("dispatcher", operation, counters=counters, log=self.log)
            for operation in ("cursor_save", "journal_read", "open", "trouble_write")
        )

    def _open(self) -> int:
        cursor = self.store.ensure_output(self.output.name, _now_us())
        self._store_open = True
        links = self.store.links()
        self.trouble_open = links.get(output_link(self.output.name), (0, False))[1]
        self.failover_open = links.get(failover_link(self.output.name), (0, False))[1]
        return cursor

    def _read(self, pause: float = 0.0) -> list[tuple[int, Signal]]:
        """The next signals after the cursor, after ``pause`` seconds (the coalescing wait,
        in the same worker thread as the read: one thread call, not a sleep and a call)."""
        if pause > 0:
            self.pause(pause)
        return self.store.read_after(self.cursor, self.read_batch)

    def _state(self) -> CursorUpdate:
        update = CursorUpdate(
            output=self.output.name,
            cursor=self.cursor,
            delivered=self.delivered_unsaved,
            undeliverable=self.undeliverable_unsaved,
            connected=bool(self.output.connected),
            last_error=self.output.last_error,
            last_success_us=self.last_success_us,
            updated_us=_now_us(),
        )
        self.delivered_unsaved = self.undeliverable_unsaved = 0
        return update

    async def save(self, *, direct: bool = False) -> bool:
        """Save the cursor through the journal's writer (the store's one writer); False when
        the store refused (reported, and retried by the next save).

        ``direct`` writes through our own store instead: at shutdown the journal's writer may
        already be gone.
        """
        update = self._state()
        try:
            if self.journal is not None and not direct:
                try:
                    await self.journal.append([], cursors=[update])
                except JournalClosedError:
                    await self._save_direct(update)  # the receiver is stopping
            else:
                await self._save_direct(update)
        except LeaseLostError:
            return False  # the lease changed hands: the cursor is the new holder's to move
        except STORE_ERRORS as exc:
            # Not saved: keep the counts for the next save; the cursor stays in memory.
            self.delivered_unsaved += update.delivered
            self.undeliverable_unsaved += update.undeliverable
            self._save_fault.failed(exc)
            return False
        self._save_fault.succeeded()
        self._saved_cursor = max(self._saved_cursor, update.cursor)
        return True

    async def _save_direct(self, update: CursorUpdate) -> None:
        """Through our own store, fenced like the journal's writes: a node that lost the
        output's lease (its work stopping) must not move the cursor its successor owns."""
        hold = UNDER_LEASE.get()
        fence = hold.token if hold is not None else None
        if not await trio.to_thread.run_sync(self.store.save_cursor, update, fence):
            if hold is not None:
                hold.refused()  # counted and logged once; the work is stopping already
            raise LeaseLostError(f"cursor save refused: lease {fence} changed hands")

    async def _wait_for_more(self, read_up_to: int) -> None:
        # Woken by our own journal's commits (and other writers' where it watches them); the
        # timeout also catches other writers. A commit that landed while the empty read ran
        # has already fired its wake-up: read again now rather than wait out the timeout
        # (``read_up_to``: the newest seq the journal knew when the read began).
        if self.journal is not None and self.journal.last_seq > read_up_to:
            await trio.lowlevel.checkpoint()
            return
        timeout = self.save_interval
        unsaved = self.delivered_unsaved or self.undeliverable_unsaved
        if self.journal is not None and not unsaved and self.cursor == self._saved_cursor:
            # Nothing to save: a journal that watches the other writers wakes us for their
            # commits within its interval; reading more often would find nothing new.
            timeout = max(timeout, self.journal.others_learnt_within or 0.0)
        with trio.move_on_after(timeout):
            if self.journal is not None:
                await self.journal.wait_committed()
            else:
                await trio.sleep_forever()

    async def _send(self, items: list[tuple[Signal, str]]) -> int:
        """Hand packages to the output; how many leading ones it acknowledged."""
        pipelined = getattr(self.output, "deliver_batch", None)
        if pipelined is not None:
            return int(await pipelined(items))
        signal, package_id = items[0]
        await self.output.deliver(signal, package_id)
        return 1

    async def _deliver(self, items: list[tuple[Signal, str]]) -> int:
        """Deliver a prefix of ``items``, retrying until at least one is ACKed."""
        backoff = 0.2  # after a failed exchange: doubles up to max_backoff
        probe = 0.2  # while the far side cannot be reached: doubles up to reconnect_interval
        while True:
            try:
                acked = await self._send(items)
            except UndeliverableError as exc:
                # Never deliverable here: skip it for this output rather than block the rest.
                self.log.error("signal_undeliverable", signal_id=items[0][1], error=str(exc))
                self.undeliverable_unsaved += 1
                self._skipped.add(items[0][1])
                return 1
            except (OSError, ValueError) as exc:  # DeliveryError is a ConnectionError
                if isinstance(exc, UnreachableError):
                    delay, probe = probe, min(probe * 2, self.reconnect_interval)
                else:
                    delay, backoff = backoff, min(backoff * 2, self.max_backoff)
                    probe = 0.2
                if self._failing_since is None:
                    self._failing_since = trio.current_time()
                self._delivered = False
                self._report_failure(items[0][1], str(exc), delay)
                if self._save_fault.ready():
                    await self.save()  # `receiver outputs` shows the output down, and why
                await trio.sleep(delay)
            else:
                if acked > 0:
                    self._logged_error = None  # the next failure is news again
                    self._failing_since = None
                    self._delivered = True
                    return acked
                await trio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _report_failure(self, signal_id: str, error: str, retry_in: float) -> None:
        """Log a failed delivery: each new error at once, the same error again once a minute
        with how many tries it stands for (a probe a second must not flood the log)."""
        self._failures_unlogged += 1
        now = trio.current_time()
        if error == self._logged_error and now - self._logged_at < FAILURE_LOG_INTERVAL:
            return
        self.log.warning(
            "delivery_failed",
            signal_id=signal_id,
            error=error,
            retry_in=retry_in,
            attempts=self._failures_unlogged,
        )
        self._logged_error, self._logged_at, self._failures_unlogged = error, now, 0

    async def _open_cursor(self) -> bool:
        try:
            self.cursor = self._saved_cursor = await trio.to_thread.run_sync(self._open)
        except STORE_ERRORS as exc:
            self._store_open = False
            self.store.close()
            self._open_fault.failed(exc)
            return False
        self._open_fault.succeeded()
        self._opened.set()
        return True

    # -- automation failure as a signal ----------------------------------------------------

    def _down_since(self) -> float | None:
        """Since when the output cannot deliver (trio time), or None while it can."""
        if self._failing_since is not None:
            return self._failing_since
        if self._supervised and not self.output.connected and self.output.last_error:
            # Its heartbeats fail while no alarm waits: it could not deliver one either.
            if self._unlinked_since is None:
                self._unlinked_since = trio.current_time()
            return self._unlinked_since
        self._unlinked_since = None
        return None

    def _works(self) -> bool:
        """Evidence that the output delivers: an ACK, or a link its heartbeats proved."""
        return self._delivered or (self._supervised and self.output.connected)

    def _trouble_signal(self, code: str, qualifier: str, what: str) -> Signal:
        now = datetime.now(UTC)
        cid = ContactIdView(qualifier, code, "00", f"{min(self.number, 999):03d}")
        name, category = catalog.describe(cid, None)
        extended: tuple[tuple[str, str], ...] = (("trouble", what), ("output", self.output.name))
        if qualifier == "E" and self.output.last_error:
            extended += (("error", self.output.last_error),)
        station = getattr(self.output, "station", None)
        return Signal(
            id=new_signal_id(now),
            received_at=now,
            source=Source.RECEIVER,
            account=RECEIVER_ACCOUNT,
            station=station if isinstance(station, str) else None,
            cid=cid,
            name=name,
            category=category,
            device=self.output.name,
            extended=extended,
        )

    async def _journal_trouble(self, link: str, code: str, what: str, *, trouble: bool) -> bool:
        """Journal one trouble or restore with its link state; False when not stored."""
        assert self.journal is not None
        signal = self._trouble_signal(code, "E" if trouble else "R", what)
        try:
            await self.journal.append(
                [signal], troubles=[(link, to_us(signal.received_at), trouble)]
            )
        except JournalClosedError:
            return False  # the receiver is stopping: still due at the next start
        except STORE_ERRORS as exc:
            self._trouble_fault.failed(exc)
            return False
        self._trouble_fault.succeeded()
        return True

    async def check_troubles(self) -> None:
        """Open or close the output's trouble and failover signals as its state says."""
        now = trio.current_time()
        since = self._down_since()
        link, code = output_link(self.output.name), self.policy.trouble_code
        opening = not self.trouble_open and since is not None
        if opening and since is not None and now - since >= self.policy.trouble_after:
            if await self._journal_trouble(link, code, "output", trouble=True):
                self.trouble_open = True
                self.log.warning(
                    "output_trouble",
                    down_for=round(now - since, 1),
                    error=self.output.last_error,
                    code=code,
                )
        elif self.trouble_open and since is None and self._works():
            await self._restore(link, code)
        on_alternate = getattr(self.output, "on_alternate", None)
        if not isinstance(on_alternate, bool) or not self.output.connected:
            return
        if on_alternate != self.failover_open:
            link, code = failover_link(self.output.name), self.policy.failover_code
            if await self._journal_trouble(link, code, "failover", trouble=on_alternate):
                self.failover_open = on_alternate
                self.log.warning(
                    "output_failover" if on_alternate else "output_back_on_primary",
                    peer=str(getattr(self.output, "peer", None)),
                    code=code,
                )

    async def _restore(self, link: str, code: str) -> None:
        if await self._journal_trouble(link, code, "output", trouble=False):
            self.trouble_open = False
            self.log.info("output_restored", code=code)

    async def watch_troubles(self) -> None:
        """Check the output's state about every second (or trouble_after / 4, if shorter)."""
        if self.journal is None:
            return
        await self._opened.wait()
        interval = min(1.0, self.policy.trouble_after / 4)
        while True:
            await self.check_troubles()
            await trio.sleep(interval)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        opened = await self._open_cursor()
        # Started even when the store cannot be opened yet: the listeners must not wait on it.
        task_status.started()
        try:
            while not opened:
                await self._open_fault.wait()
                opened = await self._open_cursor()
            await self._run()
        finally:
            with trio.CancelScope(shield=True):
                if self._store_open:
                    await self.save(direct=True)
                self.store.close()
                await self.output.aclose()

    async def _run(self) -> None:
        pending: deque[tuple[int, Signal]] = deque()
        last_save = trio.current_time()
        small = max(1, self.window // 8)
        handed_small = False  # the last exchange was a small batch: traffic is trickling in
        while True:
            if trio.current_time() - last_save >= self.save_interval:
                if (
                    self.delivered_unsaved or self.cursor != self._saved_cursor
                ) and self._save_fault.ready():
                    await self.save()
                last_save = trio.current_time()
            if not pending:
                # After a small batch more is probably on its way: let it gather (the read's
                # thread waits first), one exchange for all of it.
                pause = self.coalesce if handed_small else 0.0
                handed_small = False
                read_up_to = self.journal.last_seq if self.journal is not None else 0
                try:
                    batch = await trio.to_thread.run_sync(self._read, pause)
                except STORE_ERRORS as exc:
                    await trio.sleep(self._read_fault.failed(exc))
                    continue
                self._read_fault.succeeded()
                if not batch:
                    await self._wait_for_more(read_up_to)
                    continue
                pending.extend(batch)
            # Up to `window` signals go out in one pipelined exchange (where the output
            # can); the cursor then moves past every signal up to the last one ACKed.
            group = [pending[i] for i in range(min(len(pending), self.window))]
            to_send = [(s, s.id) for _, s in group if _SUPPRESSED not in s.flags]
            acked = await self._deliver(to_send) if to_send else 0
            handed_small = 0 < len(to_send) < small
            delivered = 0
            for seq, signal in group:
                if _SUPPRESSED not in signal.flags:
                    if not acked:
                        break
                    acked -= 1
                    if signal.id in self._skipped:
                        self._skipped.discard(signal.id)
                    else:
                        delivered += 1
                self.cursor = seq
                pending.popleft()
            if delivered:  # one clock read per exchange: they were ACKed together
                self.delivered_unsaved += delivered
                self.last_success_us = _now_us()


def _cursor(
    output: Output,
    store: SignalStore,
    journal: Journal,
    counters: Counters | None,
    **options: Any,
) -> OutputCursor:
    """An output may ask for a larger window (the spool: one flush per that many packages) and
    to coalesce small batches."""
    window = int(getattr(output, "window", 64))
    return OutputCursor(
        output,
        store,
        journal,
        window=window,
        coalesce=float(getattr(output, "coalesce", 0.0)),
        read_batch=max(256, window),
        counters=counters,
        **options,
    )


class Dispatcher:
    """All outputs, each with its own cursor task (and heartbeats, where it has them) and its
    own store object from ``open_store``."""

    def __init__(
        self,
        outputs: list[Output],
        open_store: Callable[[], SignalStore],
        journal: Journal,
        *,
        counters: Counters | None = None,
        policy: TroublePolicy | None = None,
    ) -> None:
        self.cursors = [
            _cursor(o, open_store(), journal, counters, policy=policy, number=number)
            for number, o in enumerate(outputs, start=1)
        ]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            for cursor in self.cursors:
                await nursery.start(cursor.run)
                nursery.start_soon(cursor.watch_troubles)
                heartbeats: Any = getattr(cursor.output, "run_heartbeats", None)
                if heartbeats is not None:
                    nursery.start_soon(heartbeats)
            task_status.started()


def output_status(store: SignalStore, names: list[str]) -> list[dict[str, Any]]:
    """Per output: connected, backlog size, age of the oldest undelivered signal, last error,
    whether its delivery trouble is open and whether it is on its alternate address."""
    now = _now_us()
    links = store.links()
    states = {state.name: state for state in store.output_states(names)}
    rows = []
    for name in names:
        state = states.get(name)
        if state is None:
            backlog, oldest = 0, None
        else:
            backlog, first_us = store.backlog(state.cursor)
            oldest = round((now - first_us) / 1e6, 1) if first_us is not None else None
        rows.append(
            {
                "name": name,
                "connected": state.connected if state else False,
                "backlog": backlog,
                "oldest_age_s": oldest,
                "delivered": state.delivered if state else 0,
                "undeliverable": state.undeliverable if state else 0,
                "cursor": state.cursor if state else None,
                "last_error": state.last_error if state else None,
                "trouble": links.get(output_link(name), (0, False))[1],
                "failover": links.get(failover_link(name), (0, False))[1],
            }
        )
    return rows
