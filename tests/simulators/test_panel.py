"""The panel simulator against a real receiver on loopback, with a real SQLite journal."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
import trio

from protocols.errors import InvalidInputError
from simulators.cli import main as sim_main
from simulators.panel import (
    LoadPlan,
    PanelFleet,
    PanelOptions,
    PanelQuirks,
    PanelTally,
    account_numbers,
    run_load,
)
from tests.receiver.conftest import RunningReceiver, registry_setup, start_receiver, write_config

KEY_HEX = "000102030405060708090A0B0C0D0E0F"


@pytest.fixture
async def receiver(tmp_path: Path) -> AsyncIterator[RunningReceiver]:
    """A receiver with plain accounts 1234..1236 and AB12, and keyed account 5678."""
    config_path = write_config(tmp_path)
    plain = [["accounts", "add", "--station", "S1", n, "--site", "Main"] for n in ("1234", "1235")]
    registry_setup(
        config_path,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main", "--dealer", "D1"],
        *plain,
        ["accounts", "add", "--station", "S1", "1236", "--site", "Main"],
        ["accounts", "add", "--station", "S1", "AB12", "--site", "Main"],
        ["accounts", "add", "--station", "S1", "5678", "--site", "Main", "--key", KEY_HEX],
    )
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config_path)
        yield running
        running.service.request_shutdown()


def journal(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM signals WHERE source = 'dc09' ORDER BY seq").fetchall()
    finally:
        conn.close()


def target(receiver: RunningReceiver) -> tuple[str, int]:
    return ("127.0.0.1", receiver.ports.dc09)


async def test_plain_fleet_every_frame_acked_and_journaled(receiver: RunningReceiver) -> None:
    """30 mixed SIA/CID frames over 3 connections for 3 accounts: all ACKed, 30 journal rows."""
    plan = LoadPlan(accounts=account_numbers("1234", 3), count=30, connections=3)
    summary = await run_load(target(receiver), plan, PanelOptions(timeout=5.0))
    assert summary.ok
    assert (summary.sent, summary.acked, summary.naked, summary.timeouts) == (30, 30, 0, 0)
    rows = journal(receiver.db)
    assert len(rows) == summary.acked_events == 30
    assert {r["account"] for r in rows} == {"1234", "1235", "1236"}
    assert {r["token"] for r in rows} == {"SIA-DCS", "ADM-CID"}
    assert all(r["account_id"] is not None for r in rows)
    assert summary.latency_ms(0.99) is not None


async def test_encrypted_frames_acked_with_encrypted_ack(receiver: RunningReceiver) -> None:
    """Encrypted frames to the keyed account are ACKed (the *ACK decrypts) and journaled."""
    plan = LoadPlan(accounts=["5678"], count=6, protocol="sia")
    options = PanelOptions(key=bytes.fromhex(KEY_HEX))
    summary = await run_load(target(receiver), plan, options)
    assert summary.ok
    assert summary.bad_replies == 0
    rows = journal(receiver.db)
    assert len(rows) == 6
    assert all("encrypted" in r["flags"].split(",") for r in rows)


async def test_udp_frames_acked(receiver: RunningReceiver) -> None:
    """Over UDP, one datagram per frame, NULL polls included: every frame ACKed."""
    plan = LoadPlan(accounts=["1234"], count=10, null_every=5, protocol="cid")
    summary = await run_load(target(receiver), plan, PanelOptions(udp=True))
    assert summary.ok
    assert summary.polls == 2
    assert len(journal(receiver.db)) == summary.acked_events == 8


async def test_nak_corrects_the_clock_then_acked(receiver: RunningReceiver) -> None:
    """A panel an hour slow is NAKed once, adopts the receiver's time and is ACKed."""
    plan = LoadPlan(accounts=["5678"], count=3, protocol="cid")
    options = PanelOptions(key=bytes.fromhex(KEY_HEX), skew=-3600.0)
    summary = await run_load(target(receiver), plan, options)
    assert summary.ok
    assert (summary.nak_replies, summary.clock_corrections, summary.retransmits) == (1, 1, 1)
    rows = journal(receiver.db)
    assert len(rows) == 3
    now_us = datetime.now(UTC).timestamp() * 1e6
    assert all(abs(r["device_us"] - now_us) < 120e6 for r in rows)


async def test_quirks_binary_crc_lower_account_no_hash_still_acked(
    receiver: RunningReceiver,
) -> None:
    """Binary CRC, a lower-case account and no '#' in the data: ACKed, resolved, flagged."""
    plan = LoadPlan(accounts=["AB12"], count=4, protocol="sia")
    quirks = PanelQuirks(binary_crc=True, lower_account=True, no_hash=True)
    summary = await run_load(target(receiver), plan, PanelOptions(quirks=quirks))
    assert summary.ok
    rows = journal(receiver.db)
    assert len(rows) == 4
    assert {r["account"] for r in rows} == {"ab12"}
    assert all(r["account_id"] is not None for r in rows)
    assert all("quirk:binary_crc" in r["flags"] for r in rows)


