"""Counters: frames by outcome, replies sent, batch sizes, latencies. Cheap enough for the
hot path (a latency is one bisect and two additions)."""

from __future__ import annotations

import bisect
from collections import Counter

# Upper bounds (seconds) of the latency buckets; the last bucket is everything above.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Latency:
    """One latency histogram: a count per bucket (not cumulative), the sum and the count."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BOUNDS) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float, n: int = 1) -> None:
        self.buckets[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += n
        self.sum += seconds * n
        self.count += n


class Counters:
    """Named monotonic counters plus a batch-size histogram (power-of-two buckets)."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()
        self.batch_sizes: Counter[int] = Counter()
        self.latencies: dict[str, Latency] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.values[name] += n

    def batch(self, size: int) -> None:
        self.batch_sizes[1 << max(size - 1, 0).bit_length()] += 1

    def observe(self, name: str, seconds: float, n: int = 1) -> None:
        """``n`` events that each took ``seconds`` (e.g. the frames one commit answered)."""
        latency = self.latencies.get(name)
        if latency is None:
            latency = self.latencies[name] = Latency()
        latency.observe(seconds, n)

    def add(self, other: Counters) -> None:
        """Add ``other``'s counts to these (the coordinator's view of every ingest worker)."""
        self.values.update(other.values)
        self.batch_sizes.update(other.batch_sizes)
        for name, latency in other.latencies.items():
            mine = self.latencies.get(name)
            if mine is None:
                mine = self.latencies[name] = Latency()
            mine.buckets = [a + b for a, b in zip(mine.buckets, latency.buckets, strict=True)]
            mine.sum += latency.sum
            mine.count += latency.count

    def snapshot(self) -> dict[str, int]:
        out = dict(self.values)
        for bucket, n in sorted(self.batch_sizes.items()):
            out[f"batch_le_{bucket}"] = n
        return out
