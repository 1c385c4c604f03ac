"""A running receiver for integration tests: real SQLite file, real loopback sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import attrs
import pytest
import trio

from receiver.cli import main as receiver_cli
from receiver.config import Config, parse_config
from receiver.service import Ports, Service


@attrs.define
class RunningReceiver:
    service: Service
    ports: Ports
    config_path: Path
    db: Path

    def cli(self, *args: str) -> int:
        return receiver_cli(["--config", str(self.config_path), *args])


def write_config(tmp_path: Path, extra: str = "", *, store: str | None = None) -> Path:
    """A config on a throwaway store; ``extra`` lines go in [dc09] and may open more sections.

    ``store`` is the ``[store]`` section (``Backend.store_toml()``: SQLite or PostgreSQL); by
    default a SQLite file in ``tmp_path``.

    Both listeners use port 0 so test runs never collide (unless ``extra`` sets [bridge]); the
    console is off unless ``extra`` opens [console]; one ingest process unless ``extra`` opens
    [ingest] (the worker tests do).
    """
    bridge = "" if "[bridge]" in extra else '[bridge]\nlisten = "127.0.0.1:0"\n'
    # The console is on in the embedded default (port 8080); tests that want it open [console].
    console = "" if "[console]" in extra else '[console]\nlisten = ""\n'
    ingest = "" if "[ingest]" in extra else "[ingest]\nworkers = 1\n"
    store_section = store or f'[store]\npath = "{tmp_path / "receiver.sqlite3"}"\n'
    path = tmp_path / "receiver.toml"
    path.write_text(
        f"""
log_signals = true
outputs = []
{store_section}{bridge}{console}{ingest}[dc09]
listen = "127.0.0.1:0"
{extra}
""",
        encoding="utf-8",
    )
    return path


def registry_setup(config_path: Path, *commands: list[str]) -> None:
    for command in commands:
        code = receiver_cli(["--config", str(config_path), *command])
        assert code == 0, f"registry command failed: {command}"


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path)


async def start_receiver(nursery: trio.Nursery, config_path: Path) -> RunningReceiver:
    config: Config = parse_config(config_path.read_text(encoding="utf-8"))
    service = Service(config)
    ports = await nursery.start(service.run)
    return RunningReceiver(service, ports, config_path, Path(config.store.path))


@pytest.fixture
async def receiver(config_path: Path) -> AsyncIterator[RunningReceiver]:
    """A receiver with station S1 and accounts 1234 (plain) and 5678 (AES key, hex)."""
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
        [
            "accounts",
            "add",
            "--station",
            "S1",
            "5678",
            "--site",
            "Main Street",
            "--key",
            "000102030405060708090A0B0C0D0E0F",
            "--key-format",
            "hex",
        ],
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        yield running
        running.service.request_shutdown()


# -- the registry on either backend -------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a registry behaviour test keeps its store: a SQLite file, then (same test) an
    emptied PostgreSQL database of the session's throwaway cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "r.sqlite3")
    url: str = request.getfixturevalue("pg_url")
    return url


def store_section(location: str) -> str:
    """The ``[store]`` section of a configuration on ``location`` (a path or a URL)."""
    key = "url" if location.startswith("postgresql://") else "path"
    return f'[store]\n{key} = "{location}"\n'
