"""E-mail notifications: ``[[notify]]`` targets hear of automation and supervision troubles.

Rules:
- The notifier reads the journal after its own cursor, as an output does: it sees every
  receiver and supervision signal once committed (from any node writing the store), and a
  restart resumes where the last message left off (at-least-once; never a skipped trouble).
  A new target starts at the journal's end, like a new output.
- What a signal is: a receiver trouble of an output (``output_down`` / ``output_restored``), a
  failover (``failover``: on the alternate address, or back on the primary), a supervised panel
  or bridge lost or back (``panel_lost`` / ``panel_restored`` / ``bridge_lost`` /
  ``bridge_restored``), a refused bridge HELLO (``bridge_refused``). A target's ``events`` (all
  when empty) picks which it wants.
- Whose: a target with ``station`` gets that station's signals and the receiver's own (an output
  down concerns every station it serves); with ``dealer``, only signals of that dealer's sites.
- Batched: the first event waits ``GATHER`` seconds for company, then one message lists all
  that came; the next message to the same target goes at least ``batch_interval`` (60 s) later.
  A storm is one message a minute, its lines capped at ``MAX_LINES`` with a count of the rest.
- An SMTP failure (refused, timed out, rejected) is logged (``notify_failed``) and the same
  lines, with any new ones, are tried again the next window; it never ends the receiver. The
  cursor moves only after the server accepted the message.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage

import attrs
import structlog
import trio

from protocols.signal import Signal, Source
from receiver.config import NotifyConfig
from receiver.journal import UNDER_LEASE, Journal, JournalClosedError, LeaseLostError, to_us
from receiver.metrics import Counters
from receiver.store.faults import STORE_ERRORS, StoreOutage
from receiver.store.interface import CursorUpdate, SignalStore

# Seconds the first event of a quiet spell waits for others before its message goes.
GATHER = 5.0
# Lines listed in one message; the rest are counted.
MAX_LINES = 500
# Signals read per journal query.
READ_BATCH = 1024
SMTP_TIMEOUT = 30.0

# The journal's sources whose signals can be events (``event_of``).
_EVENT_SOURCES = frozenset({Source.RECEIVER, Source.SUPERVISION})

Mailer = Callable[[NotifyConfig, EmailMessage], None]


def cursor_name(target: str) -> str:
    """The ``outputs`` row holding a target's journal cursor."""
    return f"notify:{target}"


def event_of(signal: Signal) -> str | None:
    """Which notification event a journal signal is, or None when it is none."""
    qualifier = signal.cid.qualifier if signal.cid is not None else "E"
    extended = dict(signal.extended)
    if signal.source == Source.RECEIVER:
        trouble = extended.get("trouble")
        if trouble == "output":
            return "output_down" if qualifier == "E" else "output_restored"
        if trouble == "failover":
            return "failover"
        if "bridge_id" in extended:
            return "bridge_refused"
        return None
    if signal.source == Source.SUPERVISION:
        kind = "bridge" if signal.device else "panel"
        return f"{kind}_lost" if qualifier == "E" else f"{kind}_restored"
    return None


def describe(event: str, signal: Signal) -> str:
    """One line of a message: when, what, and whose."""
    when = signal.received_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    extended = dict(signal.extended)
    parts = [when, event]
    if signal.cid is not None:
        parts.append(f"{signal.cid.qualifier}{signal.cid.code}")
    if signal.name:
        parts.append(signal.name)
    if "output" in extended:
        parts.append(f"output {extended['output']}")
    elif signal.device and event.startswith("bridge"):
        parts.append(f"bridge {signal.device}")
    if signal.account and signal.source == Source.SUPERVISION:
        parts.append(f"account {signal.account}")
    if signal.site_name:
        parts.append(f"site {signal.site_name}")
    if signal.station:
        parts.append(f"station {signal.station}")
    if "reason" in extended:
        parts.append(f"reason {extended['reason']}")
    if "error" in extended:
        parts.append(f"error {extended['error']}")
    return " | ".join(parts)


