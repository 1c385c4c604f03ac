"""Our receiver alone, lean, across connection counts: DC-09 frames in, journal commit, ACK out.

Run: ``python -m benchmarks.sweep [--runs 3] [--messages 200] [--connections 1,10,100,1000]
[--udp]``

Not issue 12's benchmark (that is ``python -m benchmarks.e2e``: the embedded default beside
pysiaalarm, with the goals). This sweep drives the lean receiver (signal log off, no outputs,
a subprocess pinned to core 0) with the C load generator (pinned to core 1): N connections ×
M frames, closed loop (one frame in flight per connection), the journal durable (SQLite WAL,
synchronous=FULL). Prints events/s and ACK latency percentiles
at 1, 10, 100 and 1000 connections, the median of several runs, and the receiver's memory.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from benchmarks.harness import ReceiverProcess, build_blast, median_run, run_blast, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200, help="frames per connection")
    parser.add_argument("--connections", default="1,10,100,1000")
    parser.add_argument("--udp", action="store_true", help="also measure UDP")
    args = parser.parse_args(argv)
    blast = build_blast()
    if blast is None:
        print("dc09blast unavailable (no benchmarks/dc09blast.c or no C compiler)")
        return 1
    transports = ["tcp", "udp"] if args.udp else ["tcp"]
    results = []
    for transport in transports:
        for conns in [int(c) for c in args.connections.split(",")]:
            # Few frames per connection at 1000 connections keeps each run bounded.
            messages = (
                max(20, min(args.messages, 40_000 // conns)) if conns > 100 else args.messages
            )
            server = ReceiverProcess()
            try:
                run_blast(blast, server.port, connections=conns, messages=5)  # warm-up
                runs = [
                    run_blast(
                        blast,
                        server.port,
                        connections=conns,
                        messages=messages,
                        udp=transport == "udp",
                        line=f"L{run + 1:X}",  # fresh signals each run, not retries
                    )
                    for run in range(args.runs)
                ]
                memory = server.memory()
                stored = sqlite3.connect(server.db).execute("SELECT count(*) FROM signals")
                stored_count = stored.fetchone()[0]
            finally:
                server.stop()
            row = {"transport": transport, "connections": conns, "messages": messages}
            row |= median_run(runs) | memory | {"journal_rows": stored_count}
            results.append(row)
            print(
                f"{transport} conns={conns:5d} events/s={row['events_per_s']:9.1f} "
                f"(min {row['events_per_s_min']:.0f}, max {row['events_per_s_max']:.0f}) "
                f"p50={row['p50_ms']}ms p90={row['p90_ms']}ms p99={row['p99_ms']}ms "
                f"max={row['max_ms']}ms acked={row['acked']}/{row['frames']} "
                f"rss={row['rss_kib'] // 1024}MiB",
                flush=True,
            )
    header = (
        "| transport | connections | events/s (median) | p50 ms | p90 ms | p99 ms | max ms "
        "| acked/frames | RSS MiB |\n|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header] + [
        f"| {r['transport']} | {r['connections']} | {r['events_per_s']:.0f} | {r['p50_ms']} "
        f"| {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['acked']}/{r['frames']} "
        f"| {r['rss_kib'] // 1024} |"
        for r in results
    ]
    lines.append(
        "\nLean (signal log off, no outputs), pinned; the issue's goals are judged by "
        "`python -m benchmarks.e2e` on the embedded default."
    )
    write_results("sweep", {"results": results}, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
