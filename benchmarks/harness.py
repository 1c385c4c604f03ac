"""Pieces the benchmarks share: a receiver subprocess, the C load generator, RSS, medians.

Everything runs on loopback. Every load run is bounded in frames and in time.

A run's throwaway folder (its journal and a spool of up to ~200,000 packages) is removed when
the benchmark process ends, not when its receiver stops, and a receiver started within six
minutes of a large removal first waits them out (``wait_for_recent_cleanup``). On ext4 without
a journal (this VM's root filesystem), inode allocation steps one by one past every free inode
deleted in the last 60 s whose inode-table block is cached, and in the last 360 s while that
block is dirty (fs/ext4/ialloc.c ``recently_deleted``). The new files themselves dirty those
blocks again, so an ``os.sync()`` after the removal does not shorten it (measured: 540-680 µs
of system CPU per new file right after a sync and 65 s after one, 46 µs seven minutes after).
Without the wait, the next run's spool would pay for the previous run's cleanup.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BLAST_SOURCE = ROOT / "benchmarks" / "dc09blast.c"
BUILD = ROOT / "benchmarks" / "build"
RESULTS = ROOT / "benchmarks" / "results"
# When the benchmarks last removed many files, for every benchmark process on this machine
# (the filesystem is shared): {"ended": wall-clock seconds, "files": count}.
CLEANUP_STAMP = Path(tempfile.gettempdir()) / "receiver-bench-cleanup.json"
# ext4's RECENTCY_MIN + RECENTCY_DIRTY (60 + 300 s, in whole seconds of i_dtime), and what
# counts as a large removal.
RECENTLY_DELETED_S = 362.0
LARGE_CLEANUP_FILES = 1_000
# Folders are removed at once instead of at exit when their filesystem has less free space.
KEEP_FREE_BYTES = 4 * 1024**3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(command: list[str], core: int | None) -> list[str]:
    """Pin to one core where the machine has two or more and taskset exists."""
    if core is None or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(core), *command]


def build_blast(*, aes: bool = False) -> Path | None:
    """Build benchmarks/dc09blast.c once; None when it or a C compiler is missing.

    ``aes``: the build that can encrypt (``--key``), linked with OpenSSL's libcrypto; None
    when libssl-dev is missing (the plain build does not need it)."""
    target = BUILD / ("dc09blast-aes" if aes else "dc09blast")
    if target.exists() and target.stat().st_mtime >= BLAST_SOURCE.stat().st_mtime:
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if not BLAST_SOURCE.exists() or compiler is None:
        return None
    BUILD.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-O2", "-o", str(target), str(BLAST_SOURCE)]
    if aes:
        command[1:1] = ["-DDC09_AES"]
        command.append("-lcrypto")
    built = subprocess.run(command, check=not aes, capture_output=aes)
    return target if built.returncode == 0 else None


def rss_kib(pid: int) -> dict[str, int]:
    """Current and peak resident memory of a process, KiB (Linux /proc)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return {"rss_kib": out.get("VmRSS", 0), "peak_rss_kib": out.get("VmHWM", 0)}


def child_pids(pid: int) -> list[int]:
    """The direct children of ``pid`` (Linux /proc), e.g. the ingest worker processes."""
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            found += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children so far (Linux /proc)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for each in [pid, *child_pids(pid)]:
        try:
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return round(total, 2)