def send_mail(target: NotifyConfig, message: EmailMessage) -> None:
    """Hand one message to the target's SMTP server (blocking: run it in a worker thread)."""
    with smtplib.SMTP(target.smtp_host, target.smtp_port, timeout=SMTP_TIMEOUT) as smtp:
        if target.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if target.username:
            smtp.login(target.username, target.password)
        smtp.send_message(message)


@attrs.define
class Target:
    """One target's batch: lines not yet sent, and up to where the journal was read."""

    config: NotifyConfig
    cursor: int = 0  # saved: every event up to here was sent (or was not for this target)
    read_to: int = 0  # what the pending lines cover
    lines: list[str] = attrs.field(factory=list)
    more: int = 0  # events past MAX_LINES, counted only
    first_at: float | None = None  # trio time the oldest pending event was read
    last_sent: float = -float("inf")
    last_saved: float = -float("inf")
    failures: int = 0

    def idle_cursor_due(self, now: float) -> bool:
        """Nothing pending but the journal moved on: save its cursor, once a window."""
        moved = self.first_at is None and self.read_to > self.cursor
        return moved and now - self.last_saved >= self.config.batch_interval

    def wants(self, event: str, signal: Signal, dealer: str | None) -> bool:
        config = self.config
        if config.events and event not in config.events:
            return False
        if config.station and signal.station not in (None, config.station):
            return False
        return not (config.dealer and dealer != config.dealer)

    def add(self, line: str, now: float) -> None:
        if self.first_at is None:
            self.first_at = now
        if len(self.lines) < MAX_LINES:
            self.lines.append(line)
        else:
            self.more += 1

    def due(self, now: float, gather: float) -> bool:
        if self.first_at is None:
            return False
        return now >= max(self.first_at + gather, self.last_sent + self.config.batch_interval)

    def message(self) -> EmailMessage:
        count = len(self.lines) + self.more
        message = EmailMessage()
        message["From"] = self.config.sender
        message["To"] = ", ".join(self.config.to)
        message["Subject"] = f"receiver: {count} event{'s' if count != 1 else ''}"
        body = [*self.lines]
        if self.more:
            body.append(f"... and {self.more} more (see `receiver history`)")
        message.set_content("\n".join(body) + "\n")
        return message


