"""Ingest workers: one process per core, sharing the DC-09 and bridge ports.

Rules:
- The coordinator (the ``receiver serve`` process) starts ``[ingest] workers`` processes and
  runs what must run once: dispatcher, supervisor, registry refresh of the supervised links.
  It holds no panel connection; the single-instance lock is its own.
- Every worker binds the ports with ``SO_REUSEPORT`` (the kernel spreads connections and UDP
  peers among them), decodes, commits to the shared store and ACKs after its own commit. So a
  worker that dies loses nothing it ACKed; the coordinator starts another in its place.
- A retry landing on another worker is still a duplicate: the store decides (journal.py).
- Port 0 (tests) is resolved once by the coordinator, so every worker shares one port.
- The workers are started together, and their TCP ports (DC-09 and bridges) answer only once
  every worker accepts: a panel keeps the worker that accepted it, so the first worker to
  listen would hold every panel that reconnects at start-up (measured before: one worker
  listened 1.1 s before the other). Each worker binds its sockets (``SO_REUSEPORT``) but does
  not listen; a TCP socket joins the port's group only when it listens, so the port refuses
  connections meanwhile. It tells the coordinator (``WORKER_BOUND``) and hands it those TCP
  sockets (``SCM_RIGHTS`` on its pipe). Once every worker has bound (a worker restarted alone:
  at once) the coordinator makes every handed socket listen itself, one call after the other,
  closes its copies and says go (``WORKER_GO``): the port answers for every worker within
  microseconds, however late a worker runs after its go (each worker listening when it ran
  left 0.2 to 12 ms, on a loaded machine, in which the first held every new panel). A worker
  accepts once told go; what connected before waits in its socket's queue. Then it sends
  (dc09 port, bridge port, switch interval applied), and ``serve`` reports
  ``receiver_started`` once every worker did. The UDP socket
  is bound at once: a datagram that arrives meanwhile waits in its buffer (a UDP group
  spreads datagrams by peer, none is kept by the first worker).
- A worker tells its coordinator each commit that stored signals (``WORKER_COMMITTED`` with
  the last seq, on its pipe, at once): the coordinator's dispatcher reads the journal then,
  instead of polling the store 50 times a second. The notice never waits: a pipe full (a
  coordinator far behind) drops it, and the coordinator's slow poll of the store
  (``Journal.watch_other_writers``) finds those signals within its interval. One task writes
  the worker's end of the pipe (its notices, and its counters every second): two writers'
  bytes would interleave.
- SIGTERM to the coordinator: each worker gets SIGTERM and shuts down gracefully (stops
  accepting, ACKs what is committed); a worker that outlives the deadline is killed. A worker
  dies with its coordinator (Linux ``PR_SET_PDEATHSIG``): a killed receiver is all gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal as os_signal
import socket
import struct
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from protocols.errors import StartupError
from receiver.config import Config
from receiver.metrics import Counters
from receiver.tcp_accept import BACKLOG

if TYPE_CHECKING:
    from receiver.journal import Journal

# The start-up handshake on a worker's pipe: the worker's ports are bound (not listening),
# with the count of TCP sockets it hands over, then the coordinator's go (accept now).
WORKER_BOUND = "bound"
WORKER_GO = "go"
# After the start, on the same pipe: (WORKER_COMMITTED, seq), the worker committed signals up
# to that seq; anything else a worker sends is its counters.
WORKER_COMMITTED = "committed"
# Sockets handed over in one message (a worker's: DC-09 and bridges on each address).
_MAX_HANDED = 64

# A worker that keeps dying is restarted at most this often.
_RESTART_PAUSE = 0.5
# How long a worker may take to start listening, and to finish at shutdown.
_START_TIMEOUT = 60.0
_STOP_TIMEOUT = 30.0
# After that deadline: how long a worker whose sentinel closed may take to be reaped, and how
# often stop() looks.
_REAP_GRACE = 0.5
_REAP_POLL = 0.01

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when ``parent`` (its coordinator) dies."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, os_signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the coordinator died before the request took effect
        os._exit(1)


def _reserve_port(host: str, port: int, *, udp: bool) -> socket.socket:
    """A TCP socket bound (not listening) with SO_REUSEPORT, holding the port the workers
    will share; with ``udp``, the port is also free for UDP. Port 0: the kernel picks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if port != 0:
        # Without SO_REUSEPORT first: a port another receiver's workers already share must be
        # refused as in use, never joined (the kernel would spread panels over both).
        for kind in (socket.SOCK_STREAM, *((socket.SOCK_DGRAM,) if udp else ())):
            with socket.socket(family, kind) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
    for _ in range(20):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))
        except OSError:
            sock.close()
            raise
        bound = int(sock.getsockname()[1])
        if not udp:
            return sock
        probe = socket.socket(family, socket.SOCK_DGRAM)
        try:
            probe.bind((host, bound))
        except OSError:
            sock.close()
            if port != 0:
                raise
            continue
        finally:
            probe.close()
        return sock
    raise OSError(f"no port free for both TCP and UDP on {host}")


