"""Counters: frames by outcome, replies sent, batch sizes. Cheap enough for the hot path."""

from __future__ import annotations

from collections import Counter


class Counters:
    """Named monotonic counters plus a batch-size histogram (power-of-two buckets)."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()

    def inc(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def batch(self, size: int) -> None:
        self.batch_sizes[1 << max(size - 1, 0).bit_length()] += 1

    def snapshot(self) -> dict[str, int]:
        out = dict(self.values)
        for bucket, n in sorted(self.batch_sizes.items()):
            out[f"batch_le_{bucket}"] = n
        return out
