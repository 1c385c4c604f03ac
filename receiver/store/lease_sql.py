"""Leases and node heartbeats on SQLite: the :class:`LeaseStore` of the embedded store.

Rules (the same as PostgreSQL's, so ``receiver.nodes`` has one code path):
- A lease has at most one holder. Taking it is one ``BEGIN IMMEDIATE`` upsert that succeeds
  only when the lease is free, expired or already the taker's; renewing needs it unexpired
  and ours; releasing expires it now (the row stays: its epoch keeps growing).
- Every take (not a renewal) is a new hold with a new epoch, even by the same holder: the
  fencing token of a hold's writes (``receiver/store/fencing.py``) is refused once its hold
  ended, even when the same node took the lease again (its old work's late writes must not
  land inside the new hold).
- Times are the machine's clock in microseconds, read by SQLite itself (``julianday('now')``,
  millisecond precision), so every process sharing the file reads the same clock.
- One connection per object, used from worker threads one call at a time (a lock).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from receiver.store.interface import Lease, NodeBeat, StoreError
from receiver.store.sqlite import connect

NOW_US: Final = "CAST(round((julianday('now') - 2440587.5) * 86400000000.0) AS INTEGER)"

ACQUIRE_LEASE: Final = f"""
INSERT INTO leases AS l (name, holder, acquired_us, expires_us)
VALUES (:name, :holder, {NOW_US}, {NOW_US} + :ttl_us)
ON CONFLICT (name) DO UPDATE SET
    holder = excluded.holder,
    acquired_us = CASE WHEN l.holder = excluded.holder THEN l.acquired_us
                       ELSE excluded.acquired_us END,
    expires_us = excluded.expires_us,
    epoch = l.epoch + 1
WHERE l.holder = excluded.holder OR l.expires_us <= {NOW_US}
RETURNING name, holder, expires_us, epoch
"""
RENEW_LEASE: Final = f"""
UPDATE leases SET expires_us = {NOW_US} + :ttl_us
WHERE name = :name AND holder = :holder AND expires_us > {NOW_US}
RETURNING name, holder, expires_us, epoch
"""
RELEASE_LEASE: Final = f"""
UPDATE leases SET expires_us = {NOW_US} - 1
WHERE name = :name AND holder = :holder AND expires_us > {NOW_US}
RETURNING name
"""
LEASES: Final = (
    f"SELECT name, holder, expires_us, epoch FROM leases WHERE expires_us > {NOW_US} ORDER BY name"
)
HEARTBEAT: Final = f"""
INSERT INTO nodes AS n (name, started_us, heartbeat_us, info)
VALUES (:name, {NOW_US}, {NOW_US}, :info)
ON CONFLICT (name) DO UPDATE SET heartbeat_us = excluded.heartbeat_us, info = excluded.info
RETURNING name, started_us, heartbeat_us, info
"""
NODES: Final = "SELECT name, started_us, heartbeat_us, info FROM nodes ORDER BY name"


def lease_rows_sql(names: int) -> str:
    """The (name, holder, epoch) rows of ``names`` leases: the fencing check of a journal write,
    read under the append's write lock (``receiver/store/fencing.py``)."""
    return f"SELECT name, holder, epoch FROM leases WHERE name IN ({', '.join('?' * names)})"


class SqliteLeaseStore:
    """Leases and heartbeats in the SQLite store file at ``path``."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = connect(
            path, check_same_thread=False, create=create
        )

    @contextmanager
    def _use(self, what: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            conn = self._conn
            if conn is None:
                raise StoreError(f"{what} failed: the store is closed")
            try:
                if write:
                    conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    if write:
                        conn.execute("ROLLBACK")
                    raise
                if write:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreError(f"{what} failed: {exc}") from exc

    def _lease(self, sql: str, name: str, holder: str, ttl: float) -> Lease | None:
        params = {"name": name, "holder": holder, "ttl_us": int(ttl * 1_000_000)}
        with self._use("lease") as conn:
            row = conn.execute(sql, params).fetchone()
        return Lease.from_row(row) if row is not None else None

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        return self._lease(ACQUIRE_LEASE, name, holder, ttl)

    def renew_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        return self._lease(RENEW_LEASE, name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> bool:
        with self._use("lease") as conn:
            row = conn.execute(RELEASE_LEASE, {"name": name, "holder": holder}).fetchone()
        return row is not None

    def leases(self) -> list[Lease]:
        with self._use("lease read", write=False) as conn:
            return [Lease.from_row(row) for row in conn.execute(LEASES).fetchall()]

    def heartbeat(self, node: str, info: Mapping[str, Any]) -> NodeBeat:
        with self._use("heartbeat") as conn:
            row = conn.execute(HEARTBEAT, {"name": node, "info": json.dumps(dict(info))}).fetchone()
        return _node(row)

    def nodes(self) -> list[NodeBeat]:
        with self._use("nodes read", write=False) as conn:
            return [_node(row) for row in conn.execute(NODES).fetchall()]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def _node(row: sqlite3.Row) -> NodeBeat:
    info = json.loads(row["info"])
    return NodeBeat(
        row["name"],
        int(row["started_us"]),
        int(row["heartbeat_us"]),
        info if isinstance(info, dict) else {},
    )
