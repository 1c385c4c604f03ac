"""Logging never ends the receiver: a log file on a full disk loses lines, not the service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

# A child whose files cannot grow (RLIMIT_FSIZE, SIGXFSZ ignored: a full disk) logs to a file.
_LOG_ON_FULL_DISK = """
import resource, signal, sys, structlog
from receiver.logs import configure
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
configure(json=True)
resource.setrlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
for n in range(3):
    structlog.get_logger("receiver").error("journal_failed", error="database or disk is full")
print("still running")
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics are Linux's")
def test_a_log_file_on_a_full_disk_does_not_end_the_process(tmp_path: Path) -> None:
    """stderr redirected to a file that cannot grow: the log calls return, the process goes on."""
    log = tmp_path / "receiver.log"
    log.write_text("earlier lines\n")
    with log.open("a") as stderr:
        done = subprocess.run(
            [sys.executable, "-c", _LOG_ON_FULL_DISK],
            stderr=stderr,
            stdout=subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    assert (done.returncode, done.stdout) == (0, "still running\n")
    assert log.read_text() == "earlier lines\n"
