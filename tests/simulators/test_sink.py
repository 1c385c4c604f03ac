"""receiver-sim sink: the console script as a QA person runs it, fed by the real outputs."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import trio

from adapters.sentinel import transport
from adapters.sentinel.client import SentinelOutput
from adapters.sentinel.package import Package, validate
from adapters.surgard.output import SurGardOutput
from simulators.cli import main
from tests.adapters.test_sentinel_package import make_signal


def start(*args: str) -> tuple[subprocess.Popen[str], int]:
    """Start the sink and return it with the port it printed."""
    process = subprocess.Popen(
        [sys.executable, "-m", "simulators.cli", "sink", *args, "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    assert first.startswith("listening on 127.0.0.1:"), first
    return process, int(first.rsplit(":", 1)[1])


def stop(process: subprocess.Popen[str]) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=20)
    return process.returncode, out


async def test_sentinel_sink_files_packages_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Packages sent with the right passkey land as DIR/<id>.xml; SIGTERM ends it with a summary."""
    process, port = start("sentinel", "--passkey", "k1", "--out", str(tmp_path))
    try:
        output = SentinelOutput("s", ("127.0.0.1", port), passkey="k1", timeout=10)
        await output.deliver(make_signal(), "pkg-1")
        await output.deliver(make_signal(), "pkg-1")
        await output.aclose()
    finally:
        code, out = stop(process)
    assert code == 0
    assert out.strip().endswith("packages=1 duplicates=1 invalid=0 heartbeats=0 refused=0 lost=0")
    assert [p.name for p in tmp_path.iterdir()] == ["pkg-1.xml"]
    validate((tmp_path / "pkg-1.xml").read_bytes())


async def test_surgard_sink_appends_lines(tmp_path: Path) -> None:
    """Each SG message sent over socket:// is one line in FILE, in order."""
    out_file = tmp_path / "sg.txt"
    process, port = start("surgard", "--out", str(out_file))
    try:
        output = SurGardOutput("sg", f"socket://127.0.0.1:{port}", ack_timeout=10)
        await output.deliver(make_signal(), "pkg-1")
        await output.deliver(make_signal(account="5678"), "pkg-2")
        await output.aclose()
    finally:
        code, out = stop(process)
    assert code == 0
    assert "messages=2 heartbeats=0 invalid=0" in out
    assert out_file.read_text().splitlines() == [
        "501001 181234E13001003",
        "501001 185678E13001003",
    ]


def test_duration_bounds_the_run(tmp_path: Path) -> None:
    """With --duration the sink stops by itself and reports what it got."""
    process = subprocess.run(
        [
            sys.executable, "-m", "simulators.cli", "sink", "surgard",
            "--listen", "127.0.0.1:0", "--out", str(tmp_path / "x"), "--duration", "0.1",
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert process.returncode == 0
    assert process.stdout.splitlines()[-1] == "messages=0 heartbeats=0 invalid=0"


def test_bad_listen_address_is_bad_input(tmp_path: Path, capsys: object) -> None:
    """A --listen without a port exits 2 with one line on stderr."""
    code = main(["sink", "sentinel", "--listen", "localhost", "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert err.count("\n") == 1
    assert "HOST:PORT" in err


async def test_unanswered_frames_do_not_crash_the_sink(tmp_path: Path) -> None:
    """Garbage on the Sentinel port closes that connection only; the next client is served."""
    process, port = start("sentinel", "--out", str(tmp_path))
    try:
        with trio.fail_after(20):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
            assert await stream.receive_some(100) == b""
        output = SentinelOutput("s", ("127.0.0.1", port), timeout=10)
        await output.deliver(make_signal(), "pkg-9")
        await output.aclose()
    finally:
        code, _ = stop(process)
    assert code == 0
    assert (tmp_path / "pkg-9.xml").exists()


def test_a_port_in_use_or_an_address_not_here_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """The sinks as typed: a port another program holds, or an address this host does not
    have (TEST-NET, never sent to), is one line naming the sink and the address; exit 1."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        for kind, out, listen, expected in (
            ("sentinel", tmp_path, f"127.0.0.1:{port}", "Address already in use"),
            ("surgard", tmp_path / "sg.txt", f"127.0.0.1:{port}", "Address already in use"),
            ("sentinel", tmp_path, "192.0.2.1:5100", "Cannot assign requested address"),
        ):
            command = [sys.executable, "-m", "simulators.cli", "sink", kind, "--out", str(out)]
            done = subprocess.run(
                [*command, "--listen", listen],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert (done.returncode, done.stdout) == (1, ""), done.stderr
            assert done.stderr.splitlines() == [
                f"receiver-sim sink: {kind} sink: cannot listen on {listen}: {expected}"
            ]


def reset(sock: trio.socket.SocketType) -> None:
    """Close ``sock`` with an RST, as a client that crashed or timed out does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_client_that_resets_is_counted_and_the_next_one_served(tmp_path: Path) -> None:
    """Clients that send a package and reset the connection before its ACK (SO_LINGER 0):
    the sink files each package, counts each connection lost with a line on stderr, and
    serves the next client; its summary counts them."""
    process, port = start("sentinel", "--out", str(tmp_path))
    try:
        for number in range(3):
            xml = Package.from_signal(make_signal(), f"pkg-{number}").to_xml()
            with trio.fail_after(20):
                client = await trio.open_tcp_stream("127.0.0.1", port)
                await client.send_all(transport.encode(transport.Auth("any")))
                reader = transport.FrameReader()
                while (event := reader.next_event()) is transport.NEED_DATA:
                    reader.receive_data(await client.receive_some(4096))
                assert event == transport.AuthAccepted()
                await client.send_all(transport.encode(transport.PackageFrame(xml)))
                reset(client.socket)
                while not (tmp_path / f"pkg-{number}.xml").exists():
                    await trio.sleep(0.01)
        output = SentinelOutput("s", ("127.0.0.1", port), timeout=10)
        await output.deliver(make_signal(), "pkg-9")
        await output.aclose()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pkg-0.xml",
        "pkg-1.xml",
        "pkg-2.xml",
        "pkg-9.xml",
    ]
    assert out.strip().endswith("packages=4 duplicates=0 invalid=0 heartbeats=0 refused=0 lost=3")
    assert err.count("connection lost") == 3, err
