"""The store (AES keys, bridge tokens) and the spooled packages are private to the receiver's
user: ``0600`` files in ``0700`` folders, whatever the umask allows; an existing store that is
readable by others is narrowed at start, and the log says so."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
from structlog.testing import capture_logs

from receiver.store.sqlite import connect
from tests.receiver.conftest import registry_setup, start_receiver, write_config
from tests.receiver.test_dispatcher import send_alarms, wait_for_files


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common default umask (022), under which files come out world-readable."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def private_config(tmp_path: Path) -> tuple[Path, Path, Path]:
    store = tmp_path / "state" / "receiver.sqlite3"
    spool = tmp_path / "out" / "spool"
    config = write_config(tmp_path)
    text = config.read_text().replace("outputs = []\n", "")
    text = text.replace(str(tmp_path / "receiver.sqlite3"), str(store))
    text += f'\n[[outputs]]\nname = "spool"\nkind = "spool"\ndirectory = "{spool}"\n'
    config.write_text(text)
    return config, store, spool


@pytest.mark.usefixtures("permissive_umask")
async def test_serve_creates_the_store_and_the_spool_private(tmp_path: Path) -> None:
    """Started on a fresh path with umask 022: store, WAL and SHM are 0600 in a 0700 folder,
    and the first package is spooled as a 0600 file in a 0700 folder."""
    config, store, spool = private_config(tmp_path)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1234"], 1)
        await wait_for_files(spool, 1)
        assert mode(store.parent) == 0o700
        for name in ("receiver.sqlite3", "receiver.sqlite3-wal", "receiver.sqlite3-shm"):
            assert mode(store.parent / name) == 0o600, name
        assert mode(spool) == 0o700
        assert [mode(p) for p in spool.glob("*.xml")] == [0o600]
        running.service.request_shutdown()


@pytest.mark.usefixtures("permissive_umask")
async def test_a_world_readable_store_is_narrowed_at_start_and_logged(tmp_path: Path) -> None:
    """A store left 0644 by an older version: ``receiver serve`` makes it 0600 and logs it."""
    config, store, _ = private_config(tmp_path)
    registry_setup(config, ["stations", "add", "S1"])
    store.chmod(0o644)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            running = await start_receiver(nursery, config)
            assert mode(store) == 0o600
            running.service.request_shutdown()
    [tightened] = [e for e in logs if e["event"] == "store_permissions_tightened"]
    assert (tightened["file"], tightened["mode_was"]) == (str(store), "644")


@pytest.mark.usefixtures("permissive_umask")
def test_the_cli_creates_a_private_store(tmp_path: Path) -> None:
    """Any command that creates the store (here the first ``stations add``) creates it 0600."""
    config, store, _ = private_config(tmp_path)
    registry_setup(config, ["stations", "add", "S1"])
    assert mode(store) == 0o600
    assert mode(store.parent) == 0o700
    connect(store).close()
    assert mode(store) == 0o600
