"""Connection limits shared by the listeners: in total and per peer address.

A slow or hostile peer opening connections in a loop must not starve everyone else; a limit
refuses the newcomer (it is closed at once), never an established link.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager


class ConnectionLimits:
    def __init__(self, total: int, per_peer: int) -> None:
        self.total = total
        self.per_peer = per_peer
        self.open = 0
        self.by_peer: Counter[str] = Counter()

    @contextmanager
    def admit(self, peer_host: str) -> Iterator[bool]:
        """Yield whether the connection may stay; count it while it does."""
        if self.open >= self.total or self.by_peer[peer_host] >= self.per_peer:
            yield False
            return
        self.open += 1
        self.by_peer[peer_host] += 1
        try:
            yield True
        finally:
            self.open -= 1
            self.by_peer[peer_host] -= 1
            if not self.by_peer[peer_host]:
                del self.by_peer[peer_host]
