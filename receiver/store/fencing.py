"""Writes made under a lease, as every backend checks them (``receiver/store/interface.py``).

Rules:
- A journal write carrying a :class:`FencingToken` is stored only if, inside the append's
  transaction, the lease row still has that holder and epoch (each backend reads the rows with
  its own SQL, locked until the commit). A lease with no row is not held.
- A refused write rolls the whole transaction back (:class:`FenceRefused`), and the batch is
  committed again without every write under a refused token: nothing of a refused write is
  stored, and the others commit as if it had not been there. Refusals are rare (a node that
  just lost a lease), so the usual batch pays one indexed read per lease it carries, nothing
  when it carries none. Each try refuses at least one more token, so the tries are bounded by
  the batch's tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from receiver.store.interface import FencingToken, JournalWrite, WriteOutcome


class FenceRefused(Exception):  # noqa: N818 (a signal to roll back, never raised to a caller)
    """Raised inside an append's transaction to roll it back: these tokens are not held."""

    def __init__(self, tokens: Iterable[FencingToken]) -> None:
        self.tokens = frozenset(tokens)
        super().__init__(", ".join(f"{t.lease}@{t.epoch}" for t in sorted(self.tokens, key=str)))


def tokens_of(writes: Sequence[JournalWrite]) -> set[FencingToken]:
    """The distinct tokens a batch carries."""
    return {write.fence for write in writes if write.fence is not None}


def check_tokens(tokens: set[FencingToken], rows: Iterable[tuple[str, str, int]]) -> None:
    """Raise :class:`FenceRefused` unless every token matches its lease row (name, holder,
    epoch) as read in the transaction."""
    held = {(str(name), str(holder), int(epoch)) for name, holder, epoch in rows}
    refused = [t for t in tokens if (t.lease, t.holder, t.epoch) not in held]
    if refused:
        raise FenceRefused(refused)


def append_fenced(
    writes: Sequence[JournalWrite],
    commit: Callable[[Sequence[JournalWrite]], list[WriteOutcome]],
) -> list[WriteOutcome]:
    """``commit`` the batch (one transaction that raises :class:`FenceRefused` to refuse), again
    without the refused tokens' writes as often as it refuses; one outcome per write."""
    refused: set[FencingToken] = set()
    while True:
        kept = [w for w in writes if w.fence is None or w.fence not in refused]
        try:
            outcomes = commit(kept) if kept else []
        except FenceRefused as exc:
            if not exc.tokens - refused:  # a backend that refuses what it was not given
                raise
            refused |= exc.tokens
            continue
        break
    if not refused:
        return outcomes
    answered = iter(outcomes)
    return [
        WriteOutcome((), (), refused=True)
        if w.fence is not None and w.fence in refused
        else next(answered)
        for w in writes
    ]
