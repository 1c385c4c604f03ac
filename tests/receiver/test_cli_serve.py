"""`receiver serve` as a station's engineer starts it: a receiver that cannot start says why in
one line on stderr and exits 1 (port in use, an address it cannot bind, a store it cannot open,
a store another receiver holds, a [dc09] station the registry cannot serve); one that starts
logs what it runs on."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from receiver import __version__
from receiver.cli import main
from receiver.config import parse_config
from receiver.service import Ports, log_startup
from tests.conftest import unavailable

SCRIPT = Path(sys.executable).with_name("receiver")


def write_config(
    folder: Path, *, dc09: str = "127.0.0.1:0", store: str = "", extra: str = ""
) -> Path:
    path = folder / "receiver.toml"
    path.write_text(
        f"outputs = []\n[store]\npath = {json.dumps(store or str(folder / 'r.sqlite3'))}\n"
        f"[dc09]\nlisten = {json.dumps(dc09)}\n{extra}\n[bridge]\nlisten = '127.0.0.1:0'\n",
        encoding="utf-8",
    )
    return path


def serve(config: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """``receiver serve --config FILE`` that is expected to refuse (and so to end by itself)."""
    return subprocess.run(
        [*prefix, str(SCRIPT), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={**os.environ, "RECEIVER_CONFIG": ""},
    )


def only_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_port_in_use_is_one_line(tmp_path: Path, taken_port: int) -> None:
    """Another program on the DC-09 port: one line naming the address, exit 1."""
    line = only_line(serve(write_config(tmp_path, dc09=f"127.0.0.1:{taken_port}")))
    assert line == (
        f"receiver: cannot listen on 127.0.0.1:{taken_port} (DC-09 TCP and UDP): "
        "Address already in use"
    )


def test_bridge_port_in_use_is_one_line(tmp_path: Path, taken_port: int) -> None:
    """The same for the bridge listener."""
    path = write_config(tmp_path)
    path.write_text(
        path.read_text().replace("127.0.0.1:0'", f"127.0.0.1:{taken_port}'"), encoding="utf-8"
    )
    result = serve(path)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        f"receiver: cannot listen on 127.0.0.1:{taken_port} (video bridges): Address already in use"
    )
    assert "Traceback" not in result.stderr


def test_address_that_is_not_ours_is_one_line(tmp_path: Path) -> None:
    """An address of no interface here (TEST-NET-1) cannot be bound: one line, exit 1."""
    line = only_line(serve(write_config(tmp_path, dc09="192.0.2.1:9000")))
    assert line.startswith("receiver: cannot listen on 192.0.2.1:9000 (DC-09 TCP and UDP): ")


def test_store_folder_that_cannot_be_created_is_one_line(tmp_path: Path) -> None:
    """A store path under a file: its folder cannot be created."""
    (tmp_path / "file").write_text("x")
    line = only_line(serve(write_config(tmp_path, store=str(tmp_path / "file" / "r.sqlite3"))))
    folder = tmp_path / "file"
    assert (
        line == f"receiver: cannot create the store's folder {folder}: it is a file, not a folder"
    )


def test_store_that_is_not_a_database_is_one_line(tmp_path: Path) -> None:
    """A store path naming some other file: one line naming it."""
    (tmp_path / "r.sqlite3").write_bytes(b"not a database" * 400)
    line = only_line(serve(write_config(tmp_path)))
    assert line == f"receiver: cannot open store {tmp_path / 'r.sqlite3'}: file is not a database"


def test_read_only_store_is_one_line(tmp_path: Path) -> None:
    """A store on a read-only file system (a read-only bind mount in a private mount namespace,
    which works for root too): one line saying so, exit 1."""
    store = tmp_path / "store"
    store.mkdir()
    config = write_config(tmp_path, store=str(store / "r.sqlite3"))
    assert main(["--config", str(config), "stations", "add", "S1"]) == 0
    mount = [shutil.which("unshare") or "unshare", "-rm", "sh", "-c"]
    probe = subprocess.run(
        [*mount, f"mount --bind -o ro {store} {store}"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        unavailable("no private mount namespace here (unshare -rm)")
    result = serve(config, *mount, f'mount --bind -o ro {store} {store} && exec "$0" "$@"')
    line = only_line(result)
    assert line.startswith("receiver: cannot ")
    assert str(store / "r.sqlite3") in line
    assert "read-only file system" in line.lower()


def test_two_stations_and_no_dc09_station_is_refused(tmp_path: Path) -> None:
    """With two stations, `[dc09] station = ""` would store every frame as an unknown account:
    `serve` refuses and says to set it; naming a station that does not exist is refused too."""
    config = write_config(tmp_path)
    for name in ("S1", "S2"):
        assert main(["--config", str(config), "stations", "add", name]) == 0
    line = only_line(serve(config))
    assert "2 stations (S1, S2)" in line
    assert '[dc09] station = "NAME"' in line
    line = only_line(serve(write_config(tmp_path, extra="station = 'S3'")))
    assert line == (
        "receiver: [dc09] station 'S3' is not in the registry (stations: S1, S2); "
        "add it or fix [dc09] station"
    )


@pytest.mark.slow
def test_second_receiver_on_the_same_store_is_refused(tmp_path: Path) -> None:
    """One receiver per store: a second `serve` on the same file names the first one's pid;
    the first one logged what it runs on and keeps running; after it stops, the store is free."""
    config = write_config(tmp_path)
    first = subprocess.Popen(
        [str(SCRIPT), "serve", "--config", str(config)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RECEIVER_CONFIG": ""},
    )
    try:
        assert first.stderr is not None
        started = None
        for _ in range(50):  # bounded: a few log lines come before receiver_started
            line = first.stderr.readline()
            if not line:
                break
            if '"receiver_started"' in line:
                started = json.loads(line)
                break
        assert started is not None, "the first receiver did not start"
        assert started["version"] == __version__
        assert started["config_file"] == str(config)
        assert started["store"] == str(tmp_path / "r.sqlite3")
        assert started["dc09"] == "127.0.0.1:0"
        assert started["dc09_port"] > 0
        assert started["switch_interval"] == 0.0005  # [ingest]'s default applied, not Python's
        line = only_line(serve(config))
        assert line.startswith(
            f"receiver: store {tmp_path / 'r.sqlite3'} is in use by another receiver "
            f"(process {first.pid}, "
        )
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 0
    assert (tmp_path / "r.sqlite3.lock").read_text() == ""


def test_startup_log_warns_for_a_listener_off_loopback() -> None:
    """`listen = "0.0.0.0:9000"` (the station network) is logged as a warning at start."""
    config = parse_config("[dc09]\nlisten = '0.0.0.0:9000'\n[log]\nlevel = 'debug'\n")
    with capture_logs() as logs:
        log_startup(structlog.get_logger("receiver"), config, None, Ports(dc09=9000, bridge=9100))
    events = {e["event"]: e for e in logs}
    assert events["receiver_started"]["config_file"] == "(embedded default)"
    assert events["receiver_started"]["outputs"] == ["spool (spool var/spool)"]
    warning = events["listener_not_loopback"]
    assert (warning["log_level"], warning["listener"], warning["address"]) == (
        "warning",
        "dc09",
        "0.0.0.0:9000",
    )
    assert [e["listener"] for e in logs if e["event"] == "listener_not_loopback"] == ["dc09"]
