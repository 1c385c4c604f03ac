"""DC-09 intake: the one path from the receiving engine's events to the journal and back.

Rules:
- The engine (``protocols.dc09_engine``) decides every reply; this module only hands it the
  account's policy (``lookup``) and the station's rules, turns accepted frames into Signals
  (``Signal.from_dc09``), stores a whole batch in one ``Journal.append`` and says whether the
  ACKs may go out. TCP and UDP frames take this same path, in the same batches.
- ACK only what the commit holds: ``commit`` returns False when the outcome is unknown, and the
  caller then sends no ACK for that batch (the panel retries; the dedupe key absorbs it).
- With ``log_signals``, one ``signals`` line per committed batch, written after the batch's
  replies (``log_committed``): the log keeps every signal and costs the ACK nothing.
- Counters are exact; log lines for rejections are rate-limited per connection (per UDP
  source address) and reason through ``receiver.logs.RejectionLog``: the first few in each
  minute in full, the rest in one ``rejections_suppressed`` count line.
- A bug while judging a frame (``Crashed``) costs that frame only: logged ``frame_crashed``
  with its raw bytes and the exception type, counted ``frames_internal_error``, answered DUH
  when its header reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog
import trio

from protocols import dc09
from protocols.dc09 import Dc09Header
from protocols.dc09_engine import (
    Accepted,
    AccountPolicy,
    Crashed,
    Dc09Engine,
    ReceiverRules,
    Rejected,
)
from protocols.errors import Reply
from protocols.signal import Signal
from receiver.config import Dc09Config
from receiver.journal import Journal, JournalError, to_us
from receiver.logs import RejectionLog, crash_site, log_signals, raw_text
from receiver.metrics import Counters
from receiver.registry_index import RegistryIndex, ResolvedAccount
from receiver.supervisor import Supervisor

_UNKNOWN_ACCOUNT_REPLY = {"accept": Reply.ACK, "duh": Reply.DUH, "nak": Reply.NAK}
_LOOKUPS_MAX = 65_536  # (line, account) answers kept per registry index; cleared when full
_BAD_CRC_REPLY = {"none": Reply.NONE, "nak": Reply.NAK}


def account_link(account: ResolvedAccount) -> str:
    return f"account:{account.account_id}"


@attrs.define(slots=True, eq=False)
class Staged:
    """One accepted frame, ready to store: its signals and dedupe keys, and its ACK."""

    signals: list[Signal]
    keys: list[str | None]
    link: str | None
    reply: bytes


class Dc09Intake:
    """Account lookup for the engine, Signals for the journal, one commit per batch."""

    def __init__(
        self,
        config: Dc09Config,
        *,
        journal: Journal,
        registry: Callable[[], RegistryIndex],
        supervisor: Supervisor | None = None,
        counters: Counters | None = None,
        log_signals: bool = True,
    ) -> None:
        self.config = config
        self.journal = journal
        self.registry = registry
        self.supervisor = supervisor
        self.counters = counters or Counters()
        self.log_signals = log_signals
        self.station = config.station or None
        self.rules = ReceiverRules(
            window=dc09.TimestampWindow(
                past=config.window_past,
                future=config.window_future,
                policy=config.window_policy,  # type: ignore[arg-type]
                check_plain=config.check_plain_timestamps,
            ),
            bad_crc_reply=_BAD_CRC_REPLY[config.bad_crc_reply],
            unknown_account=_UNKNOWN_ACCOUNT_REPLY[config.unknown_account],
            ack_pipe=config.ack_pipe,
            max_frame=config.max_frame_bytes,
        )
        self.log = structlog.get_logger("receiver.dc09")
        self._index: RegistryIndex | None = None
        # Policies built once per registry account (by identity), rebuilt when the index is.
        self._policies: dict[int, tuple[ResolvedAccount, AccountPolicy[ResolvedAccount]]] = {}
        # The engine's answers by (line, account) as received, for the same index: a panel
        # sends frame after frame under one address (None cached too: an unknown account).
        self._looked_up: dict[tuple[str | None, str], AccountPolicy[ResolvedAccount] | None] = {}
        self._unlogged: tuple[Any, list[Signal], Sequence[Signal]] | None = None

    # -- the engine's view of the registry ------------------------------------------------------

    def engine(self) -> Dc09Engine[ResolvedAccount]:
        """A receiving engine for one connection (or one UDP socket)."""
        return Dc09Engine(self.lookup, self.rules)

    def lookup(self, header: Dc09Header) -> AccountPolicy[ResolvedAccount] | None:
        index = self.registry()
        if index is not self._index:
            self._index = index
            self._policies.clear()
            self._looked_up.clear()
        key = (header.line, header.account)
        try:
            return self._looked_up[key]
        except KeyError:
            pass
        policy = self._resolve(index, header)
        if len(self._looked_up) >= _LOOKUPS_MAX:
            self._looked_up.clear()
        self._looked_up[key] = policy
        return policy

    def _resolve(
        self, index: RegistryIndex, header: Dc09Header
    ) -> AccountPolicy[ResolvedAccount] | None:
        account = index.resolve(self.station, header.line, header.account)
        if account is None:
            return None
        hit = self._policies.get(id(account))
        if hit is not None and hit[0] is account:
            return hit[1]
        policy = AccountPolicy(
            account,
            key=account.key,
            window=self._window_for(account),
            previous_key=account.previous_key,
            grace_until=account.key_grace_until,
        )
        self._policies[id(account)] = (account, policy)
        return policy

    def _window_for(self, account: ResolvedAccount) -> dc09.TimestampWindow | None:
        if (
            account.window_past is None
            and account.window_future is None
            and account.window_policy is None
        ):
            return None
        window = self.rules.window
        return attrs.evolve(
            window,
            past=account.window_past if account.window_past is not None else window.past,
            future=account.window_future if account.window_future is not None else window.future,
            policy=account.window_policy or window.policy,  # type: ignore[arg-type]
        )

    # -- events ---------------------------------------------------------------------------------

    def stage(self, accepted: Accepted[ResolvedAccount], peer: str) -> Staged:
        """An accepted frame's signals, dedupe keys and supervision link."""
        policy = accepted.account
        account = policy.record if policy is not None else None
        frame = accepted.frame
        header = frame.header
        events = accepted.events
        counts = self.counters.values  # the hot path's counts, without a call each
        counts["frames_ok"] += 1
        signals: list[Signal]
        keys: list[str | None]
        if len(events) == 1:
            # Nearly every frame: one event, one signal, one key.
            signal = Signal.from_dc09(
                frame,
                events[0],
                received_at=accepted.received_at,
                peer=peer,
                account=account,
                station=self.station,
            )
            signals = [signal]
            keys = [
                f"{signal.effective_account}|{header.token}|{header.sequence}|"
                f"{header.receiver}|{header.line}|{frame.data}|0"
            ]
        elif events:
            signals = [
                Signal.from_dc09(
                    frame,
                    event,
                    received_at=accepted.received_at,
                    peer=peer,
                    account=account,
                    station=self.station,
                )
                for event in events
            ]
            prefix = (
                f"{signals[0].effective_account}|{header.token}|{header.sequence}|"
                f"{header.receiver}|{header.line}|{frame.data}|"
            )
            keys = [f"{prefix}{index}" for index in range(len(signals))]
        else:
            # NULL, or SIA-DCS with an empty data block: a link test, ACKed, nothing stored.
            signals, keys = [], []
            counts["frames_link_test"] += 1
        if account is None:
            counts["frames_unknown_account"] += 1
            link = None
        else:
            link = account_link(account) if account.supervision is not None else None
        return Staged(signals, keys, link, accepted.reply)

    def rejected(self, event: Rejected, rejections: RejectionLog) -> None:
        """Count a rejection exactly; log it (rate-limited by ``rejections``)."""
        reason = event.reason
        self.counters.inc(f"frames_{reason}")
        if event.reply is not None:
            self.counters.inc(f"replies_{event.error.reply.value.lower()}")
        rejections.warning(
            "garbage_discarded" if event.framing else "frame_rejected",
            reason=reason,
            error=event.error.message,
            reply=event.error.reply.value if event.reply is not None else Reply.NONE.value,
            raw=raw_text(event.raw),
        )

    def crashed(self, event: Crashed, rejections: RejectionLog) -> None:
        """A frame that hit a bug: count it, log it with its raw bytes (rate-limited)."""
        exc = event.exception
        self.counters.inc("frames_internal_error")
        if event.reply is not None:
            self.counters.inc("replies_duh")
        rejections.error(
            "frame_crashed",
            reason="internal_error",
            error_type=type(exc).__name__,
            error=str(exc),
            where=crash_site(exc),
            reply=Reply.DUH.value if event.reply is not None else Reply.NONE.value,
            raw=raw_text(event.raw),
        )

    def log_committed(self) -> None:
        """The ``signals`` line of the last committed batch (``log_signals``), once: the loop
        calls it after writing the batch's replies (the next commit writes it otherwise)."""
        if self._unlogged is not None:
            log, signals, duplicates = self._unlogged
            self._unlogged = None
            log_signals(log, signals, duplicates)

    async def commit(self, batch: Sequence[Staged], log: Any) -> bool:
        """Store the batch's signals in one append. False: outcome unknown, send no ACK."""
        started = trio.current_time()
        signals = [s for p in batch for s in p.signals]
        links = {p.link for p in batch if p.link is not None}
        if signals or links:
            keys = [k for p in batch for k in p.keys]
            now_us = to_us(datetime.now(UTC))
            try:
                result = await self.journal.append(
                    signals, keys=keys, links=[(link, now_us) for link in links]
                )
            except JournalError as exc:
                self.counters.inc("frames_not_committed", len(batch))
                log.error("journal_failed", error=str(exc), frames=len(batch))
                return False
            if result.duplicates:
                self.counters.inc("frames_duplicate", len(result.duplicates))
            if self.log_signals:
                # Written by log_committed once the batch's ACKs are out: the log line keeps
                # every signal's fields and stays off the path to the ACK.
                self.log_committed()
                self._unlogged = (log, signals, result.duplicates)
            if self.supervisor is not None:
                for link in links:
                    self.supervisor.seen(link)
        self.counters.inc("replies_ack", len(batch))
        # Accepted frame to ACK ready (the commit): for /metrics.
        self.counters.observe("ack_seconds", trio.current_time() - started, len(batch))
        return True
