"""Spool output throughput: durable package files per second, one per call vs a window.

Run: ``python -m benchmarks.spool [--packages 1280] [--runs 3] [--window 64] [--dispatcher]
[--rate 2500] [--chunk 40] [--coalesce 0.005] [--automation 60 --batch 25 --remove-after 1]``

The spool is the embedded default output (``make serve`` with no outputs configured). Each
package is XML built (the first of each call validated), written to an unnamed file in the
directory (``O_TMPFILE``), flushed, linked to its name, and the directory fsynced. ``--window``
packages per call is what the dispatcher hands over during a backlog; one package per call is
the baseline in the same run, and the middle row the fallback (a named temporary renamed into
place, as where the filesystem has no ``O_TMPFILE``) at ``--window``. The directory is a fresh
one under ``var/`` (the project's disk, not a tmpfs); CPU is the process's user+sys per package,
and each split into user (mostly ours: XML, Python) and sys (mostly the kernel's file work).

``--dispatcher`` adds the coordinator's whole path at a steady rate (``--rate``, signals/s): a
thread commits signals to a SQLite journal in batches, as the ingest workers do, and the
dispatcher's cursor (woken by each commit's notice, as in the coordinator) reads them, builds
and spools the packages and saves its cursor. Its CPU per package is the process's without the
committing thread's own.

``--automation SECONDS`` adds a steady run at ``--rate`` in batches of ``--batch`` (about what
the dispatcher hands over at full ingest), twice, in two folders: once with nothing removed,
then beside an automation (a process of its own, its CPU not counted) that reads each package
and removes it ``--remove-after`` seconds after it appeared, as a real one does. It prints the
spool's CPU per package in 10-second windows: on ext4 without a journal a new inode steps past
the free inodes freed in the last minutes (``recently_deleted``). The removal is stamped for
``benchmarks.harness``, so receivers started by later benchmarks wait it out.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import trio

from adapters.spool import SpoolOutput
from benchmarks.harness import ROOT, record_cleanup, write_results
from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.dispatcher import OutputCursor
from receiver.journal import NOTICE_FALLBACK_POLL, Journal
from receiver.store.interface import JournalWrite
from receiver.store.sqlite_store import SqliteStore


def _signal(index: int) -> Signal:
    now = datetime.now(UTC)
    return Signal(
        id=f"bench-{index:06d}",
        received_at=now,
        source=Source.DC09,
        peer="127.0.0.1:1",
        account=f"{1000 + index % 500}",
        effective_account=f"{1000 + index % 500}",
        token="ADM-CID",
        sequence=f"{index % 9999 + 1:04d}",
        device_time=now,
        cid=ContactIdView("E", "130", "01", "001"),
        name="Burglary",
        raw=b"",
    )


def _cpu() -> tuple[float, float]:
    """This process's user and system CPU seconds so far."""
    times = os.times()
    return times.user, times.system


async def _rate(
    directory: Path, packages: int, window: int, unnamed: bool
) -> tuple[float, float, float]:
    """Packages per second, and user and system CPU microseconds per package."""
    output = SpoolOutput("spool", directory)
    output.unnamed = unnamed
    items = [(_signal(i), f"p-{i:06d}") for i in range(packages)]
    started, (user, system) = time.perf_counter(), _cpu()
    for start in range(0, packages, window):
        await output.deliver_batch(items[start : start + window])
    user_end, system_end = _cpu()
    elapsed = time.perf_counter() - started
    return (
        packages / elapsed,
        (user_end - user) / packages * 1e6,
        (system_end - system) / packages * 1e6,
    )


def _journal_signal(index: int) -> Signal:
    """A DC-09 Contact ID burglary from a known account, as the ingest workers store it."""
    now = datetime.now(UTC)
    account = f"{1000 + index % 500}"
    return Signal(
        id=new_signal_id(now),
        received_at=now,
        source=Source.DC09,
        peer="127.0.0.1:40000",
        account=account,
        effective_account=f"L1{account}",
        account_id=index % 500 + 1,
        site_id=index % 500 + 1,
        site_name=f"Site {index % 500}",
        token="ADM-CID",
        sequence=f"{index % 9999 + 1:04d}",
        device_time=now,
        line="L1",
        cid=ContactIdView("E", "130", "01", "001"),
        name="Burglary",
        category="alarm",
        raw=b'"ADM-CID"0001L1#' + account.encode() + b"[#" + account.encode() + b"|1130 01 001]",
    )


