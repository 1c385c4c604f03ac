"""The benchmark harness's throwaway folders: removed at exit (at once when the disk is short),
and a large removal waited out before the next receiver starts, so no run measures the
previous run's cleanup (ext4 without a journal: ``recently_deleted``). No timings: the clock
and the sleep are stand-ins."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest

from benchmarks import harness


@pytest.fixture
def stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The cleanup stamp in a folder of the test's own, and the folder list empty."""
    path = tmp_path / "stamp.json"
    monkeypatch.setattr(harness, "CLEANUP_STAMP", path)
    monkeypatch.setattr(harness, "_FOLDERS", [])
    return path


class Slept(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def spool(folder: Path, files: int) -> Path:
    (folder / "spool").mkdir(parents=True)
    for i in range(files):
        (folder / "spool" / f"{i:05d}.xml").write_bytes(b"<Package/>")
    return folder


def test_a_receiver_started_right_after_a_large_cleanup_waits_out_six_minutes(
    stamp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """10 s after 190,000 files were removed, the next run waits the remaining 352 s and says
    why; once the six minutes have passed, or after a small cleanup, it starts at once."""
    harness.record_cleanup(190_000, ended=1_000.0)
    slept = Slept()
    assert harness.wait_for_recent_cleanup(now=lambda: 1_010.0, sleep=slept) == 352.0
    assert slept == [352.0]
    assert capsys.readouterr().out.startswith(
        "harness: waiting 352 s: a benchmark removed 190,000 files 10 s ago"
    )
    assert harness.wait_for_recent_cleanup(now=lambda: 1_362.0, sleep=slept) == 0.0
    harness.record_cleanup(999, ended=1_000.0)
    assert harness.wait_for_recent_cleanup(now=lambda: 1_001.0, sleep=slept) == 0.0
    assert slept == [352.0]


def test_no_stamp_or_a_broken_one_means_no_wait(stamp: Path) -> None:
    slept = Slept()
    assert harness.wait_for_recent_cleanup(sleep=slept) == 0.0
    stamp.write_text("{not json", encoding="utf-8")
    assert harness.wait_for_recent_cleanup(sleep=slept) == 0.0
    stamp.write_text(json.dumps({"files": 5_000}), encoding="utf-8")
    assert harness.wait_for_recent_cleanup(sleep=slept) == 0.0
    assert slept == []


def test_a_clock_set_back_never_waits_more_than_six_minutes(stamp: Path) -> None:
    harness.record_cleanup(50_000, ended=10_000.0)
    slept = Slept()
    assert harness.wait_for_recent_cleanup(now=lambda: 0.0, sleep=slept) == 362.0


class Usage(NamedTuple):
    total: int
    used: int
    free: int


def test_folders_are_removed_at_exit_and_stamped(
    stamp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With disk to spare, a stopped run's folder stays until ``remove_folders`` (at exit);
    then it is gone, and the removal stamped with its file count."""
    monkeypatch.setattr(harness, "LARGE_CLEANUP_FILES", 10)
    first, second = spool(tmp_path / "run-1", 8), spool(tmp_path / "run-2", 4)
    harness.dispose(first)
    harness.dispose(second)
    assert first.exists()
    assert second.exists()
    assert not stamp.exists()
    harness.remove_folders()
    assert not first.exists()
    assert not second.exists()
    assert json.loads(stamp.read_text(encoding="utf-8"))["files"] == 12


def test_a_small_removal_is_not_stamped(stamp: Path, tmp_path: Path) -> None:
    harness.dispose(spool(tmp_path / "run-1", 3))
    harness.remove_folders()
    assert not stamp.exists()


def test_short_of_disk_space_the_folder_goes_at_once(
    stamp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Deferring removals never fills the disk: below ``KEEP_FREE_BYTES`` free, every folder
    waiting for the exit is removed when the next run stops, and the removal stamped."""
    monkeypatch.setattr(harness, "LARGE_CLEANUP_FILES", 1)
    earlier, last = spool(tmp_path / "run-1", 2), spool(tmp_path / "run-2", 2)
    harness.dispose(earlier)
    monkeypatch.setattr(
        shutil, "disk_usage", lambda path: Usage(10 * 1024**3, 9 * 1024**3, 1024**3)
    )
    harness.dispose(last)
    assert not earlier.exists()
    assert not last.exists()
    assert "harness: 1024 MiB free: removing the run folders now" in capsys.readouterr().out
    assert json.loads(stamp.read_text(encoding="utf-8"))["files"] == 4


def test_a_receiver_is_ready_only_once_it_logged_receiver_started(tmp_path: Path) -> None:
    """The port answering is not enough (the first worker to listen would take every panel
    that connects before the others listen): the harness waits for serve's start-up line."""
    log = tmp_path / "receiver.log"
    assert not harness.started_logged(log)  # no log yet
    log.write_bytes(b'{"host": "127.0.0.1", "port": 1, "event": "dc09_listening"}\n')
    assert not harness.started_logged(log)
    log.write_bytes(log.read_bytes() + b'{"version": "0.1.0", "event": "receiver_started"}\n')
    assert harness.started_logged(log)


def test_a_receiver_that_never_gets_ready_is_not_left_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receiver that fails to start in time is ended, not left to share the next run's
    port: ``ReceiverProcess`` raises from its constructor, so no caller can stop it."""
    started: list[subprocess.Popen[bytes]] = []

    def never_ready(self: harness.ReceiverProcess, timeout: float = 30.0) -> None:
        started.append(self.process)
        raise RuntimeError("receiver did not start listening")

    monkeypatch.setattr(harness, "wait_for_recent_cleanup", lambda: 0.0)
    monkeypatch.setattr(harness.ReceiverProcess, "_wait_ready", never_ready)
    with pytest.raises(RuntimeError, match="did not start"):
        harness.ReceiverProcess()
    [process] = started
    assert process.poll() is not None  # ended, its exit status collected
