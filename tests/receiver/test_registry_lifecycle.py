"""Registry lifecycle as a user meets it: the CLI as typed on a real store (a SQLite file and a
PostgreSQL database alike), and a running receiver on loopback sockets for key/token rotation
and changes made while it runs."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trio

from protocols import dc09
from protocols.bridge import Ack, Nak, NakReason
from protocols.errors import Reply
from receiver.cli import main as receiver_cli
from tests.receiver.conftest import (
    RunningReceiver,
    registry_setup,
    start_receiver,
    store_section,
)
from tests.receiver.test_bridge_listener import BridgeClient, write_bridge_config
from tests.receiver.test_dc09_service import connect, read_replies, sia

OLD_KEY = "000102030405060708090A0B0C0D0E0F"
NEW_KEY = "F0E1D2C3B4A5968778695A4B3C2D1E0F"


def cli(config: Path, *args: str) -> int:
    return receiver_cli(["--config", str(config), *args])


@pytest.fixture
def station(tmp_path: Path, store_location: str) -> Path:
    """S1 with line 1 (prefix ABC), dealer D1, sites Main St and Elm St (the configuration of a
    store on either backend)."""
    config_path = tmp_path / "receiver.toml"
    config_path.write_text(store_section(store_location), encoding="utf-8")
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["stations", "add-line", "S1", "1", "--prefix", "ABC"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main St", "--dealer", "D1"],
        ["sites", "add", "Elm St", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main St"],
        ["accounts", "add", "--station", "S1", "--line", "1", "555", "--site", "Elm St"],
    )
    return config_path


def bridge_add(site: str, serial: str) -> list[str]:
    return ["bridges", "add", "--site", site, "--serial", serial, "--token", "t", "--channels", "4"]


def accounts(config: Path, capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    capsys.readouterr()
    assert cli(config, "accounts", "list", "--format", "json") == 0
    rows: list[dict[str, object]] = json.loads(capsys.readouterr().out)
    return rows


def test_edits_that_would_collide_are_refused_with_the_holder_named(
    station: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 1234 -> ABC555 on line 0 is the effective number Elm St holds on line 1.
    assert cli(station, "accounts", "edit", "1234", "--new-number", "ABC555") == 1
    err = capsys.readouterr().err
    assert 'held by site "Elm St" (line 1, number 555)' in err
    assert cli(station, "accounts", "edit", "1234", "--new-line", "1", "--new-number", "555") == 1
    assert 'held by site "Elm St"' in capsys.readouterr().err
    assert cli(station, "sites", "edit", "Main St", "--name", "Elm St") == 1
    assert "held by another site" in capsys.readouterr().err
    registry_setup(
        station,
        bridge_add("Main St", "B1"),
        [*bridge_add("Main St", "B2"), "--first-zone", "5"],
    )
    assert cli(station, "bridges", "edit", "B2", "--serial", "B1") == 1
    assert "serial B1 is held by another bridge" in capsys.readouterr().err
    assert cli(station, "bridges", "edit", "B2", "--first-zone", "3") == 1
    assert "zone 003 on account 1234 is held by bridge B1 channel 3" in capsys.readouterr().err
    # A fix that collides with nothing goes through and keeps the account's identity.
    assert cli(station, "accounts", "edit", "1234", "--new-number", "4321") == 0
    assert "updated account 1234: now 4321" in capsys.readouterr().out
    numbers = [(a["effective"], a["site"]) for a in accounts(station, capsys)]
    assert numbers == [("4321", "Main St"), ("ABC555", "Elm St")]
    capsys.readouterr()
    assert cli(station, "bridges", "list", "--format", "json") == 0
    assert {row["account"] for row in json.loads(capsys.readouterr().out)} == {"4321"}


def test_site_with_accounts_is_removed_only_with_cascade(
    station: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_setup(
        station,
        bridge_add("Elm St", "B9"),
    )
    assert cli(station, "sites", "remove", "Elm St") == 1
    err = capsys.readouterr().err
    assert "still has 1 account(s) (ABC555) and 1 bridge(s) (B9)" in err
    assert "--cascade" in err
    assert cli(station, "dealers", "remove", "D1") == 1
    assert "still has 2 site(s)" in capsys.readouterr().err
    assert cli(station, "sites", "remove", "Elm St", "--cascade") == 0
    out = capsys.readouterr().out
    assert "removed bridge B9" in out
    assert "removed account ABC555" in out
    assert [a["effective"] for a in accounts(station, capsys)] == ["1234"]
    # Every name and number is free again.
    registry_setup(
        station,
        ["sites", "add", "Elm St", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "--line", "1", "555", "--site", "Elm St"],
        bridge_add("Elm St", "B9"),
    )


def test_account_move_and_bridge_move_follow_the_customer(
    station: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry_setup(
        station,
        bridge_add("Main St", "B1"),
    )
    assert cli(station, "bridges", "move", "B1", "--site", "Elm St") == 0
    capsys.readouterr()
    assert cli(station, "bridges", "list", "--format", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert {(r["site"], r["account"]) for r in rows} == {("Elm St", "ABC555")}
    assert cli(station, "accounts", "move", "1234", "--site", "Elm St") == 0
    assert [a["site"] for a in accounts(station, capsys)] == ["Elm St", "Elm St"]


def test_stations_show_lists_lines_prefixes_outputs_and_account_counts(
    tmp_path: Path, store_location: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "receiver.toml"
    config.write_text(
        store_section(store_location)
        + '[[outputs]]\nname = "sentinel"\nkind = "sentinel"\naddress = "127.0.0.1:5100"\n'
        'passkey = "K3y"\n',
        encoding="utf-8",
    )
    registry_setup(
        config,
        ["stations", "add", "S1", "--xml-output", "sentinel", "--passkey", "K3y"],
        ["stations", "add-line", "S1", "2", "--prefix", "XY"],
        ["accounts", "add", "--station", "S1", "1234"],
        ["accounts", "add", "--station", "S1", "--line", "2", "1234"],
        ["accounts", "add", "--station", "S1", "--line", "2", "777"],
    )
    capsys.readouterr()
    assert cli(config, "stations", "show", "S1") == 0
    out = capsys.readouterr().out
    assert "xml receiver: sentinel (sentinel 127.0.0.1:5100)" in out
    assert "passkey: set" in out
    assert "K3y" not in out
    assert "accounts: 3" in out
    assert [line.split() for line in out.splitlines()[-2:]] == [["0", "1"], ["2", "XY", "2"]]
    assert cli(config, "stations", "edit", "S1", "--xml-output", "other", "--passkey", "") == 0
    capsys.readouterr()
    assert cli(config, "stations", "show", "S1", "--format", "json") == 0
    [record] = json.loads(capsys.readouterr().out)
    assert (record["xml_output"], record["xml_output_configured"]) == ("other", False)
    assert record["passkey_set"] is False


def test_bridge_import_is_all_or_nothing_and_names_each_csv_line(
    station: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "site,serial,token,channels,first_zone\n"
        "Main St,F-0001,s3cret,4,1\n"
        "Main St,F-0002,s3cret,4,3\n"  # zones 3-4 held by F-0001 (same account)
        "Nowhere,F-0003,s3cret,4,\n"
        "Main St,F-0001,s3cret,4,9\n"
        "Main St,F-0004,s3cret,6,13\n",
        encoding="utf-8",
    )
    assert cli(station, "bridges", "import", str(bad)) == 1
    err = capsys.readouterr().err
    assert "line 3: zone 003 on account 1234 is held by bridge F-0001 channel 3" in err
    assert "line 4: no site named 'Nowhere'" in err
    assert "line 5: bridge F-0001 is also on CSV line 2" in err
    assert "line 6: a bridge has 4, 8, 12 or 16 channels, got 6" in err
    assert "nothing imported" in err
    assert cli(station, "bridges", "list", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.slow
async def test_key_rotation_accepts_both_keys_in_grace_and_only_the_new_after(
    receiver: RunningReceiver,
) -> None:
    """Account 5678 (fixture: OLD_KEY) gets NEW_KEY with a 2 s grace: frames under either
    key are ACKed; after the grace one under the old key is NAKed, the new key still ACKed."""
    old, new = bytes.fromhex(OLD_KEY), bytes.fromhex(NEW_KEY)
    view = receiver.service.registry
    before = view.current().generation
    assert receiver.cli("accounts", "set-key", "5678", "--key", NEW_KEY, "--grace", "2") == 0
    with trio.fail_after(10):  # the receiver's registry poll picks the change up
        while view.current().generation == before:
            await trio.sleep(0.05)
    account = view.current().resolve("S1", "0", "5678")
    assert account is not None
    assert account.key_grace_until is not None
    stream = await connect(receiver)
    for seq, key in ((1, old), (2, new)):
        await stream.send_all(sia(seq, "5678", key=key, timestamp=datetime.now(UTC)))
        [raw] = await read_replies(stream, 1)
        reply = dc09.decode_reply(raw, key=key)
        assert (reply.kind, reply.sequence) == (Reply.ACK, f"{seq:04d}")
    await trio.sleep(max(0.0, account.key_grace_until - time.time()) + 0.2)
    await stream.send_all(sia(3, "5678", key=old, timestamp=datetime.now(UTC)))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind == Reply.NAK
    await stream.send_all(sia(4, "5678", key=new, timestamp=datetime.now(UTC)))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw, key=new).kind == Reply.ACK
    await stream.aclose()


async def test_removed_account_keeps_its_history_and_frees_its_number(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = await connect(receiver)
    await stream.send_all(sia(7, "1234"))
    [raw] = await read_replies(stream, 1)
    assert dc09.decode_reply(raw).kind == Reply.ACK
    await stream.aclose()
    assert receiver.cli("accounts", "remove", "--station", "S1", "1234") == 0
    assert "its number is free; signals and history are kept" in capsys.readouterr().out
    assert receiver.cli("history", "--account", "1234", "--format", "json") == 0
    [signal] = json.loads(capsys.readouterr().out)
    assert (signal["account"], signal["sia"]) == ("1234", "BA")
    # The row is kept, marked removed; the number can be given to a new customer.
    conn = sqlite3.connect(receiver.db)
    removed = conn.execute(
        "SELECT removed_effective FROM accounts WHERE removed_at IS NOT NULL"
    ).fetchall()
    conn.close()
    assert removed == [("1234",)]
    assert receiver.cli("accounts", "add", "--station", "S1", "1234") == 0


async def test_bridge_added_while_running_is_let_in_on_its_first_hello(tmp_path: Path) -> None:
    config = write_bridge_config(tmp_path)
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main St", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main St"],
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await trio.sleep(0.3)  # past the registry poll's first check: only a refresh helps
        serial = "NEW-0001"
        assert running.cli(
            "bridges", "add", "--site", "Main St", "--serial", serial, "--token", "t1",
            "--channels", "4",
        ) == 0  # fmt: skip
        client = await BridgeClient.open(running, serial)
        assert isinstance(await client.hello(token="t1"), Ack)
        await client.stream.aclose()
        # Token rotation: with grace the old token still lets it in; without, only the new.
        assert running.cli("bridges", "set-token", serial, "--token", "t2", "--grace", "600") == 0
        for token in ("t1", "t2"):
            client = await BridgeClient.open(running, serial)
            assert isinstance(await client.hello(token=token), Ack), token
            await client.stream.aclose()
        assert running.cli("bridges", "set-token", serial, "--token", "t3") == 0
        client = await BridgeClient.open(running, serial)
        assert await client.hello(token="t2") == Nak(1, NakReason.BAD_TOKEN)
        await client.stream.aclose()
        client = await BridgeClient.open(running, serial)
        assert isinstance(await client.hello(token="t3"), Ack)
        await client.stream.aclose()
        running.service.request_shutdown()


def readme_fleet_block() -> str:
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    after = text.split("Register the fleet in one command first", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
async def test_readme_fleet_registration_works_as_written(tmp_path: Path) -> None:
    """The README's fleet commands, run by a shell as a user pastes them, register LOAD-0001..
    LOAD-0200; a running receiver then lets any of them in with the fleet's token."""
    config = write_bridge_config(tmp_path)
    env = {
        **os.environ,
        "RECEIVER_CONFIG": str(config),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_fleet_block()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "imported 200 bridge(s)" in done.stdout
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        for serial in ("LOAD-0001", "LOAD-0200"):
            client = await BridgeClient.open(running, serial)
            assert isinstance(await client.hello(token="s3cret"), Ack), serial
            await client.stream.aclose()
        running.service.request_shutdown()