async def test_plaintext_to_keyed_account_gets_duh(receiver: RunningReceiver) -> None:
    """A plaintext frame for an account with a key is answered DUH, counted, not stored."""
    plan = LoadPlan(accounts=["5678"], count=2, protocol="sia")
    summary = await run_load(target(receiver), plan, PanelOptions())
    assert (summary.duh, summary.acked, summary.retransmits) == (2, 0, 0)
    assert not summary.ok
    assert journal(receiver.db) == []


async def test_silent_receiver_counts_timeouts_after_retries() -> None:
    """A listener that never answers: each frame is sent 1 + retries times, then a timeout."""
    received: list[bytes] = []

    async def swallow(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.append(bytes(data))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, swallow, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        plan = LoadPlan(accounts=["1234"], count=2)
        summary = await run_load(("127.0.0.1", port), plan, PanelOptions(timeout=0.05, retries=1))
        nursery.cancel_scope.cancel()
    assert (summary.timeouts, summary.retransmits, summary.acked) == (2, 2, 0)
    frames = b"".join(received)
    assert frames.count(b"\r") == 4
    # A retransmission is the same bytes, same sequence.
    first, again = frames.split(b"\r")[:2]
    assert first == again


async def test_cli_json_summary(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """``receiver-sim panel --json`` prints the summary as JSON and exits 0 when all ACKed."""
    argv = ["panel", "--target", f"127.0.0.1:{receiver.ports.dc09}", "--account", "1234"]
    argv += ["--accounts", "2", "--count", "8", "--connections", "2", "--json"]
    code = await trio.to_thread.run_sync(sim_main, argv)
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    out = json.loads(next(line for line in lines if line.startswith("{")))
    assert out["acked"] == out["sent"] == 8
    assert out["ok"] is True
    assert {"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"} <= set(out)
    assert len(journal(receiver.db)) == 8


def test_cli_refuses_remote_target_and_bad_key(capsys: pytest.CaptureFixture[str]) -> None:
    """A non-loopback target or a malformed key is bad input: exit 2, one line on stderr."""
    assert sim_main(["panel", "--target", "10.1.2.3:9000", "--account", "1"]) == 2
    assert "loopback" in capsys.readouterr().err
    argv = ["panel", "--target", "127.0.0.1:9", "--account", "1", "--key", "abc"]
    assert sim_main(argv) == 2
    assert "hex key" in capsys.readouterr().err


def test_account_numbers_count_up_keeping_width() -> None:
    """Accounts count up in decimal or hex and keep their leading zeros."""
    assert account_numbers("0998", 3) == ["0998", "0999", "1000"]
    assert account_numbers("10000A", 2) == ["10000A", "10000B"]
    with pytest.raises(InvalidInputError):
        account_numbers("xyz!", 2)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sim(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``receiver-sim`` as typed, in a worker thread (the receiver runs in this trio loop)."""
    capsys.readouterr()
    code = await trio.to_thread.run_sync(sim_main, list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def test_a_second_run_is_not_taken_for_duplicates(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two identical runs one after the other both reach the journal: each run starts from
    its own random sequence, so the receiver does not absorb the second as retries of the
    first; ``--sequence-start N`` starts every account at N."""
    argv = ["panel", "--target", f"127.0.0.1:{receiver.ports.dc09}", "--account", "1234"]
    argv += ["--count", "4", "--protocol", "sia", "--json"]
    for _ in range(2):
        code, out, _ = await sim(capsys, *argv)
        assert code == 0, out
    rows = journal(receiver.db)
    assert len(rows) == 8
    assert all(r["repeats"] == 0 for r in rows)
    code, _, _ = await sim(capsys, *argv, "--sequence-start", "42")
    assert code == 0
    assert [r["sequence"] for r in journal(receiver.db)[8:]] == ["0042", "0043", "0044", "0045"]
    code, _, err = await sim(capsys, *argv, "--sequence-start", "0")
    assert code == 2
    assert err.count("\n") == 1
    assert "sequence_start" in err


async def test_a_refused_connection_reads_as_connect_failures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Nobody listening: the summary counts connect failures, not timeouts, and stderr says
    in one line where it could not connect and why; exit 1."""
    port = closed_port()
    argv = ["panel", "--target", f"127.0.0.1:{port}", "--account", "1234", "--count", "2"]
    code, out, err = await sim(capsys, *argv, "--timeout", "0.2", "--retries", "1")
    assert code == 1
    assert "timeouts 0, connect failures 2," in out
    assert err.splitlines() == [
        f"receiver-sim panel: cannot connect to 127.0.0.1:{port}: Connection refused "
        "(2 frames not sent)"
    ]


async def test_a_wrong_key_reads_as_wrong_key_naks_not_clock_corrections(
    receiver: RunningReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """The receiver NAKs frames it cannot decrypt, with its own (agreeing) time: that is
    counted as a wrong-key NAK, the frame is not resent, and no clock is 'corrected'."""
    argv = ["panel", "--target", f"127.0.0.1:{receiver.ports.dc09}", "--account", "5678"]
    argv += ["--count", "3", "--protocol", "cid", "--key", "FF" * 16]
    code, out, _ = await sim(capsys, *argv)
    assert code == 1
    assert "naked 3," in out
    assert "retransmits 0, naks (wrong key?) 3, clock corrections 0," in out
    code, out, _ = await sim(capsys, *argv, "--json")
    summary = json.loads(next(line for line in out.splitlines() if line.startswith("{")))
    assert (summary["naks_wrong_key"], summary["clock_corrections"]) == (3, 0)
    assert journal(receiver.db) == []


# -- the backup receiver path ----------------------------------------------------------------


async def _two_receivers(nursery: trio.Nursery, tmp_path: Path) -> list[RunningReceiver]:
    """Two receivers with their own stores and ports, both serving account 1234."""
    running = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        config_path = write_config(folder)
        registry_setup(
            config_path,
            ["stations", "add", "S1"],
            ["dealers", "add", "D1"],
            ["sites", "add", "Main", "--dealer", "D1"],
            ["accounts", "add", "--station", "S1", "1234", "--site", "Main"],
            ["accounts", "add", "--station", "S1", "1235", "--site", "Main"],
        )
        running.append(await start_receiver(nursery, config_path))
    return running


async def test_a_panel_switches_to_its_backup_when_the_primary_stops(tmp_path: Path) -> None:
    """The primary receiver stops mid-run: every connection moves to the backup once and
    stays there; every frame is ACKed by one of them and stored where it was ACKed."""
    plan = LoadPlan(accounts=["1234", "1235"], count=40, connections=2, rate=100.0)
    async with trio.open_nursery() as nursery:
        a, b = await _two_receivers(nursery, tmp_path)
        tally = PanelTally(accounts=2, planned=plan.count)
        fleet = PanelFleet(target(a), PanelOptions(timeout=2.0), tally, backup=target(b))

        async def stop_primary() -> None:
            while tally.acked < 10:
                await trio.sleep(0.01)
            a.service.request_shutdown()

        nursery.start_soon(stop_primary)
        with trio.fail_after(30):
            summary = await fleet.run(plan.lanes())
        b.service.request_shutdown()
    assert summary.ok
    paths = dict(summary.acked_at)
    primary, backup = f"127.0.0.1:{a.ports.dc09}", f"127.0.0.1:{b.ports.dc09}"
    assert paths[primary] >= 10
    assert paths[primary] + paths[backup] == 40
    assert summary.switches == 2
    stored_a = {(r["account"], r["sequence"]) for r in journal(a.db)}
    stored_b = {(r["account"], r["sequence"]) for r in journal(b.db)}
    assert len(stored_a) >= paths[primary]
    assert len(stored_b) == paths[backup]
    assert len(stored_a | stored_b) == 40


async def test_a_primary_that_does_not_answer_sends_the_retry_to_the_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A primary that takes frames and never replies: the first frame's retry goes to the
    backup after one timeout, and the rest follow it there (as typed, with the summary)."""
    received: list[bytes] = []

    async def swallow(stream: trio.SocketStream) -> None:
        async for data in stream:
            received.append(bytes(data))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, swallow, 0, host="127.0.0.1"))
        silent = listeners[0].socket.getsockname()[1]
        backup = (await _two_receivers(nursery, tmp_path))[1]
        argv = ["panel", "--target", f"127.0.0.1:{silent}", "--account", "1234", "--count", "3"]
        argv += ["--backup", f"127.0.0.1:{backup.ports.dc09}", "--timeout", "0.3"]
        code, out, _ = await sim(capsys, *argv)
        code_json, out_json, _ = await sim(capsys, *argv, "--json", "--protocol", "sia")
        nursery.cancel_scope.cancel()
    assert code == 0, out
    assert "retransmits 1," in out
    assert f"acked 3 at 127.0.0.1:{backup.ports.dc09} (path switches 1)" in out
    assert b"".join(received).count(b"\r") == 2  # one frame per run, sent once, unanswered
    summary = json.loads(next(line for line in out_json.splitlines() if line.startswith("{")))
    assert code_json == 0
    assert summary["acked_at"] == {f"127.0.0.1:{backup.ports.dc09}": 3}
    assert summary["switches"] == 1
    assert len(journal(backup.db)) == 6


async def test_a_refused_primary_goes_to_the_backup_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nobody on the primary port: no timeout is waited, every frame is ACKed on the backup."""
    async with trio.open_nursery() as nursery:
        backup = (await _two_receivers(nursery, tmp_path))[1]
        argv = ["panel", "--target", f"127.0.0.1:{closed_port()}", "--account", "1234"]
        argv += ["--count", "4", "--backup", f"127.0.0.1:{backup.ports.dc09}"]
        code, out, err = await sim(capsys, *argv, "--timeout", "30")
        nursery.cancel_scope.cancel()
    assert code == 0, out + err
    assert "timeouts 0, connect failures 0," in out
    assert f"acked 4 at 127.0.0.1:{backup.ports.dc09} (path switches 1)" in out
    assert err == ""