class ReceiverProcess:
    """``receiver serve`` in a subprocess with a throwaway store and its own config."""

    def __init__(
        self,
        extra_config: str = "",
        *,
        core: int | None = 0,
        outputs: str = "outputs = []\n",
        embedded_default: bool = False,
        setup: Sequence[Sequence[str]] = (),
        bridge_config: str = "",
        dc09_connections: int = 50_000,
        store: str | None = None,
    ) -> None:
        """``outputs``: top-level TOML for the outputs (default none; ``[[outputs]]`` tables
        go at the end of the file). The bridge port is a free one, so runs never collide.
        ``store``: the ``[store]`` table (e.g. a PostgreSQL ``url``); default a SQLite file in
        the throwaway folder.

        ``embedded_default``: what ``make serve`` runs (signal log on, the spool output, one
        ingest worker per core, the console), only on free ports and a throwaway folder; the
        receiver is then not pinned (``core`` is ignored). ``bridge_config``: more keys of the
        ``[bridge]`` table (its port is ``bridge_port``). ``dc09_connections``: the DC-09
        connection limits (the receiver shares its open-file budget out by them).

        ``setup``: CLI commands (``receiver --config FILE <args>``) run on the store before the
        receiver starts, e.g. the stations, lines and keyed accounts of an AES run.

        It first waits out the six minutes after a large cleanup (``wait_for_recent_cleanup``)."""
        wait_for_recent_cleanup()
        self.dir = Path(tempfile.mkdtemp(prefix="receiver-bench-"))
        self.port = free_port()
        self.bridge_port = free_port()
        self.config = self.dir / "receiver.toml"
        if embedded_default:
            core = None
            outputs = (
                f'[[outputs]]\nname = "spool"\nkind = "spool"\ndirectory = "{self.dir / "spool"}"\n'
            )
            extra_config += f'\n[console]\nlisten = "127.0.0.1:{free_port()}"\n'
        else:
            extra_config += '\n[console]\nlisten = ""\n'
        tables = outputs if "[[outputs]]" in outputs else ""
        self.config.write_text(
            f"log_signals = {'true' if embedded_default else 'false'}\n"
            + ("" if tables else outputs)
            + (store or f'[store]\npath = "{self.dir / "receiver.sqlite3"}"\n')
            + f'[bridge]\nlisten = "127.0.0.1:{self.bridge_port}"\n'
            + bridge_config
            + "\n"
            f'[dc09]\nlisten = "127.0.0.1:{self.port}"\n'
            f"max_connections = {dc09_connections}\n"
            f"max_connections_per_peer = {dc09_connections}\n"
            + extra_config
            + ("\n" + tables if tables else ""),
            encoding="utf-8",
        )
        for args in setup:
            self.cli(*args)
        command = [sys.executable, "-m", "receiver.cli", "--config", str(self.config), "serve"]
        self.log = (self.dir / "receiver.log").open("wb")
        self.process = subprocess.Popen(pinned(command, core), stdout=self.log, stderr=self.log)
        try:
            self._wait_ready()
        except BaseException:
            # Never left running: a receiver that starts listening late would share the next
            # run's port (SO_REUSEPORT) and answer its panels. Its folder stays, for the log.
            self._end_process()
            raise

    def _wait_ready(self, timeout: float = 30.0) -> None:
        """Until the receiver logs ``receiver_started`` (it does once every ingest worker
        listens) and its DC-09 port answers. A port that answers is not enough: the first
        worker listening would take every panel that connects before the others listen, and
        a TCP panel stays on the worker that accepted it."""
        deadline = time.monotonic() + timeout
        log = self.dir / "receiver.log"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"receiver exited: see {log}")
            if started_logged(log):
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"receiver did not start listening: see {log}")

    def cli(self, *args: str, timeout: float = 120.0) -> str:
        """``receiver --config FILE ARGS...`` on this receiver's store; its stdout."""
        command = [sys.executable, "-m", "receiver.cli", "--config", str(self.config), *args]
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"receiver {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def workers(self) -> int:
        """Ingest worker processes running beside the coordinator (multiprocessing's
        resource tracker, also a child, is not one; its memory is still counted)."""
        count = 0
        for pid in child_pids(self.process.pid):
            try:
                count += b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
        return count

    @property
    def db(self) -> Path:
        return self.dir / "receiver.sqlite3"

    def cpu(self) -> float:
        return cpu_seconds(self.process.pid)

    def memory(self) -> dict[str, int]:
        """RSS of the receiver and its ingest workers, added up."""
        total = {"rss_kib": 0, "peak_rss_kib": 0}
        for pid in [self.process.pid, *child_pids(self.process.pid)]:
            for key, value in rss_kib(pid).items():
                total[key] += value
        return total

    def stop(self) -> None:
        self._end_process()
        dispose(self.dir)

    def _end_process(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def started_logged(log: Path) -> bool:
    """Whether the receiver's log (JSON lines: its output is not a terminal) holds its
    ``receiver_started`` line."""
    try:
        return b'"event": "receiver_started"' in log.read_bytes()
    except OSError:
        return False


# Throwaway folders are removed when the benchmark process ends, not when each receiver stops
# (see the module's docstring): deleting one run's spool of tens of thousands of packages would
# slow the file creation of the runs after it, ours and not theirs.
_FOLDERS: list[Path] = []


def dispose(folder: Path) -> None:
    """Remove ``folder`` when this process ends; at once (then ``remove_folders``) when its
    filesystem has less than ``KEEP_FREE_BYTES`` free, so deferring never fills the disk."""
    if not _FOLDERS:
        atexit.register(remove_folders)
    _FOLDERS.append(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if free < KEEP_FREE_BYTES:
        print(
            f"harness: {free // 1024**2} MiB free: removing the run folders now, not at exit",
            flush=True,
        )
        remove_folders()


def remove_folders() -> None:
    """Remove every folder ``dispose`` was given, and stamp the cleanup when it was large, so
    the next receiver (of this process or another) waits out ``recently_deleted``."""
    files = 0
    for folder in _FOLDERS:
        files += sum(len(names) for _, _, names in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
    _FOLDERS.clear()
    if files >= LARGE_CLEANUP_FILES:
        record_cleanup(files)


def record_cleanup(files: int, *, ended: float | None = None) -> None:
    """Stamp a removal of ``files`` files that ended at ``ended`` (wall clock; now)."""
    stamp = {"ended": time.time() if ended is None else ended, "files": files}
    partial = CLEANUP_STAMP.with_name(f"{CLEANUP_STAMP.name}.{os.getpid()}")
    try:
        partial.write_text(json.dumps(stamp), encoding="utf-8")
        partial.replace(CLEANUP_STAMP)
    except OSError:
        partial.unlink(missing_ok=True)


def wait_for_recent_cleanup(
    *, now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep
) -> float:
    """Before a run: sleep until ``RECENTLY_DELETED_S`` have passed since the last large
    cleanup stamped (``record_cleanup``), saying so; the seconds waited (0: none due).

    Without it, a run started right after the previous one removed its spool measures that
    removal (last session: the drain benchmark's backlog drained in 1.1 s, then 29 s and 37 s
    after the runs before it had each removed ~190,000 files)."""
    try:
        stamp = json.loads(CLEANUP_STAMP.read_text(encoding="utf-8"))
        ended, files = float(stamp["ended"]), int(stamp["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0
    left = min(ended + RECENTLY_DELETED_S - now(), RECENTLY_DELETED_S)
    if files < LARGE_CLEANUP_FILES or left <= 0:
        return 0.0
    print(
        f"harness: waiting {left:.0f} s: a benchmark removed {files:,} files "
        f"{RECENTLY_DELETED_S - left:.0f} s ago, and new files would step past those freed "
        "inodes (ext4 without a journal) for six minutes",
        flush=True,
    )
    sleep(left)
    return left


def run_blast(
    blast: Path,
    port: int,
    *,
    connections: int,
    messages: int,
    udp: bool = False,
    extra: Sequence[str] = (),
    core: int | None = 1,
    timeout: float = 300.0,
    line: str = "L0",
    ack_timeout: float | None = None,
) -> dict[str, Any]:
    """One closed-loop dc09blast run; returns its JSON.

    dc09blast's frames repeat from run to run (same accounts, sequences, payloads), so a second
    run on the same receiver would be absorbed as retries by the dedupe window and measure the
    duplicate path. Give each run its own ``line`` (the DC-09 L field is part of the dedupe key)
    to measure fresh signals.

    Bounded: the generator is killed after ``timeout`` seconds; the run then counts as no frame
    ACKed (``timed_out``). ``ack_timeout``: seconds dc09blast waits for each reply.
    """
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        path = Path(out.name)
    command = [
        str(blast),
        "--port",
        str(port),
        "-c",
        str(connections),
        "-m",
        str(messages),
        "--account-count",
        str(min(connections, 10000)),
        "--json",
        str(path),
        "--line",
        line,
        *(["--udp"] if udp else []),
        *(["--ack-timeout", str(ack_timeout)] if ack_timeout is not None else []),
        *extra,
    ]
    try:
        subprocess.run(pinned(command, core), check=False, timeout=timeout, capture_output=True)
        return dict(json.loads(path.read_text()))
    except (subprocess.TimeoutExpired, ValueError, OSError):
        return timed_out_run(connections * messages)
    finally:
        path.unlink(missing_ok=True)


def timed_out_run(frames: int) -> dict[str, Any]:
    """What a generator run that never finished (or wrote no JSON) counts as: nothing ACKed."""
    latency = dict.fromkeys(("p50", "p90", "p99", "max"))
    return {
        "events_per_s": 0.0,
        "latency_ms": latency,
        "acked": 0,
        "frames": frames,
        "timed_out": True,
    }


# The share of a run's frames at or below each percentile: a percentile whose rank falls among
# the frames never ACKed lies beyond the ACK timeout, so it is not the generator's figure (which
# is over the ACKed frames only).
_PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99, "max": 1.0}


def honest_latency(run: dict[str, Any]) -> dict[str, float | None]:
    """A run's ACK latency percentiles counting every frame it sent: None where the percentile
    falls among frames never ACKed (a timed-out run: all None). dc09blast's own percentiles
    are over the ACKed frames only."""
    frames, acked = run["frames"], run["acked"]
    out: dict[str, float | None] = {}
    for key, share in _PERCENTILES.items():
        value = run["latency_ms"].get(key)
        answered = frames > 0 and acked >= share * frames
        known = value is not None and not math.isnan(value)
        out[key] = value if answered and known else None
    return out


def median_latency(values: list[float | None]) -> float | None:
    """The median, a None (beyond the ACK timeout, or a timed-out run) counting as the worst;
    None when the median falls on one."""
    if not values:
        return None
    ordered = sorted(values, key=lambda v: (v is None, v or 0.0))
    middle = len(ordered) // 2
    picked = ordered[middle - 1 : middle + 1] if len(ordered) % 2 == 0 else [ordered[middle]]
    if any(v is None for v in picked):
        return None
    return round(statistics.mean(v for v in picked if v is not None), 3)


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median events/s and latency percentiles over several runs, plus the spread.

    Honest about what went unanswered: a timed-out run counts as 0 events/s and nothing
    ACKed, and a percentile is None (shown as such) where it lies beyond the ACK timeout in
    the median run (``honest_latency``, ``median_latency``)."""
    eps = [r["events_per_s"] or 0.0 for r in runs]
    latencies = [honest_latency(r) for r in runs]
    figures: dict[str, Any] = {
        "runs": len(runs),
        "events_per_s": round(statistics.median(eps), 1),
        "events_per_s_min": round(min(eps), 1),
        "events_per_s_max": round(max(eps), 1),
    }
    for key in _PERCENTILES:
        figures[f"{key}_ms"] = median_latency([each[key] for each in latencies])
    figures["acked"] = sum(r["acked"] for r in runs)
    figures["frames"] = sum(r["frames"] for r in runs)
    figures["timed_out_runs"] = sum(bool(r.get("timed_out")) for r in runs)
    return figures


def write_results(name: str, payload: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