def _commit_steadily(
    path: Path,
    packages: int,
    rate: float,
    chunk: int,
    cpu: list[float],
    *,
    tell: Callable[[int], None] = lambda seq: None,
) -> None:
    """Commit ``packages`` signals at ``rate`` per second, ``chunk`` per transaction (in a
    thread of its own, like an ingest worker's commits), and ``tell`` each commit's last seq
    (as a worker's notice does); its CPU goes into ``cpu``."""
    store = SqliteStore(path)
    started = time.perf_counter()
    try:
        for start in range(0, packages, chunk):
            due = started + start / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            count = min(chunk, packages - start)
            [outcome] = store.append(
                [JournalWrite(signals=[_journal_signal(start + i) for i in range(count)])]
            )
            tell(outcome.stored[-1][0])
    finally:
        store.close()
        cpu.extend(_thread_cpu())


def _thread_cpu() -> tuple[float, float]:
    """The calling thread's user and system CPU seconds (Linux ``/proc``; else all as user)."""
    try:
        stat = Path(f"/proc/self/task/{threading.get_native_id()}/stat").read_text()
    except OSError:
        return time.thread_time(), 0.0
    fields = stat.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


async def _through_dispatcher(
    directory: Path, packages: int, rate: float, chunk: int, coalesce: float
) -> tuple[float, float, float, float]:
    """Signals/s spooled, user and system CPU us per package (all but the committing thread's),
    and the mean packages per exchange; the spool's default window and coalescing."""
    path = directory / "store.sqlite3"
    directory.mkdir(parents=True)
    setup = SqliteStore(path)
    setup.ensure_output("spool", 0)
    setup.close()
    output = SpoolOutput("spool", directory / "spool", coalesce=coalesce)
    exchanges = 0
    deliver = output.deliver_batch

    async def counted(items: Any) -> int:
        nonlocal exchanges
        exchanges += 1
        return await deliver(items)

    output.deliver_batch = counted  # type: ignore[method-assign]
    journal = Journal(SqliteStore(path))
    cursor = OutputCursor(
        output,
        SqliteStore(path),
        journal,
        window=output.window,
        coalesce=output.coalesce,
        read_batch=max(256, output.window),
    )
    committer_cpu: list[float] = []
    token = trio.lowlevel.current_trio_token()

    def tell(seq: int) -> None:  # the notice a worker sends on its pipe, handed over
        trio.from_thread.run_sync(journal.learn_committed, seq, trio_token=token)

    committer = threading.Thread(
        target=_commit_steadily,
        args=(path, packages, rate, chunk, committer_cpu),
        kwargs={"tell": tell},
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(journal.run)
        # As in the coordinator: the commits are told, the store's poll is the fallback.
        nursery.start_soon(journal.watch_other_writers, SqliteStore(path), NOTICE_FALLBACK_POLL)
        await nursery.start(cursor.run)
        started, (user, system) = time.perf_counter(), _cpu()
        committer.start()
        while cursor.cursor < packages:
            await trio.sleep(0.01)
        elapsed = time.perf_counter() - started
        user_end, system_end = _cpu()
        nursery.cancel_scope.cancel()
    committer.join()
    user_spent = user_end - user - committer_cpu[0]
    system_spent = system_end - system - committer_cpu[1]
    return (
        packages / elapsed,
        user_spent / packages * 1e6,
        system_spent / packages * 1e6,
        packages / exchanges,
    )


# The automation, a process of its own as a real one is: every 50 ms it lists the folder, then
# reads and removes each package seen at least AFTER seconds ago; at SIGTERM it prints how many.
_AUTOMATION = """
import os, signal, sys, time
folder, after, seen, removed, running = sys.argv[1], float(sys.argv[2]), {}, 0, [True]
signal.signal(signal.SIGTERM, lambda *_: running.clear())
while running:
    time.sleep(0.05)
    now = time.monotonic()
    for entry in os.scandir(folder):
        if entry.name.endswith(".xml"):
            seen.setdefault(entry.name, now)
    for name, first in list(seen.items()):
        if now - first >= after:
            path = os.path.join(folder, name)
            with open(path, "rb") as package:
                package.read()
            os.unlink(path)
            del seen[name]
            removed += 1
print(removed)
"""


async def _steady(
    directory: Path,
    seconds: float,
    rate: float,
    batch: int,
    remove_after: float | None,
    *,
    window: float = 10.0,
) -> tuple[float, list[tuple[float, float]], int]:
    """Packages/s written at ``rate`` in batches of ``batch`` for ``seconds``, the spool's user
    and system CPU us per package in each ``window`` seconds, and how many were removed."""
    directory.mkdir(parents=True)
    output = SpoolOutput("spool", directory)
    automation = None
    if remove_after is not None:
        automation = subprocess.Popen(
            [sys.executable, "-c", _AUTOMATION, str(directory), str(remove_after)],
            stdout=subprocess.PIPE,
            text=True,
        )
    windows: list[tuple[float, float]] = []
    written = window_written = 0
    started = time.perf_counter()
    window_start, (user, system) = started, _cpu()
    try:
        while (now := time.perf_counter()) - started < seconds:
            due = started + written / rate
            if due > now:
                await trio.sleep(due - now)
            items = [(_signal(written + i), f"s-{written + i:08d}") for i in range(batch)]
            written += await output.deliver_batch(items)
            window_written += batch
            if time.perf_counter() - window_start >= window:
                user_now, system_now = _cpu()
                windows.append(
                    (
                        (user_now - user) / window_written * 1e6,
                        (system_now - system) / window_written * 1e6,
                    )
                )
                window_start, (user, system), window_written = (
                    time.perf_counter(),
                    (user_now, system_now),
                    0,
                )
    finally:
        removed = 0
        if automation is not None:
            automation.terminate()
            out, _ = automation.communicate(timeout=60)
            removed = int(out.strip() or 0)
    elapsed = time.perf_counter() - started
    return written / elapsed, windows, removed


def _measure_automation(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    rows = []
    for remove_after in (None, args.remove_after):
        folder = scratch / (
            "automation-removes" if remove_after is not None else "automation-keeps"
        )
        rate, windows, removed = trio.run(
            _steady, folder, args.automation, args.rate, args.batch, remove_after
        )
        if removed:
            record_cleanup(removed)
        row = {
            "removes_after_s": remove_after,
            "rate": args.rate,
            "batch": args.batch,
            "seconds": args.automation,
            "packages_per_s": round(rate, 1),
            "removed": removed,
            "windows_user_sys_us_per_package": [[round(u, 1), round(s, 1)] for u, s in windows],
        }
        rows.append(row)
        label = f"removed after {remove_after} s" if remove_after is not None else "kept"
        print(
            f"automation: {label}, {args.rate:.0f}/s in batches of {args.batch}: "
            f"packages/s={rate:.0f}; us/package per 10 s (user+sys): "
            + ", ".join(f"{u + s:.0f} ({s:.0f} sys)" for u, s in windows),
            flush=True,
        )
    return rows


def _measure(args: argparse.Namespace, scratch: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    # The last row is the one benchmarks/run.py reports: --window packages on the usual path.
    # The rows' runs alternate (A B C A B C ...): a machine whose load changes meanwhile
    # weighs on all of them alike.
    rows = ((1, True), (args.window, False), (args.window, True))
    measured: dict[tuple[int, bool], list[tuple[float, float, float]]] = {row: [] for row in rows}
    for run in range(args.runs):
        for window, unnamed in rows:
            folder = scratch / f"{window}-{unnamed}-{run}"
            rate = trio.run(_rate, folder, args.packages, window, unnamed)
            measured[window, unnamed].append(rate)
    for window, unnamed in rows:
        runs = measured[window, unnamed]
        rates = [rate for rate, _, _ in runs]
        row = {
            "window": window,
            "path": "unnamed" if unnamed else "named",
            "packages": args.packages,
            "runs": args.runs,
            "packages_per_s": round(statistics.median(rates), 1),
            "packages_per_s_min": round(min(rates), 1),
            "packages_per_s_max": round(max(rates), 1),
            "cpu_us_per_package": round(statistics.median(u + s for _, u, s in runs), 1),
            "user_us_per_package": round(statistics.median(u for _, u, _ in runs), 1),
            "sys_us_per_package": round(statistics.median(s for _, _, s in runs), 1),
        }
        results.append(row)
        print(
            f"spool window={window:3d} {row['path']:7s} packages/s={row['packages_per_s']:8.1f} "
            f"(min {row['packages_per_s_min']:.0f}, max {row['packages_per_s_max']:.0f}) "
            f"cpu {row['cpu_us_per_package']:.0f} us/package "
            f"(user {row['user_us_per_package']:.0f}, sys {row['sys_us_per_package']:.0f})",
            flush=True,
        )
    return results


def _measure_dispatcher(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    runs = []
    for run in range(args.runs):
        folder = scratch / f"dispatcher-{run}"
        runs.append(
            trio.run(
                _through_dispatcher, folder, args.packages, args.rate, args.chunk, args.coalesce
            )
        )
    row = {
        "rate": args.rate,
        "chunk": args.chunk,
        "coalesce": args.coalesce,
        "packages": args.packages,
        "runs": args.runs,
        "packages_per_s": round(statistics.median(r[0] for r in runs), 1),
        "cpu_us_per_package": round(statistics.median(r[1] + r[2] for r in runs), 1),
        "user_us_per_package": round(statistics.median(r[1] for r in runs), 1),
        "sys_us_per_package": round(statistics.median(r[2] for r in runs), 1),
        "packages_per_exchange": round(statistics.median(r[3] for r in runs), 1),
    }
    print(
        f"dispatcher at {args.rate:.0f}/s ({args.chunk} per commit, coalesce {args.coalesce}): "
        f"packages/s={row['packages_per_s']:.0f} cpu {row['cpu_us_per_package']:.0f} us/package "
        f"(user {row['user_us_per_package']:.0f}, sys {row['sys_us_per_package']:.0f}), "
        f"{row['packages_per_exchange']:.1f} packages per exchange",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--packages", type=int, default=1280)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument(
        "--dispatcher", action="store_true", help="also the coordinator's path, read to file"
    )
    parser.add_argument("--rate", type=float, default=2500.0, help="with --dispatcher")
    parser.add_argument("--chunk", type=int, default=40, help="signals per commit")
    parser.add_argument(
        "--coalesce",
        type=float,
        default=SpoolOutput.COALESCE,
        help="with --dispatcher: the spool's coalesce setting, seconds",
    )
    parser.add_argument(
        "--automation",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also a steady run of SECONDS kept and then beside an automation removing packages",
    )
    parser.add_argument("--batch", type=int, default=25, help="with --automation: per call")
    parser.add_argument(
        "--remove-after", type=float, default=1.0, help="with --automation: seconds, then removed"
    )
    args = parser.parse_args(argv)
    (ROOT / "var").mkdir(exist_ok=True)
    # Every run's folder is removed at the end, not after each run: on ext4 without a journal
    # the inode allocator steps over inodes freed in the last minute or so, one by one, so
    # removing a run's files would slow the file creations of the runs after it.
    scratch = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=ROOT / "var"))
    try:
        results = _measure(args, scratch)
        dispatcher = _measure_dispatcher(args, scratch) if args.dispatcher else None
        automation = _measure_automation(args, scratch) if args.automation > 0 else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    ratio = results[-1]["packages_per_s"] / results[0]["packages_per_s"]
    print(f"window {args.window} / one per call: {ratio:.2f}")
    lines = [
        "| packages per call | path | packages/s (median) | min | max | CPU us/package "
        "| user | sys |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['window']} | {r['path']} | {r['packages_per_s']:.0f} | "
        f"{r['packages_per_s_min']:.0f} | {r['packages_per_s_max']:.0f} "
        f"| {r['cpu_us_per_package']:.0f} | {r['user_us_per_package']:.0f} "
        f"| {r['sys_us_per_package']:.0f} |"
        for r in results
    ]
    payload: dict[str, Any] = {"results": results, "ratio": round(ratio, 2)}
    if dispatcher is not None:
        payload["dispatcher"] = dispatcher
        lines += [
            "",
            "| through the dispatcher at | packages/s | CPU us/package | user | sys "
            "| packages per exchange |",
            "|---|---|---|---|---|---|",
            f"| {dispatcher['rate']:.0f}/s, {dispatcher['chunk']} per commit "
            f"| {dispatcher['packages_per_s']:.0f} | {dispatcher['cpu_us_per_package']:.0f} "
            f"| {dispatcher['user_us_per_package']:.0f} | {dispatcher['sys_us_per_package']:.0f} "
            f"| {dispatcher['packages_per_exchange']:.1f} |",
        ]
    if automation is not None:
        payload["automation"] = automation
        lines += [
            "",
            "| steady run | packages/s | spool CPU us/package per 10 s window (user+sys) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {'removed after ' + str(r['removes_after_s']) + ' s' if r['removed'] else 'kept'}"
            f", {r['rate']:.0f}/s in batches of {r['batch']} | {r['packages_per_s']:.0f} | "
            + ", ".join(f"{u + s:.0f}" for u, s in r["windows_user_sys_us_per_package"])
            + " |"
            for r in automation
        ]
    write_results("spool", payload, "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
