"""Durable events/s and ACK p99 through ``receiver serve`` on PostgreSQL, one node and two
nodes, beside SQLite in the same run.

Run: ``python -m benchmarks.nodes [--runs 3] [--messages 200] [--connections 100]``

Each case drives real receiver processes (``benchmarks.harness.ReceiverProcess``) with the C
load generator, closed loop (one frame in flight per connection), every ACK after a durable
commit:
- ``sqlite``: one node on a SQLite file (WAL, ``synchronous=FULL``), as ``benchmarks.sweep``;
- ``postgresql, 1 node``: one node on a throwaway PostgreSQL cluster started for the run
  (``initdb``/``pg_ctl``, fsync on, as ``postgres`` when root), ``synchronous_commit=on``;
- ``postgresql, 2 nodes``: two nodes on that one database, each on its own port with its own
  ``[node] name``, the connections split evenly between them, loaded at once. Its events/s is
  the sum of both; its p99 the larger of the two nodes' p99s (each load generator reports its
  own percentiles).
Each run uses fresh signals (its own DC-09 line, part of the dedupe key). Every process and
the database share this machine's cores and disk: the figures compare the stores here, they
are not a capacity claim for a cluster of machines.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import sys
from pathlib import Path
from typing import Any

from benchmarks.harness import ReceiverProcess, build_blast, median_run, run_blast, write_results
from receiver.store.postgres.cluster import Cluster, ClusterError, start_cluster

CASES = ("sqlite", "postgresql, 1 node", "postgresql, 2 nodes")


def _fresh_database(cluster: Cluster, name: str) -> str:
    import psycopg  # noqa: PLC0415 (only when a cluster runs)

    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return cluster.url_for(name)


def _nodes(case: str, url: str | None) -> list[ReceiverProcess]:
    if url is None:
        return [ReceiverProcess(core=0)]
    count = 2 if "2 nodes" in case else 1
    return [
        ReceiverProcess(
            f'\n[node]\nname = "bench-{index}"\n',
            store=f'[store]\nurl = "{url}"\n',
            core=index % 2,
        )
        for index in range(count)
    ]


def _run_case(
    blast: Path, case: str, url: str | None, *, connections: int, messages: int, runs: int
) -> dict[str, Any]:
    nodes = _nodes(case, url)
    try:
        share = max(1, connections // len(nodes))
        for node in nodes:
            run_blast(blast, node.port, connections=share, messages=5)  # warm-up
        per_run: list[dict[str, Any]] = []
        for run in range(runs):
            with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
                loads = [
                    pool.submit(
                        run_blast,
                        blast,
                        node.port,
                        connections=share,
                        messages=messages,
                        line=f"L{run + 1:X}{index}",
                        core=1 - index % 2,
                        extra=["--account-base", f"{index + 1}00000"],
                    )
                    for index, node in enumerate(nodes)
                ]
                outcomes = [load.result() for load in loads]
            per_run.append(_combined(outcomes))
        memory = [node.memory() for node in nodes]
    finally:
        for node in nodes:
            node.stop()
    row = {"store": case, "nodes": len(nodes), "connections": share * len(nodes)}
    row |= median_run(per_run)
    row["rss_kib"] = sum(m["rss_kib"] for m in memory)
    return row


def _combined(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """One run over several nodes: events/s added up, each percentile the worst node's."""
    if len(outcomes) == 1:
        return outcomes[0]
    latency = {
        key: max(
            (o["latency_ms"][key] for o in outcomes if o["latency_ms"][key] is not None),
            default=None,
        )
        for key in ("p50", "p90", "p99", "max")
    }
    return {
        "events_per_s": sum(o["events_per_s"] or 0.0 for o in outcomes),
        "latency_ms": latency,
        "acked": sum(o["acked"] for o in outcomes),
        "frames": sum(o["frames"] for o in outcomes),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nodes", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200, help="frames per connection")
    parser.add_argument("--connections", type=int, default=100, help="in all, split over nodes")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    plan = f"{args.runs} runs x {args.connections} connections x {args.messages} frames"
    if args.dry_run:
        print(f"nodes: {plan}: {', '.join(CASES)}")
        return 0
    blast = build_blast()
    if blast is None:
        print("dc09blast unavailable (no benchmarks/dc09blast.c or no C compiler)")
        return 1
    try:
        cluster = start_cluster()
    except ClusterError as exc:
        print(f"nodes: {exc}", file=sys.stderr)
        return 1
    results = []
    try:
        for number, case in enumerate(CASES):
            url = None if case == "sqlite" else _fresh_database(cluster, f"bench_nodes_{number}")
            row = _run_case(
                blast,
                case,
                url,
                connections=args.connections,
                messages=args.messages,
                runs=args.runs,
            )
            results.append(row)
            print(
                f"{case:<20} nodes={row['nodes']} conns={row['connections']} "
                f"events/s={row['events_per_s']:9.1f} (min {row['events_per_s_min']:.0f}, "
                f"max {row['events_per_s_max']:.0f}) p50={row['p50_ms']}ms "
                f"p99={row['p99_ms']}ms acked={row['acked']}/{row['frames']}",
                flush=True,
            )
    finally:
        cluster.stop()
    header = (
        "| store | nodes | connections | durable events/s (median) | p50 ms | p99 ms | max ms "
        "| acked/frames |\n|---|---|---|---|---|---|---|---|"
    )
    lines = [header] + [
        f"| {r['store']} | {r['nodes']} | {r['connections']} | {r['events_per_s']:.0f} "
        f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['acked']}/{r['frames']} |"
        for r in results
    ]
    write_results("nodes", {"results": results}, "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
