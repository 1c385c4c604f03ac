"""`receiver report bridges`: what a station operator reads about its video bridges.

Bridges report to a real ``Service`` over loopback (the project's simulator), then the CLI
reads the same SQLite file and prints JSON, CSV or a table.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

from receiver.bridge_state import bridge_report
from receiver.cli import main as receiver_cli
from simulators.bridge import run_bridge
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver
from tests.receiver.test_bridge_listener import SERIAL, TOKEN, setup_site, write_bridge_config

SECOND = "CKB304-0002"
OTHER = "CKB308-0009"


def add_bridges(config_path: Path) -> None:
    """A second bridge at Main Street, and a bridge at another dealer's site."""
    registry_setup(
        config_path,
        [
            *("bridges", "add", "--site", "Main Street", "--serial", SECOND, "--token", "t2"),
            *("--channels", "4", "--first-zone", "11"),
        ],
        ["dealers", "add", "D2"],
        ["sites", "add", "Harbour", "--dealer", "D2"],
        ["accounts", "add", "--station", "S1", "9999", "--site", "Harbour"],
        [
            *("bridges", "add", "--site", "Harbour", "--serial", OTHER, "--token", "t3"),
            *("--channels", "8", "--model", "CKB308"),
        ],
    )


def report(config_path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    code = receiver_cli(["--config", str(config_path), "report", "bridges", *args])
    out = capsys.readouterr().out
    assert code == 0
    return json.loads(out) if "json" in args else out


async def bridge(receiver: RunningReceiver, serial: str, token: str, *words: str) -> None:
    assert receiver.ports.bridge is not None
    summary = await run_bridge(
        ("127.0.0.1", receiver.ports.bridge), serial, token, 4, list(words), firmware="2.4.1"
    )
    assert summary.ok, summary.as_dict()


async def test_report_shows_status_arming_site_state_and_troubles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One armed and one disarmed bridge make the site partially armed; troubles per zone."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    add_bridges(config_path)
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        await bridge(receiver, SERIAL, TOKEN, "arm", "camera-lost:2", "tamper", "heartbeat")
        await bridge(receiver, SECOND, "t2", "disarm", "camera-lost:1", "camera-restored:1")
        rows = report(config_path, capsys, "--format", "json")
        receiver.service.request_shutdown()
    by_serial = {row["serial"]: row for row in rows}
    first = by_serial[SERIAL]
    assert {k: first[k] for k in ("site", "dealer", "account", "channels", "firmware")} == {
        "site": "Main Street",
        "dealer": "D1",
        "account": "1234",
        "channels": 4,
        "firmware": "2.4.1",
    }
    assert (first["status"], first["armed"], first["site_state"]) == (
        "online",
        "armed",
        "partially armed",
    )
    assert first["troubles"] == ["camera_lost:zone 002", "tamper:bridge"]
    assert first["last_seen"] is not None
    second = by_serial[SECOND]
    assert (second["status"], second["armed"], second["site_state"]) == (
        "online",
        "disarmed",
        "partially armed",
    )
    assert second["troubles"] == []
    other = by_serial[OTHER]
    assert (other["status"], other["armed"], other["site_state"], other["model"]) == (
        "never",
        None,
        "unknown",
        "CKB308",
    )


async def test_report_filters_by_dealer_and_site(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dealer and --site keep only their bridges; an unknown dealer exits 1 with one line."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    add_bridges(config_path)
    assert [
        r["serial"] for r in report(config_path, capsys, "--dealer", "D2", "--format", "json")
    ] == [OTHER]
    rows = report(config_path, capsys, "--site", "Main Street", "--format", "json")
    assert [r["serial"] for r in rows] == [SERIAL, SECOND]
    capsys.readouterr()
    assert receiver_cli(["--config", str(config_path), "report", "bridges", "--dealer", "D9"]) == 1
    err = capsys.readouterr().err
    assert err == "receiver: no dealer named 'D9'\n"


async def test_report_table_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Table and CSV carry the same columns, header first."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    table = report(config_path, capsys).splitlines()
    assert table[0].split() == [
        "SERIAL",
        "SITE",
        "DEALER",
        "ACCOUNT",
        "MODEL",
        "CHANNELS",
        "FIRMWARE",
        "STATUS",
        "LAST_SEEN",
        "ARMED",
        "SITE_STATE",
        "TROUBLES",
    ]
    assert table[1].split()[:2] == [SERIAL, "Main"]
    csv_lines = report(config_path, capsys, "--format", "csv").splitlines()
    assert csv_lines[0].startswith("serial,site,dealer,account,model,channels,firmware,status")
    assert csv_lines[1].startswith(f"{SERIAL},Main Street,D1,1234,CKB304,4,,never,")


async def test_silent_bridge_reports_offline(tmp_path: Path) -> None:
    """A bridge not heard from for longer than interval x grace is offline, even unsupervised."""
    config_path = write_bridge_config(tmp_path)
    setup_site(config_path)
    async with trio.open_nursery() as nursery:
        receiver = await start_receiver(nursery, config_path)
        await bridge(receiver, SERIAL, TOKEN, "arm")
        receiver.service.request_shutdown()
    conn = sqlite3.connect(receiver.db)
    conn.row_factory = sqlite3.Row
    try:
        now = datetime.now(UTC)
        [fresh] = bridge_report(conn, offline_after=150.0, now=now)
        [stale] = bridge_report(conn, offline_after=150.0, now=now + timedelta(seconds=151))
    finally:
        conn.close()
    assert (fresh["status"], stale["status"]) == ("online", "offline")
    assert stale["armed"] == "armed"
