"""Two receiver nodes on one PostgreSQL, one of them killed mid-load: nothing is lost.

Node A and node B are ``receiver serve`` processes with their own ports and ``[node] name``, on
one throwaway database, delivering to one Sentinel automation sink (run here, recording what
arrives and when). The load is ``receiver-sim panel --target A --backup B`` as typed. Once the
sink has packages from A, A is killed with SIGKILL. Then:
- every frame the simulator saw ACKed is stored exactly once (retries to B of frames A stored
  are absorbed by the database's unique dedupe key);
- every stored signal reaches the sink, at least once, first arrivals in journal order per
  account;
- delivery resumes from B within the lease (the measured timings are printed);
- the supervised panel that never reports has exactly one trouble, though A opened it and B
  took supervision over.
"""

from __future__ import annotations

import contextvars
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
import trio

from adapters.sentinel import transport
from adapters.sentinel.package import parse_document
from receiver.cli import main as receiver_cli
from simulators.sink import SentinelSink

pytestmark = pytest.mark.slow

LEASE = 3.0
ACCOUNTS = [f"{1000 + n}" for n in range(8)]
SILENT = "2000"  # supervised, never reports: its trouble opens on A, B must not open it again
FRAMES = 480


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@attrs.define
class Arrival:
    connection: int
    package_id: str
    at: float


_CONNECTION: contextvars.ContextVar[int] = contextvars.ContextVar("connection", default=0)


