"""Journal retention: signals older than ``[journal] keep_days`` are removed, in batches.

Rules:
- Only a prefix of the journal (in ``seq`` order) is ever removed: the rows from the oldest up
  to the first one that is not old enough. The hash chain then still starts cleanly at the
  anchor left in ``journal_chain`` (the last removed row's seq and hash), in the same
  transaction as the delete.
- Never a signal still waiting for an output: nothing past the lowest cursor in ``outputs``
  (every output the store has ever delivered to; an output removed from the configuration
  keeps holding its backlog until its row is removed, and the plan names it).
- In the service, the coordinator's retention task removes one batch per journal commit,
  through the journal's writer (the store's one writer), so ingest interleaves with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
import trio

from receiver.journal import Journal, JournalError, to_us
from receiver.store.interface import JournalStore, JournalWrite, PrunePlan

__all__ = ["BATCH", "PrunePlan", "Retention", "prune"]

BATCH = 1000
# A round removes at most this many batches, then waits for the next interval.
MAX_BATCHES_PER_ROUND = 1000


def prune(store: JournalStore, before_us: int, *, dry_run: bool = False) -> list[PrunePlan]:
    """Remove (or with ``dry_run`` only plan) everything prunable before ``before_us``; the
    batches, each in its own transaction (the CLI's path; the service uses :class:`Retention`).
    A dry run plans every batch over the journal as it is now."""
    plans: list[PrunePlan] = []
    after = 0
    while True:
        plan = store.prune_plan(before_us, BATCH, after_seq=after if dry_run else 0)
        if plan.count or plan.held_by:
            plans.append(plan)
        if not plan.count or plan.through is None:
            return plans
        if dry_run:
            after = plan.through
            continue
        store.append([JournalWrite(prune_through=plan.through)])


class Retention:
    """The coordinator's periodic task removing signals older than ``keep_days``."""

    def __init__(
        self, store: JournalStore, journal: Journal, keep_days: int, *, interval: float = 3600.0
    ) -> None:
        self.store = store  # its own: plans are read here, batches removed by the journal
        self.journal = journal
        self.keep = timedelta(days=keep_days)
        self.interval = interval
        self.log = structlog.get_logger("receiver.retention")

    async def run(self) -> None:
        try:
            while True:
                await self.round()
                await trio.sleep(self.interval)
        finally:
            self.store.close()

    async def round(self) -> int:
        """Remove what is due, batch by batch; how many signals went."""
        before_us = to_us(datetime.now(UTC) - self.keep)
        removed = 0
        for _ in range(MAX_BATCHES_PER_ROUND):
            plan = await trio.to_thread.run_sync(self.store.prune_plan, before_us, BATCH)
            if not plan.count or plan.through is None:
                break
            try:
                await self.journal.append([], prune_through=plan.through)
            except JournalError as exc:
                self.log.warning("journal_prune_failed", error=str(exc))
                break
            removed += plan.count
        if removed:
            self.log.info("journal_pruned", removed=removed, before_us=before_us)
        return removed