def _reserved(listen: str, what: str, host: str, port: int, *, udp: bool = False) -> socket.socket:
    """``_reserve_port``, or one StartupError line naming the address."""
    try:
        return _reserve_port(host, port, udp=udp)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise StartupError(f"cannot listen on {listen} ({what}): {reason}") from None


def _with_port(listen: str, port: int) -> str:
    host = listen.rpartition(":")[0]
    return f"{host}:{port}"


@attrs.define
class _Slot:
    number: int
    process: BaseProcess | None = None
    reports: Connection | None = None  # the worker sends its counters here every second
    # The worker's TCP sockets, bound, until the coordinator makes them listen at its go.
    handed: list[socket.socket] = attrs.field(factory=list)
    counters: Counters = attrs.field(factory=Counters)  # the live worker's, as last reported


class WorkerPool:
    """The coordinator's ingest workers: started, watched, restarted, stopped."""

    def __init__(
        self,
        config: Config,
        count: int,
        *,
        target: Callable[[Config, int, Connection, bool | None, int], None],
        json_logs: bool | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        """``target(config, number, ready, json_logs, coordinator_pid)`` runs in each worker
        process; ``ready`` is its two-way pipe to the coordinator. Once its ports are bound it
        calls ``report_bound`` (``WORKER_BOUND`` and its TCP sockets), accepts when it
        receives ``WORKER_GO``, then sends (dc09 port, bridge port, switch interval applied)
        (the ``worker_started`` line shows them), then its counters every second and its
        commit notices (``report_to_coordinator``), each handed to ``on_commit(seq)``."""
        self.count = count
        self.on_commit = on_commit
        self.target = target
        self.json_logs = json_logs
        self.log = structlog.get_logger("receiver.workers")
        self._context = multiprocessing.get_context("spawn")
        self._stopping = False
        self._retired = Counters()  # what workers that exited had counted
        self.slots = [_Slot(number) for number in range(count)]
        self.config = config
        self.ports: tuple[int, int | None] | None = None

    @property
    def pids(self) -> list[int]:
        return [s.process.pid for s in self.slots if s.process is not None and s.process.pid]

    async def _spawn(self, slot: _Slot, deadline: float) -> Connection:
        """Start the slot's worker; its pipe, once the worker has bound its ports and handed
        its TCP sockets over (kept in ``slot.handed`` until the go)."""
        channel, child = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=self.target,
            args=(self.config, slot.number, child, self.json_logs, os.getpid()),
            name=f"receiver-worker-{slot.number}",
        )
        process.start()
        child.close()  # the worker holds the only other end: its death reads as EOF
        slot.process = process
        try:
            message = await _receive(channel, deadline)
        except (EOFError, OSError, trio.TooSlowError) as exc:
            channel.close()
            raise OSError(f"ingest worker {slot.number} did not start: {exc!r}") from exc
        match message:
            case (str() as said, int() as count) if said == WORKER_BOUND:
                pass
            case _:
                channel.close()
                raise OSError(f"ingest worker {slot.number} did not start: sent {message!r}")
        if count:
            try:
                with trio.fail_at(deadline):
                    await trio.lowlevel.wait_readable(channel.fileno())
                slot.handed = receive_sockets(channel, count)
            except (OSError, trio.TooSlowError) as exc:
                channel.close()
                raise OSError(f"ingest worker {slot.number} did not start: {exc!r}") from exc
        return channel

    async def _listening(
        self, slot: _Slot, channel: Connection, deadline: float
    ) -> tuple[int, int | None]:
        """Wait until the slot's worker, told to go, listens; its (dc09 port, bridge port)."""
        try:
            dc09_port, bridge_port, switch_interval = await _receive(channel, deadline)
        except (EOFError, OSError, trio.TooSlowError, ValueError, TypeError) as exc:
            channel.close()
            raise OSError(f"ingest worker {slot.number} did not start: {exc!r}") from exc
        slot.reports = channel
        slot.counters = Counters()
        assert slot.process is not None
        self.log.info(
            "worker_started",
            worker=slot.number,
            pid=slot.process.pid,
            switch_interval=switch_interval,  # [ingest] switch_interval, as the worker applied it
        )
        return int(dc09_port), bridge_port

    async def _start(self, slot: _Slot) -> tuple[int, int | None]:
        """Start one worker alone (a restart): it listens as soon as its ports are bound."""
        deadline = trio.current_time() + _START_TIMEOUT
        channel = await self._spawn(slot, deadline)
        _open_ports([slot])
        _say_go(slot, channel)
        return await self._listening(slot, channel, deadline)

    async def run(
        self, *, task_status: trio.TaskStatus[tuple[int, int | None]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start every worker; report (dc09 port, bridge port); restart any that dies."""
        dc09_host, dc09_port = self.config.dc09.address
        bridge_host, bridge_port = self.config.bridge.address
        reserved = [
            _reserved(
                self.config.dc09.listen,
                "DC-09 TCP and UDP" if self.config.dc09.udp else "DC-09 TCP",
                dc09_host,
                dc09_port,
                udp=self.config.dc09.udp,
            )
        ]
        try:
            reserved.append(
                _reserved(self.config.bridge.listen, "video bridges", bridge_host, bridge_port)
            )
            self.config = attrs.evolve(
                self.config,
                dc09=attrs.evolve(
                    self.config.dc09,
                    listen=_with_port(self.config.dc09.listen, reserved[0].getsockname()[1]),
                ),
                bridge=attrs.evolve(
                    self.config.bridge,
                    listen=_with_port(self.config.bridge.listen, reserved[1].getsockname()[1]),
                ),
            )
            try:
                await self._start_all()
            finally:
                for sock in reserved:
                    sock.close()
            reserved = []
            assert self.ports is not None
            task_status.started(self.ports)
            async with trio.open_nursery() as nursery:
                for slot in self.slots:
                    nursery.start_soon(self._keep_running, slot)
        finally:
            for sock in reserved:
                sock.close()
            with trio.CancelScope(shield=True):
                await self.stop()

    async def _start_all(self) -> None:
        """Start every worker at once, and tell them to listen once every one has bound its
        ports: panels that connect while the receiver starts are then spread over all of
        them (a TCP panel stays on the worker that accepted it; when each listened as soon as
        it could, the first took them all). The first worker that fails to start is the
        error raised."""
        deadline = trio.current_time() + _START_TIMEOUT
        failures: list[OSError] = []
        bound: dict[int, Connection] = {}

        async def spawn(slot: _Slot) -> None:
            try:
                bound[slot.number] = await self._spawn(slot, deadline)
            except OSError as exc:
                failures.append(exc)

        async def listening(slot: _Slot, channel: Connection) -> None:
            try:
                self.ports = await self._listening(slot, channel, deadline)
            except OSError as exc:
                failures.append(exc)

        async with trio.open_nursery() as starting:
            for slot in self.slots:
                starting.start_soon(spawn, slot)
        try:
            if not failures:
                _open_ports(self.slots)  # every worker's port answers within microseconds
                for slot in self.slots:
                    _say_go(slot, bound[slot.number])
        except OSError as exc:
            failures.append(exc)
        if failures:
            for slot in self.slots:  # closed once stopped: SIGTERM comes first
                slot.reports = bound.get(slot.number)
            raise failures[0]
        async with trio.open_nursery() as starting:
            for slot in self.slots:
                starting.start_soon(listening, slot, bound[slot.number])
        if failures:
            raise failures[0]

    def counters(self) -> Counters:
        """Every worker's counters added up: the live ones as last reported (about once a
        second), plus what workers that exited had counted."""
        total = Counters()
        total.add(self._retired)
        for slot in self.slots:
            total.add(slot.counters)
        return total

    async def _read_reports(self, slot: _Slot, reports: Connection) -> None:
        """Take the worker's counter reports and commit notices until its end of the pipe
        closes."""
        try:
            while True:
                await trio.lowlevel.wait_readable(reports.fileno())
                try:
                    message = reports.recv()
                except (EOFError, OSError):
                    return
                match message:
                    case (str() as said, int() as seq) if said == WORKER_COMMITTED:
                        if self.on_commit is not None:
                            self.on_commit(seq)
                    case Counters():
                        slot.counters = message
                    case _:
                        self.log.warning("worker_report_unknown", worker=slot.number)
        finally:
            reports.close()

    async def _keep_running(self, slot: _Slot) -> None:
        while True:
            process = slot.process
            assert process is not None
            async with trio.open_nursery() as watching:
                if slot.reports is not None:
                    watching.start_soon(self._read_reports, slot, slot.reports)
                    slot.reports = None
                await trio.lowlevel.wait_readable(process.sentinel)
                process.join()
                watching.cancel_scope.cancel()
            self._retired.add(slot.counters)
            slot.counters = Counters()
            if self._stopping:
                return
            self.log.error(
                "worker_exited", worker=slot.number, pid=process.pid, exitcode=process.exitcode
            )
            await trio.sleep(_RESTART_PAUSE)
            try:
                await self._start(slot)
            except OSError as exc:
                self.log.error("worker_restart_failed", worker=slot.number, error=str(exc))

    async def stop(self) -> None:
        """SIGTERM every worker, wait for each to finish; kill any past the deadline."""
        self._stopping = True
        running = [s.process for s in self.slots if s.process is not None and s.process.is_alive()]
        for process in running:
            process.terminate()
        with trio.move_on_after(_STOP_TIMEOUT):
            for process in running:
                await trio.lowlevel.wait_readable(process.sentinel)
        # A sentinel closes a moment before its process can be reaped: a short grace, awaited
        # (a blocking join froze the coordinator's loop), then a kill for what still runs.
        with trio.move_on_after(_REAP_GRACE):
            while any(process.is_alive() for process in running):
                await trio.sleep(_REAP_POLL)
        for process in running:
            if process.is_alive():
                self.log.error("worker_killed", pid=process.pid)
                process.kill()
        while any(process.is_alive() for process in running):  # killed: gone in a moment
            await trio.sleep(_REAP_POLL)
        for process in running:
            process.join()  # reaped already: at once
        for slot in self.slots:
            if slot.reports is not None:  # a pipe no task reads (the start failed)
                slot.reports.close()
                slot.reports = None
            _close_handed(slot)


async def _receive(channel: Connection, deadline: float) -> Any:
    """The next message on a worker's pipe, by ``deadline`` (trio.TooSlowError)."""
    with trio.fail_at(deadline):
        await trio.lowlevel.wait_readable(channel.fileno())
    return channel.recv()


def report_bound(ready: Connection, sockets: list[socket.socket]) -> None:
    """The worker's side: its ports are bound; hand its TCP ``sockets`` (bound, not
    listening) to the coordinator, which makes them listen at its go."""
    ready.send((WORKER_BOUND, len(sockets)))
    if sockets:
        with socket.fromfd(ready.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as pipe:
            socket.send_fds(pipe, [b"s"], [sock.fileno() for sock in sockets])


def receive_sockets(channel: Connection, count: int) -> list[socket.socket]:
    """The coordinator's side of ``report_bound``: the ``count`` sockets a worker handed."""
    if not 0 < count <= _MAX_HANDED:
        raise OSError(f"a worker offered {count} sockets")
    with socket.fromfd(channel.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as pipe:
        _, fds, flags, _ = socket.recv_fds(pipe, 1, _MAX_HANDED)
    handed = [socket.socket(fileno=fd) for fd in fds]
    if len(handed) != count or flags & socket.MSG_CTRUNC:
        for sock in handed:
            sock.close()
        raise OSError(f"a worker handed {len(handed)} sockets of {count}")
    return handed


def _open_ports(slots: list[_Slot]) -> None:
    """Make every handed socket of ``slots`` listen, one call after the other (no worker
    needs to run for its port to answer), then close the coordinator's copies: a listening
    socket left open here would take panels for a worker that died."""
    try:
        # One port after the other: every worker's DC-09 sockets, then every bridge socket.
        handed = sorted((s.getsockname()[1], s.fileno(), s) for slot in slots for s in slot.handed)
        for _, _, sock in handed:
            sock.listen(BACKLOG)
    finally:
        for slot in slots:
            _close_handed(slot)


def _close_handed(slot: _Slot) -> None:
    for sock in slot.handed:
        sock.close()
    slot.handed = []


def _say_go(slot: _Slot, channel: Connection) -> None:
    """Tell a worker whose ports listen to accept (a dead one: OSError)."""
    try:
        channel.send(WORKER_GO)
    except OSError as exc:
        channel.close()
        raise OSError(f"ingest worker {slot.number} did not start: {exc!r}") from exc


def _framed(message: Any) -> bytes:
    """``message`` as ``Connection.send`` puts it on the pipe (length, then the pickle)."""
    payload = bytes(ForkingPickler.dumps(message))
    return struct.pack("!i", len(payload)) + payload


class CommitNotices:
    """A worker's commit notices on its pipe to the coordinator, written without ever waiting:
    a pipe that cannot take a whole notice now drops it (the coordinator's poll of the store
    covers what a lost notice would have said). A notice is a few dozen bytes, which a Unix
    stream socket takes whole or not at all."""

    def __init__(self, ready: Connection, counters: Counters) -> None:
        # A socket object on a copy of the pipe's descriptor, for MSG_DONTWAIT: the pipe's own
        # descriptor stays blocking for the counters, sent from a thread.
        self._pipe = socket.socket(fileno=os.dup(ready.fileno()))
        self._counters = counters

    def send(self, seq: int) -> bool:
        """Tell ``seq``; False when the pipe can carry nothing more (the coordinator is gone,
        or a notice went out in part, which would tear every message after it)."""
        frame = _framed((WORKER_COMMITTED, seq))
        try:
            sent = self._pipe.send(frame, socket.MSG_DONTWAIT)
        except BlockingIOError:
            self._counters.inc("commit_notices_dropped")
            return True
        except OSError:
            return False
        return sent == len(frame)

    def close(self) -> None:
        self._pipe.close()


async def report_to_coordinator(
    ready: Connection, journal: Journal, counters: Counters, interval: float = 1.0
) -> None:
    """The worker's side of its pipe once it runs, from this one task: a commit notice as soon
    as its journal committed signals (one for every commit the task keeps up with; a notice
    carries the newest seq, so one covers the commits before it), and a copy of ``counters``
    every ``interval`` (the coordinator's /metrics and status page add every worker's up).
    A coordinator gone ends the reports, not the worker."""
    notices = CommitNotices(ready, counters)
    told = journal.last_seq
    try:
        while True:
            with trio.move_on_after(interval):
                while True:
                    if journal.last_seq <= told:  # else committed while the counters went
                        await journal.wait_committed()
                    told = journal.last_seq
                    if not notices.send(told):
                        return  # the coordinator's poll of the store still finds them
            report = Counters()
            report.add(counters)  # a copy: the hot path goes on counting meanwhile
            try:
                # In a thread: a coordinator slow to read must never stall this worker's ACKs.
                await trio.to_thread.run_sync(ready.send, report, abandon_on_cancel=True)
            except (BrokenPipeError, OSError):
                return
    finally:
        notices.close()
        ready.close()
