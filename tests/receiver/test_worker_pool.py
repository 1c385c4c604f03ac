"""The coordinator's worker pool: every ingest worker starts at once."""

from __future__ import annotations

import os
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import trio

from receiver.config import Config, parse_config
from receiver.workers import WorkerPool
from tests.receiver.conftest import write_config

_RENDEZVOUS = "RECEIVER_TEST_RENDEZVOUS"


def rendezvous_worker(
    config: Config, number: int, ready: Connection, json_logs: bool | None, coordinator: int
) -> None:
    """A stand-in worker: ready only once every worker of the pool has been started."""
    folder = Path(os.environ[_RENDEZVOUS])
    (folder / f"started-{number}").touch()
    deadline = time.monotonic() + 20
    while len(list(folder.glob("started-*"))) < 2:
        if time.monotonic() > deadline:
            return  # never ready: the pool reports that this worker did not start
        time.sleep(0.01)
    ready.send((config.dc09.address[1], None))
    time.sleep(60)  # until the pool's SIGTERM


@pytest.mark.slow
async def test_every_worker_is_started_before_the_first_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers are started together, not each after the last one listens: panels that
    reconnect at start-up are spread over every worker, not all kept by the first."""
    monkeypatch.setenv(_RENDEZVOUS, str(tmp_path))
    config = parse_config(write_config(tmp_path).read_text(encoding="utf-8"))
    pool = WorkerPool(config, 2, target=rendezvous_worker)
    async with trio.open_nursery() as nursery:
        dc09_port, _ = await nursery.start(pool.run)
        assert dc09_port > 0
        assert len(pool.pids) == 2
        nursery.cancel_scope.cancel()
