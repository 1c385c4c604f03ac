"""DC-09 intake: the one path from the receiving engine's events to the journal and back.

Rules:
- The engine (``protocols.dc09_engine``) decides every reply; this module only hands it the
  account's policy (``lookup``) and the station's rules, turns accepted frames into Signals
  (``Signal.from_dc09``), stores a whole batch in one ``Journal.append`` and says whether the
  ACKs may go out. TCP and UDP frames take this same path, in the same batches.
- ACK only what the commit holds: ``commit`` returns False when the outcome is unknown, and the
  caller then sends no ACK for that batch (the panel retries; the dedupe key absorbs it).
- Counters are exact; log lines for rejections are rate-limited per connection and reason
  (``RejectionLog``): the first is always logged, repeats are summarized.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import structlog

from protocols import dc09
from protocols.dc09 import Dc09Header
from protocols.dc09_engine import Accepted, AccountPolicy, Dc09Engine, ReceiverRules, Rejected
from protocols.errors import Reply
from protocols.signal import Signal
from receiver.config import Dc09Config
from receiver.journal import Journal, JournalError, to_us
from receiver.logs import log_signal, raw_text
from receiver.metrics import Counters
from receiver.registry_index import RegistryIndex, ResolvedAccount
from receiver.supervisor import Supervisor

_UNKNOWN_ACCOUNT_REPLY = {"accept": Reply.ACK, "duh": Reply.DUH, "nak": Reply.NAK}
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


class RejectionLog:
    """Rejections of one connection (or one UDP socket, per peer), logged without flooding.

    The first rejection for a (peer, reason) is logged with its raw bytes; after that at most
    one line per ``interval`` seconds, carrying ``repeated``: how many were not logged since.
    """

    __slots__ = ("_seen", "interval")

    _MAX_KEYS = 4096

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last logged, unlogged]

    def should_log(self, peer: str, reason: str) -> int | None:
        """None: stay quiet; else the number of rejections not logged before this one."""
        key = (peer, reason)
        now = time.monotonic()
        entry = self._seen.get(key)
        if entry is None:
            if len(self._seen) >= self._MAX_KEYS:
                self._seen.clear()
            self._seen[key] = [now, 0]
            return 0
        if now - entry[0] < self.interval:
            entry[1] += 1
            return None
        repeated = int(entry[1])
        entry[0], entry[1] = now, 0
        return repeated


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

    # -- the engine's view of the registry ------------------------------------------------------

    def engine(self) -> Dc09Engine[ResolvedAccount]:
        """A receiving engine for one connection (or one UDP socket)."""
        return Dc09Engine(self.lookup, self.rules)

    def lookup(self, header: Dc09Header) -> AccountPolicy[ResolvedAccount] | None:
        index = self.registry()
        if index is not self._index:
            self._index = index
            self._policies.clear()
        account = index.resolve(self.station, header.line, header.account)
        if account is None:
            return None
        hit = self._policies.get(id(account))
        if hit is not None and hit[0] is account:
            return hit[1]
        policy = AccountPolicy(account, key=account.key, window=self._window_for(account))
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
        signals = [
            Signal.from_dc09(
                frame,
                event,
                received_at=accepted.received_at,
                peer=peer,
                account=account,
                station=self.station,
            )
            for event in accepted.events
        ]
        keys: list[str | None] = []
        if signals:
            effective = signals[0].effective_account
            prefix = (
                f"{effective}|{header.token}|{header.sequence}|{header.receiver}|"
                f"{header.line}|{frame.data}|"
            )
            keys = [f"{prefix}{index}" for index in range(len(signals))]
        self.counters.inc("frames_ok")
        if account is None:
            self.counters.inc("frames_unknown_account")
            link = None
        else:
            link = account_link(account) if account.supervision is not None else None
        return Staged(signals, keys, link, accepted.reply)

    def rejected(self, event: Rejected, peer: str, rejections: RejectionLog, log: Any) -> None:
        """Count a rejection exactly; log it unless this peer repeats it too often."""
        reason = event.reason
        self.counters.inc(f"frames_{reason}")
        if event.reply is not None:
            self.counters.inc(f"replies_{event.error.reply.value.lower()}")
        repeated = rejections.should_log(peer, reason)
        if repeated is None:
            return
        log.warning(
            "garbage_discarded" if event.framing else "frame_rejected",
            reason=reason,
            error=event.error.message,
            reply=event.error.reply.value if event.reply is not None else Reply.NONE.value,
            raw=raw_text(event.raw),
            **({"repeated": repeated} if repeated else {}),
        )

    async def commit(self, batch: Sequence[Staged], log: Any) -> bool:
        """Store the batch's signals in one append. False: outcome unknown, send no ACK."""
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
                duplicate_ids = {s.id for s in result.duplicates}
                for signal in signals:
                    log_signal(log, signal, duplicate=signal.id in duplicate_ids)
            if self.supervisor is not None:
                for link in links:
                    self.supervisor.seen(link)
        self.counters.inc("replies_ack", len(batch))
        return True
