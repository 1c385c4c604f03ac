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

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import attrs
import structlog
import trio

from receiver.journal import Journal, JournalError, to_us
from receiver.journal_chain import NODE
from receiver.store.sqlite import connect

BATCH = 1000
# A round removes at most this many batches, then waits for the next interval.
MAX_BATCHES_PER_ROUND = 1000

SET_ANCHOR = (
    "INSERT INTO journal_chain (node, anchor_seq, anchor_hash) "
    "SELECT node, seq, chain_hash FROM signals WHERE seq = ? AND true "
    "ON CONFLICT (node) DO UPDATE SET anchor_seq = excluded.anchor_seq, "
    "anchor_hash = excluded.anchor_hash"
)
DELETE_THROUGH = "DELETE FROM signals WHERE seq <= ? AND node = ?"


@attrs.frozen
class PrunePlan:
    """What one batch would remove: ``count`` rows, seq ``first``..``through``."""

    count: int
    first: int | None
    through: int | None
    oldest_us: int | None
    newest_us: int | None
    held_by: str | None  # the output whose cursor stopped the batch short, if one did


def plan_batch(
    conn: sqlite3.Connection, before_us: int, limit: int = BATCH, *, after_seq: int = 0
) -> PrunePlan:
    """The next batch: the oldest rows (after ``after_seq``) received before ``before_us``, up
    to every output's cursor."""
    held = conn.execute("SELECT name, cursor FROM outputs ORDER BY cursor, name LIMIT 1").fetchone()
    rows = conn.execute(
        "SELECT seq, received_us FROM signals WHERE node = ? AND seq > ? ORDER BY seq LIMIT ?",
        (NODE, after_seq, limit),
    ).fetchall()
    taken: list[tuple[int, int]] = []
    held_by = None
    for seq, received_us in rows:
        if received_us >= before_us:
            break
        if held is not None and seq > int(held[1]):
            held_by = str(held[0])
            break
        taken.append((int(seq), int(received_us)))
    if not taken:
        return PrunePlan(0, None, None, None, None, held_by)
    return PrunePlan(
        len(taken),
        taken[0][0],
        taken[-1][0],
        min(r for _, r in taken),
        max(r for _, r in taken),
        held_by,
    )


def batch_statements(plan: PrunePlan) -> list[tuple[str, tuple[int | str, ...]]]:
    assert plan.through is not None
    return [(SET_ANCHOR, (plan.through,)), (DELETE_THROUGH, (plan.through, NODE))]


def prune(conn: sqlite3.Connection, before_us: int, *, dry_run: bool = False) -> list[PrunePlan]:
    """Remove (or with ``dry_run`` only plan) everything prunable before ``before_us``; the
    batches, each in its own transaction (the CLI's path; the service uses :class:`Retention`)."""
    plans: list[PrunePlan] = []
    if dry_run:
        after = 0
        conn.execute("BEGIN")  # one snapshot for the whole plan; reads only
        try:
            while True:
                plan = plan_batch(conn, before_us, after_seq=after)
                if plan.count or plan.held_by:
                    plans.append(plan)
                if plan.through is None:
                    return plans
                after = plan.through
        finally:
            conn.execute("ROLLBACK")
    while True:
        plan = plan_batch(conn, before_us)
        if plan.count or plan.held_by:
            plans.append(plan)
        if not plan.count:
            return plans
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params in batch_statements(plan):
                conn.execute(sql, params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class Retention:
    """The coordinator's periodic task removing signals older than ``keep_days``."""

    def __init__(
        self, path: str | Path, journal: Journal, keep_days: int, *, interval: float = 3600.0
    ) -> None:
        self.path = path
        self.journal = journal
        self.keep = timedelta(days=keep_days)
        self.interval = interval
        self.log = structlog.get_logger("receiver.retention")

    async def run(self) -> None:
        conn = await trio.to_thread.run_sync(lambda: connect(self.path, check_same_thread=False))
        try:
            while True:
                await self.round(conn)
                await trio.sleep(self.interval)
        finally:
            conn.close()

    async def round(self, conn: sqlite3.Connection) -> int:
        """Remove what is due, batch by batch; how many signals went."""
        before_us = to_us(datetime.now(UTC) - self.keep)
        removed = 0
        for _ in range(MAX_BATCHES_PER_ROUND):
            plan = await trio.to_thread.run_sync(plan_batch, conn, before_us)
            if not plan.count:
                break
            try:
                await self.journal.append([], statements=batch_statements(plan))
            except JournalError as exc:
                self.log.warning("journal_prune_failed", error=str(exc))
                break
            removed += plan.count
        if removed:
            self.log.info("journal_pruned", removed=removed, before_us=before_us)
        return removed
