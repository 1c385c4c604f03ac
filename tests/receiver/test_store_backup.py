"""`receiver backup` beside a running `receiver serve` fed by the panel simulator, and
`receiver restore`, which refuses while a receiver holds the store: all as a user types it."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from receiver.cli import main as receiver_cli
from tests.receiver.conftest import registry_setup, write_config

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RECEIVER_CONFIG": ""}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, env=ENV, timeout=120)


def rows(db: Path) -> list[tuple[int, str, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return list(conn.execute("SELECT seq, id, chain_hash FROM signals ORDER BY seq"))
    finally:
        conn.close()


def count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT count(*) FROM signals").fetchone()[0])
    finally:
        conn.close()


def wait_for(what: str, check: object, limit: int = 600) -> None:
    for _ in range(limit):  # bounded: 600 x 0.1 s at most
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what}")


def started_port(log: Path) -> int:
    for line in log.read_text(encoding="utf-8").splitlines():
        if '"receiver_started"' in line:
            return int(json.loads(line)["dc09_port"])
    return 0


@pytest.mark.slow
def test_backup_while_ingesting_then_restore_only_once_the_receiver_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The copy made mid-ingest opens, is mode 0600 and holds a consistent prefix of the
    journal (seq 1..N, the same rows, a verifying chain); restore is refused while `serve`
    runs and afterwards brings back exactly those N signals."""
    config = write_config(tmp_path)
    registry_setup(
        config, ["stations", "add", "S1"], ["accounts", "add", "--station", "S1", "1234"]
    )
    db = tmp_path / "receiver.sqlite3"
    log = tmp_path / "serve.log"
    with log.open("w") as log_file:
        serve = subprocess.Popen(
            [str(BIN / "receiver"), "serve", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            env=ENV,
        )
    try:
        wait_for("receiver_started", lambda: started_port(log) > 0)
        port = started_port(log)
        panels = subprocess.Popen(
            [
                str(BIN / "receiver-sim"),
                "panel",
                "--target",
                f"127.0.0.1:{port}",
                "--account",
                "1234",
                "--count",
                "400",
                "--connections",
                "8",
                "--rate",
                "200",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=ENV,
        )
        wait_for("the first signals", lambda: count(db) >= 50)
        backup_file = tmp_path / "backup" / "station.sqlite3"
        backup_file.parent.mkdir()
        capsys.readouterr()
        assert receiver_cli(["backup", str(backup_file), "--config", str(config)]) == 0
        made = capsys.readouterr().out
        still_ingesting = panels.poll() is None
        assert panels.wait(timeout=120) == 0
        assert still_ingesting  # the backup was made while the simulator was sending

        assert backup_file.stat().st_mode & 0o777 == 0o600
        copy = rows(backup_file)
        assert made == f"backed up {db} to {backup_file} ({len(copy)} journal rows)\n"
        assert 50 <= len(copy) < 400
        assert [seq for seq, _, _ in copy] == list(range(1, len(copy) + 1))
        assert rows(db)[: len(copy)] == copy
        assert count(db) == 400

        assert receiver_cli(["restore", str(backup_file), "--config", str(config)]) == 1
        refused = capsys.readouterr().err
        assert refused.startswith(f"receiver: store {db} is in use by another receiver ")
        assert f"(process {serve.pid}, " in refused
        assert count(db) == 400
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)

    capsys.readouterr()
    assert receiver_cli(["restore", str(backup_file), "--config", str(config)]) == 0
    restored = capsys.readouterr().out
    assert restored == f"restored {db} from {backup_file} ({len(copy)} journal rows)\n"
    assert rows(db) == copy
    assert not Path(f"{db}-wal").exists() or count(db) == len(copy)
    assert db.stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert receiver_cli(["journal", "verify", "--config", str(config)]) == 0
    assert f"verified {len(copy)} journal rows (seq 1..{len(copy)})" in capsys.readouterr().out


def test_backup_never_overwrites_and_restore_takes_only_a_receiver_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing backup file is refused (exit 1); a file that is not a store, exit 2."""
    config = write_config(tmp_path)
    registry_setup(config, ["stations", "add", "S1"])
    existing = tmp_path / "old.sqlite3"
    existing.write_text("keep me")
    capsys.readouterr()
    assert receiver_cli(["--config", str(config), "backup", str(existing)]) == 1
    assert capsys.readouterr().err == (
        f"receiver: {existing} already exists; give a new file name\n"
    )
    assert existing.read_text() == "keep me"
    assert receiver_cli(["--config", str(config), "restore", str(existing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"receiver: {existing} is not a receiver store: ")
    assert err.count("\n") == 1