class Notifier:
    """Every ``[[notify]]`` target, fed from the journal after commit."""

    def __init__(
        self,
        targets: Sequence[NotifyConfig],
        store: SignalStore,
        journal: Journal | None,
        *,
        counters: Counters | None = None,
        mailer: Mailer = send_mail,
        gather: float = GATHER,
        read_interval: float = 1.0,
    ) -> None:
        self.targets = [Target(t) for t in targets]
        self.store = store  # the notifier's own
        self.journal = journal
        self.counters = counters or Counters()
        self.mailer = mailer
        self.gather = gather
        self.read_interval = read_interval
        self.position = 0
        self.opened = trio.Event()  # its cursors are open (at the journal's end, when new)
        self.log = structlog.get_logger("receiver.notify")
        self._store_fault = StoreOutage("notify", "journal_read", counters=counters, log=self.log)

    def _open(self) -> None:
        now = to_us(datetime.now(UTC))
        for target in self.targets:
            name = cursor_name(target.config.name)
            target.cursor = target.read_to = self.store.ensure_output(name, now)
        self.position = min((t.cursor for t in self.targets), default=0)

    def _read(self) -> tuple[list[tuple[int, Signal]], dict[int, str], int, int]:
        """The receiver's and supervision's signals after our position (others cannot be
        events), the sites' dealers when a target asks for one, the position read to and how
        many signals were read."""
        rows = self.store.read_after(self.position, READ_BATCH)
        read_to = rows[-1][0] if rows else self.position
        events = [(seq, s) for seq, s in rows if s.source in _EVENT_SOURCES]
        dealers: dict[int, str] = {}
        if events and any(t.config.dealer for t in self.targets):
            dealers = self.store.site_dealers()
        return events, dealers, read_to, len(rows)

    def _take(
        self, batch: list[tuple[int, Signal]], dealers: dict[int, str], read_to: int = 0
    ) -> None:
        now = trio.current_time()
        for seq, signal in batch:
            event = event_of(signal)
            if event is None:
                continue
            dealer = dealers.get(signal.site_id) if signal.site_id is not None else None
            line: str | None = None
            for target in self.targets:
                if seq > target.cursor and target.wants(event, signal, dealer):
                    line = line or describe(event, signal)
                    target.add(line, now)
        if batch:
            self.position = batch[-1][0]
        self.position = max(self.position, read_to)
        for target in self.targets:
            target.read_to = max(target.read_to, self.position)

    async def _save(self, target: Target) -> None:
        update = CursorUpdate(
            output=cursor_name(target.config.name),
            cursor=target.read_to,
            updated_us=to_us(datetime.now(UTC)),
        )
        try:
            if self.journal is not None:
                await self.journal.append([], cursors=[update])
            elif not await self._save_fenced(update):
                raise LeaseLostError("cursor not saved: the lease changed hands")
        except (JournalClosedError, *STORE_ERRORS) as exc:
            # Not saved: a restart sends these lines again, which at-least-once allows.
            self.log.warning("notify_cursor_not_saved", target=target.config.name, error=str(exc))
            return
        target.cursor = target.read_to

    async def _save_fenced(self, update: CursorUpdate) -> bool:
        """Without a journal, the store saves the cursor itself, fenced as the journal's writes
        are: under a lease (``UNDER_LEASE``) the store refuses it once the lease changed hands,
        and the hold is told (the work under it stops)."""
        hold = UNDER_LEASE.get()
        fence = hold.token if hold is not None else None
        saved = await trio.to_thread.run_sync(self.store.save_cursor, update, fence)
        if not saved and hold is not None:
            hold.refused()
        return saved

    async def _send(self, target: Target) -> None:
        now = trio.current_time()
        target.last_sent = now  # sent or not, the next try is a window later
        count = len(target.lines) + target.more
        try:
            await trio.to_thread.run_sync(
                self.mailer, target.config, target.message(), abandon_on_cancel=True
            )
        except (OSError, smtplib.SMTPException) as exc:
            target.failures += 1
            self.counters.inc("notify_failed")
            self.log.warning(
                "notify_failed",
                target=target.config.name,
                smtp=f"{target.config.smtp_host}:{target.config.smtp_port}",
                error=str(exc) or type(exc).__name__,
                events=count,
                failures=target.failures,
                retry_in=target.config.batch_interval,
            )
            return
        self.counters.inc("notify_sent")
        self.log.info("notify_sent", target=target.config.name, events=count)
        target.lines, target.more, target.first_at, target.failures = [], 0, None, 0
        await self._save(target)

    async def _tick(self) -> bool:
        """Read what is new, send what is due; True when more may be waiting to be read."""
        try:
            batch, dealers, read_to, read = await trio.to_thread.run_sync(self._read)
        except STORE_ERRORS as exc:
            await trio.sleep(self._store_fault.failed(exc))
            return False
        self._store_fault.succeeded()
        self._take(batch, dealers, read_to)
        now = trio.current_time()
        for target in self.targets:
            if target.due(now, self.gather):
                await self._send(target)
            elif target.idle_cursor_due(now):
                await self._save(target)  # nothing for it: move its cursor along
                target.last_saved = now
        return read >= READ_BATCH

    async def _wait(self) -> None:
        with trio.move_on_after(self.read_interval):
            if self.journal is not None:
                await self.journal.wait_committed()
            else:
                await trio.sleep_forever()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.targets:
            self.store.close()
            return
        while True:
            try:
                await trio.to_thread.run_sync(self._open)
                self.opened.set()
                break
            except STORE_ERRORS as exc:
                await trio.sleep(self._store_fault.failed(exc))
        try:
            while True:
                if not await self._tick():
                    await self._wait()
        finally:
            self.store.close()
