"""Log lines stay whole when several processes share one stderr (the coordinator and its ingest
workers do): each line is one write, so lines never interleave in a log file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_WRITER = """
import sys
import structlog
from receiver import logs
logs.configure(json=True)
log = structlog.get_logger()
for i in range({lines}):
    log.info("worker_started", worker={worker}, i=i, pid=1234567)
"""


@pytest.mark.slow
def test_lines_from_processes_sharing_one_stderr_never_interleave(tmp_path: Path) -> None:
    """Four processes log 2,000 lines each at once into one inherited stderr (a file, as a
    service's log is): every line of the file is one whole JSON entry, and all are there.
    With print's two writes per line (the message, then its newline) entries ran together on
    one line, and a test waiting for two ``worker_started`` lines saw one."""
    lines, writers = 2_000, 4
    log = tmp_path / "receiver.log"
    with log.open("wb") as shared:
        running = [
            subprocess.Popen(
                [sys.executable, "-c", _WRITER.format(lines=lines, worker=worker)],
                stderr=shared,
            )
            for worker in range(writers)
        ]
        for process in running:
            assert process.wait(timeout=120) == 0
    entries = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert sorted((e["worker"], e["i"]) for e in entries) == [
        (worker, i) for worker in range(writers) for i in range(lines)
    ]