class RecordingSink(SentinelSink):
    """The Sentinel sink, noting each package's arrival: its connection, id and time."""

    def __init__(self, out: Path) -> None:
        super().__init__(out, passkey="secret")
        self.arrivals: list[Arrival] = []
        self._connections = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self._connections += 1
        _CONNECTION.set(self._connections)  # each connection is a trio task of its own
        try:
            await super().handle(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # node A killed while the sink answered it (SentinelSink lets this out)

    def _file(self, xml: bytes) -> transport.Ack | transport.Nak:
        answer = super()._file(xml)
        package_id = str(parse_document(xml).get("id"))
        self.arrivals.append(Arrival(_CONNECTION.get(), package_id, time.monotonic()))
        return answer


@attrs.define
class NodeProcess:
    name: str
    config: Path
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "receiver.cli", "--config", str(self.config), "serve"]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

    def wait_listening(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{self.name} did not listen:\n{self.log.read_text()[-3000:]}")

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{name}"' in line:
                found.append(json.loads(line))
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def write_node(folder: Path, name: str, url: str, sink_port: int) -> NodeProcess:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = folder / "receiver.toml"
    config.write_text(
        f"""
log_signals = false
[store]
url = "{url}"
[node]
name = "{name}"
lease = {LEASE}
[dc09]
listen = "127.0.0.1:{port}"
station = "S1"
[bridge]
listen = "127.0.0.1:{free_port()}"
[console]
listen = ""
[ingest]
workers = 1
[supervision]
check_interval = 0.2
[[outputs]]
name = "xml"
kind = "sentinel"
address = "127.0.0.1:{sink_port}"
passkey = "secret"
timeout = 2.0
heartbeat = 30.0
""",
        encoding="utf-8",
    )
    return NodeProcess(name, config, port, folder / "receiver.log")


def stored(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        return list(
            conn.execute(
                "SELECT seq, id, source, account, sequence, code, qualifier, repeats "
                "FROM signals ORDER BY seq"
            ).fetchall()
        )


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[list[NodeProcess]]:
    made: list[NodeProcess] = []
    yield made
    for node in made:
        node.stop()


async def test_a_node_killed_mid_load_loses_nothing_and_the_other_takes_over(
    tmp_path: Path, pg_url: str, nodes: list[NodeProcess]
) -> None:
    sink = RecordingSink(tmp_path / "sink")
    async with trio.open_nursery() as nursery:
        sink_port = await nursery.start(sink.serve, "127.0.0.1", 0)
        a = write_node(tmp_path / "a", "receiver-a", pg_url, sink_port)
        b = write_node(tmp_path / "b", "receiver-b", pg_url, sink_port)
        setup = [
            ["stations", "add", "S1"],
            ["dealers", "add", "D1"],
            ["sites", "add", "Main", "--dealer", "D1"],
            *(
                ["accounts", "add", "--station", "S1", n, "--site", "Main", "--supervision", "60"]
                for n in ACCOUNTS
            ),
            ["accounts", "add", "--station", "S1", SILENT, "--site", "Main", "--supervision", "1"],
        ]
        for command in setup:  # the CLI's main, as typed (no interpreter start per command)
            code = await trio.to_thread.run_sync(
                receiver_cli, ["--config", str(a.config), *command]
            )
            assert code == 0, command
        nodes += [a, b]
        a.start()
        await trio.to_thread.run_sync(a.wait_listening)
        with trio.fail_after(20):  # A holds the output and the supervisor before B starts
            while {"output:xml", "supervisor"} - {e["lease"] for e in a.events("lease_acquired")}:
                await trio.sleep(0.05)
        b.start()
        await trio.to_thread.run_sync(b.wait_listening)

        load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "simulators.cli",
                "panel",
                "--target",
                f"127.0.0.1:{a.port}",
                "--backup",
                f"127.0.0.1:{b.port}",
                "--account",
                ACCOUNTS[0],
                "--accounts",
                str(len(ACCOUNTS)),
                "--count",
                str(FRAMES),
                "--connections",
                "8",
                "--rate",
                "60",
                "--timeout",
                "2",
                "--retries",
                "5",
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with trio.fail_after(20):  # mid-load: A has delivered a good part, and a trouble
            while len(sink.arrivals) < FRAMES // 3:
                await trio.sleep(0.02)
        assert a.process is not None
        os.kill(a.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        connections_of_a = {arrival.connection for arrival in sink.arrivals}
        out, err = await trio.to_thread.run_sync(load.communicate, None, 60)
        summary = json.loads(out.strip().splitlines()[-1])
        assert load.returncode == 0, (out, err)

        rows = stored(pg_url)
        with trio.fail_after(20):  # everything stored reaches the sink
            while {r["id"] for r in stored(pg_url)} - {x.package_id for x in sink.arrivals}:
                await trio.sleep(0.1)
        rows = stored(pg_url)
        nursery.cancel_scope.cancel()

    # Every frame the simulator saw ACKed is stored exactly once.
    panel_rows = [r for r in rows if r["source"] == "dc09"]
    assert summary["acked_events"] == FRAMES
    assert len(panel_rows) == FRAMES
    assert len({(r["account"], r["sequence"]) for r in panel_rows}) == FRAMES
    assert set(summary["acked_at"]) == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}

    # Every stored signal reached the sink; first arrivals in journal order per account.
    first: dict[str, int] = {}
    for index, arrival in enumerate(sink.arrivals):
        first.setdefault(arrival.package_id, index)
    assert {r["id"] for r in rows} <= set(first)
    by_account: dict[str, list[tuple[int, int]]] = {}
    for row in rows:
        by_account.setdefault(row["account"] or "", []).append((row["seq"], first[row["id"]]))
    for account, pairs in by_account.items():
        arrival_order = [seq for seq, _ in sorted(pairs, key=lambda p: p[1])]
        assert arrival_order == sorted(arrival_order), f"account {account} out of order"

    # Delivery resumed from B within the lease.
    from_b = [x for x in sink.arrivals if x.connection not in connections_of_a]
    assert from_b, "node B delivered nothing"
    resumed = from_b[0].at - killed
    took_over = [e for e in b.events("lease_acquired") if e["lease"] == "output:xml"]
    assert took_over, "node B never took the output's lease"
    print(
        f"failover: SIGKILL of A to B's first delivery {resumed:.2f} s (lease {LEASE} s); "
        f"frames ACKed by A {summary['acked_at'].get(f'127.0.0.1:{a.port}')}, "
        f"by B {summary['acked_at'].get(f'127.0.0.1:{b.port}')}; panel path switches "
        f"{summary['switches']}; ACK p99 {summary['latency_p99_ms']} ms, "
        f"max {summary['latency_max_ms']} ms"
    )
    assert resumed <= LEASE * 1.5 + 1.0

    # One trouble for the silent panel, though supervision changed hands.
    silent = [r for r in rows if r["source"] == "supervision" and r["account"] == SILENT]
    assert [(r["qualifier"], r["code"]) for r in silent] == [("E", "356")]
    troubles: dict[str, list[str]] = {}
    for row in rows:
        if row["source"] == "supervision":
            troubles.setdefault(row["account"], []).append(row["qualifier"])
    for account, qualifiers in troubles.items():
        assert "EE" not in "".join(qualifiers), f"account {account} got two troubles in a row"
