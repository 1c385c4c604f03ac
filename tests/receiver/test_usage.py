"""`receiver report usage`: a dealer's month per site and account, as a billing system reads
it, checked against `receiver history` for the same month (real journal, real traffic)."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from receiver.cli import main as receiver_cli
from receiver.journal import to_us
from tests.receiver.conftest import registry_setup, start_receiver
from tests.receiver.test_bridge_listener import send, setup_site, write_bridge_config
from tests.receiver.test_journal_chain import send_sia

# Receiver times given to the journal rows (by seq) after the traffic: two November days for
# D1's account, one row each side of the month, D2's signal inside it.
RECEIVED = {
    1: "2026-11-03T10:00:00",  # DC-09 1234
    2: "2026-11-17T08:00:00",  # DC-09 1234
    3: "2026-10-31T23:59:59.999999",  # DC-09 1234, October
    4: "2026-11-03T11:00:00",  # bridge alarm channel 2
    5: "2026-11-03T11:01:00",  # bridge restore channel 2
    6: "2026-12-01T00:00:00",  # bridge alarm channel 3, December
    7: "2026-11-05T12:00:00",  # DC-09 5555, dealer D2
}


def cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert receiver_cli(["--config", str(config), *args]) == 0
    return capsys.readouterr().out


@pytest.fixture
async def november(tmp_path: Path) -> Path:
    """D1: Main Street (account 1234, a 4-channel bridge) and silent Oak Road (2222);
    D2: Elm (5555). Traffic from each, then the times of RECEIVED."""
    config = write_bridge_config(tmp_path)
    setup_site(config)
    registry_setup(
        config,
        ["sites", "add", "Oak Road", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "2222", "--site", "Oak Road"],
        ["dealers", "add", "D2"],
        ["sites", "add", "Elm", "--dealer", "D2"],
        ["accounts", "add", "--station", "S1", "5555", "--site", "Elm"],
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_sia(running, 11, 12, 13)
        summary = await send(running, "alarm:2", "restore:2", "alarm:3")
        assert summary.ok, summary.as_dict()
        await send_sia(running, 21, account="5555")
        running.service.request_shutdown()
    conn = sqlite3.connect(running.db)
    with conn:
        for seq, moment in RECEIVED.items():
            micros = to_us(datetime.fromisoformat(moment).replace(tzinfo=UTC))
            conn.execute("UPDATE signals SET received_us = ? WHERE seq = ?", (micros, seq))
    conn.close()
    return config


async def test_usage_rows_add_up_to_history_for_the_month(
    november: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Per account: the month's signals (those history lists for it), by category, the
    bridge and channel that reported, the days online; a silent account gets zeros; the other
    dealer's account is not there."""
    rows = json.loads(
        cli(
            november,
            capsys,
            "report",
            "usage",
            "--dealer",
            "D1",
            "--month",
            "2026-11",
            "--format",
            "json",
        )
    )
    assert [(r["site"], r["account"], r["station"]) for r in rows] == [
        ("Main Street", "1234", "S1"),
        ("Oak Road", "2222", "S1"),
    ]
    main, oak = rows
    assert (main["signals"], main["alarm"], main["bridges"], main["channels"]) == (4, 4, 1, 1)
    assert main["days_online"] == 2
    assert oak["signals"] == oak["alarm"] == oak["days_online"] == 0
    categories = ("alarm", "supervisory", "trouble", "open_close", "bypass", "test", "other")
    for row in rows:
        assert sum(row[c] for c in categories) == row["signals"]
        history = json.loads(
            cli(
                november,
                capsys,
                "history",
                "--account",
                row["account"],
                "--since",
                "2026-11-01",
                "--until",
                "2026-11-30T23:59:59.999999",
                "--limit",
                "0",
                "--format",
                "json",
            )
        )
        assert len(history) == row["signals"]


async def test_usage_csv_is_the_invoice_details_file(
    november: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--format csv: one header line with every column, one line per site and account."""
    out = cli(
        november,
        capsys,
        "report",
        "usage",
        "--dealer",
        "D2",
        "--month",
        "2026-11",
        "--format",
        "csv",
    )
    table = list(csv.reader(io.StringIO(out)))
    assert table[0] == [
        "month",
        "dealer",
        "site",
        "account",
        "station",
        "signals",
        "alarm",
        "supervisory",
        "trouble",
        "open_close",
        "bypass",
        "test",
        "other",
        "bridges",
        "channels",
        "days_online",
    ]
    assert table[1:] == [
        [
            "2026-11",
            "D2",
            "Elm",
            "5555",
            "S1",
            "1",
            "1",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "0",
            "1",
        ],
    ]


def test_usage_refuses_an_unknown_dealer_or_a_bad_month(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown dealer is exit 1, a month that is not YYYY-MM exit 2, one line each."""
    config = write_bridge_config(tmp_path)
    setup_site(config)
    capsys.readouterr()
    args = ["--config", str(config), "report", "usage", "--month"]
    assert receiver_cli([*args, "2026-11", "--dealer", "Nobody"]) == 1
    assert capsys.readouterr().err == "receiver: dealer 'Nobody' not found\n"
    assert receiver_cli([*args, "2026-13", "--dealer", "D1"]) == 2
    assert capsys.readouterr().err == (
        "receiver: not a month: '2026-13' (use YYYY-MM, like 2026-11)\n"
    )
