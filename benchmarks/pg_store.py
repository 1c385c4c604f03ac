"""Grouped-commit throughput of the journal: SQLite vs PostgreSQL, durable rows per second.

Run: ``python -m benchmarks.pg_store [--batches 40] [--batch 256] [--runs 3]``

Each commit is one batch of ``--batch`` signals with their dedupe keys (one call per batch, in
a worker thread for PostgreSQL as the receiver does), durable before the call returns:
- SQLite: the receiver's ``Journal`` (WAL, ``synchronous=FULL``), one append per batch;
- PostgreSQL, one node: ``PostgresStore.append`` (``synchronous_commit=on``) on a throwaway
  cluster started for the run (``initdb``/``pg_ctl``, fsync on, as ``postgres`` when root);
- PostgreSQL, two nodes: two stores (two connections) appending at once; appends serialize
  on the journal's advisory lock, so this shows what sharing one journal costs.
Both databases live on the same disk (a temporary folder). The figure is the median of runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import trio

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.journal import Journal
from receiver.store.interface import JournalWrite, LinkSeen
from receiver.store.postgres.cluster import ClusterError, start_cluster
from receiver.store.postgres.store import PostgresStore
from receiver.store.sqlite_store import SqliteStore

_MAX_SECONDS = 120.0  # per measurement: a bounded loop even on a very slow disk


def _batch(run: int, index: int, size: int) -> tuple[list[Signal], list[str | None]]:
    now = datetime.now(UTC)
    signals = [
        Signal(
            id=new_signal_id(now),
            received_at=now,
            source=Source.DC09,
            peer="127.0.0.1:1",
            account=f"{1000 + n % 500}",
            effective_account=f"{1000 + n % 500}",
            token="ADM-CID",
            sequence=f"{n % 9999 + 1:04d}",
            device_time=now,
            cid=ContactIdView("E", "130", "01", f"{n % 999 + 1:03d}"),
            raw=b'\n0000"ADM-CID"0001L0#1234[#1234|1130 01 005]_12:00:00,01-01-2026\r',
        )
        for n in range(index * size, (index + 1) * size)
    ]
    keys: list[str | None] = [f"{run}|{s.account}|ADM-CID|{s.sequence}|{s.id}" for s in signals]
    return signals, keys


def sqlite_rows_per_s(folder: Path, run: int, batches: int, size: int) -> float:
    journal = Journal(SqliteStore(folder / f"bench-{run}.sqlite3"), max_batch=size)
    work = [_batch(run, i, size) for i in range(batches)]

    async def main() -> float:
        async with trio.open_nursery() as nursery:
            await nursery.start(journal.run)
            start = time.perf_counter()
            done = 0
            for signals, keys in work:
                await journal.append(signals, keys=keys, links=[("account:1", 1)])
                done += len(signals)
                if time.perf_counter() - start > _MAX_SECONDS:
                    break
            elapsed = time.perf_counter() - start
            journal.close()
        return done / elapsed

    return trio.run(main)


def postgres_rows_per_s(url: str, run: int, batches: int, size: int, nodes: int) -> float:
    stores = [PostgresStore(url) for _ in range(nodes)]
    work = [[_batch(run * 10 + node, i, size) for i in range(batches)] for node in range(nodes)]
    done = [0] * nodes
    barrier = threading.Barrier(nodes + 1)

    def node(index: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        for signals, keys in work[index]:
            stores[index].append(
                [JournalWrite(signals, keys, links=[LinkSeen(f"account:{index}", 1)])]
            )
            done[index] += len(signals)
            if time.perf_counter() - started > _MAX_SECONDS:
                break

    threads = [threading.Thread(target=node, args=(i,)) for i in range(nodes)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    for store in stores:
        store.close()
    return sum(done) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pg_store", description=__doc__)
    parser.add_argument("--batches", type=int, default=40, help="commits per run (per node)")
    parser.add_argument("--batch", type=int, default=256, help="signals per commit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    plan = f"{args.runs} runs x {args.batches} commits x {args.batch} signals"
    if args.dry_run:
        print(f"pg_store: {plan}: sqlite, postgresql 1 node, postgresql 2 nodes")
        return 0
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        print(f"pg_store: {exc}", file=sys.stderr)
        return 1
    results: dict[str, list[float]] = {
        "sqlite": [],
        "postgresql, 1 node": [],
        "postgresql, 2 nodes": [],
    }
    try:
        PostgresStore(cluster.url).open().close()  # migrate once
        with tempfile.TemporaryDirectory(prefix="receiver-bench-") as folder:
            for run in range(args.runs):
                results["sqlite"].append(
                    sqlite_rows_per_s(Path(folder), run, args.batches, args.batch)
                )
                results["postgresql, 1 node"].append(
                    postgres_rows_per_s(cluster.url, run, args.batches, args.batch, 1)
                )
                results["postgresql, 2 nodes"].append(
                    postgres_rows_per_s(cluster.url, run + 100, args.batches, args.batch, 2)
                )
    finally:
        cluster.stop()
    print(f"durable grouped commits, {plan} (median rows/s; min-max)")
    print(f"{'store':<22} {'rows/s':>9}   range")
    for name, figures in results.items():
        print(
            f"{name:<22} {statistics.median(figures):>9,.0f}   "
            f"{min(figures):,.0f}-{max(figures):,.0f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
