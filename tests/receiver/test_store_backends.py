"""`receiver serve` on either store, one node: what a panel, the sink and the CLI see is the same
on SQLite and on PostgreSQL.

Frames come from accounts the registry does not hold (stored and ACKed as unknown accounts: the
registry on PostgreSQL is not part of this), over real loopback TCP and UDP; the journal, the
outputs' cursors and the links are read back from the database the receiver wrote.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from protocols import dc09
from protocols.errors import Reply
from receiver.cli import main as receiver_cli
from receiver.config import parse_config
from receiver.store import open_store
from simulators.replay import recorded_frames
from tests.conftest import Backend
from tests.receiver.conftest import start_receiver, write_config
from tests.receiver.test_crash import free_port
from tests.receiver.test_dc09_service import read_replies, sia
from tests.receiver.test_dispatcher import RecordingSink, send_alarms, sentinel_config


def receiver_config(tmp_path: Path, backend: Backend, extra: str = "") -> Path:
    return write_config(tmp_path, extra, store=backend.store_toml())


async def test_tcp_and_udp_frames_are_committed_before_the_ack_and_retries_stored_once(
    tmp_path: Path, backend: Backend
) -> None:
    """Each ACK over TCP and over UDP follows its commit (a separate connection reads the signal
    once the ACK is in); a retry is ACKed again and stored once (the store's dedupe)."""
    config = receiver_config(tmp_path, backend)
    reader = backend.open()
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        stream = await trio.open_tcp_stream("127.0.0.1", running.ports.dc09)
        await stream.send_all(sia(5, account="9001"))
        [raw] = await read_replies(stream, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        assert [s.sequence for _, s in reader.read_after(0, 10)] == ["0005"]
        await stream.send_all(sia(5, account="9001"))  # the panel did not see the ACK: again
        [raw] = await read_replies(stream, 1)
        assert dc09.decode_reply(raw).kind is Reply.ACK
        await stream.aclose()
        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(sia(6, account="9002"), ("127.0.0.1", running.ports.dc09))
        with trio.fail_after(5):
            data, _ = await sock.recvfrom(4096)
        assert dc09.decode_reply(data).kind is Reply.ACK
        rows = reader.read_after(0, 10)
        sock.close()
        running.service.request_shutdown()
    reader.close()
    assert [(s.account, s.sequence) for _, s in rows] == [("9001", "0005"), ("9002", "0006")]
    assert all("unknown_account" in s.flags for _, s in rows)
    assert backend.sql("SELECT account, repeats FROM signals ORDER BY seq") == [
        ("9001", 1),
        ("9002", 0),
    ]


async def test_the_default_spool_delivers_from_the_store_with_its_cursor_there(
    tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no outputs configured each signal is spooled as a package, in journal order, and the
    spool's cursor is saved in the store (`receiver outputs` shows it delivered, backlog 0)."""
    monkeypatch.chdir(tmp_path)
    config = receiver_config(tmp_path, backend)
    config.write_text(config.read_text().replace("outputs = []\n", ""))
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["3001", "3002"], 3)
        spool = tmp_path / "var" / "spool"
        with trio.fail_after(20):
            while len(list(spool.glob("*.xml"))) < 6:
                await trio.sleep(0.05)
        running.service.request_shutdown()
    journal = [row[0] for row in backend.sql("SELECT id FROM signals ORDER BY seq")]
    assert sorted(p.stem for p in spool.glob("*.xml")) == sorted(journal)
    assert backend.sql("SELECT cursor, delivered FROM outputs WHERE name = 'spool'") == [(6, 6)]


async def test_a_tcp_output_gets_its_backlog_in_order_once_it_listens(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signals wait in the store while the automation is down (`receiver outputs` shows the
    backlog and, once the output's trouble is journaled, the trouble), then arrive once each in
    journal order."""
    sink_port = free_port()
    config = sentinel_config(tmp_path, sink_port, backend=backend)
    config.write_text(config.read_text() + "\n[delivery]\ntrouble_after = 0.5\n")
    out = tmp_path / "sink"
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["1001", "1002"], 5)
        with trio.fail_after(10):
            while not backend.sql("SELECT 1 FROM links WHERE trouble_open = 1"):
                await trio.sleep(0.1)
        capsys.readouterr()
        assert receiver_cli(["--config", str(config), "outputs", "--format", "json"]) == 0
        [status] = json.loads(capsys.readouterr().out)
        assert (status["name"], status["backlog"], status["trouble"]) == ("automation", 11, True)
        sink = RecordingSink(out)
        await nursery.start(sink.serve, "127.0.0.1", sink_port)
        with trio.fail_after(20):
            while len(sink.order) < 12:  # ten alarms, the trouble and its restore
                await trio.sleep(0.05)
        running.service.request_shutdown()
        nursery.cancel_scope.cancel()
    assert sink.order == [row[0] for row in backend.sql("SELECT id FROM signals ORDER BY seq")]
    assert sink.duplicates == 0


async def test_history_and_replay_read_the_store(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver history` and `receiver-sim replay --from-journal` read what was stored."""
    config = receiver_config(tmp_path, backend)
    async with trio.open_nursery() as nursery:
        running = await start_receiver(nursery, config)
        await send_alarms(running.ports.dc09, ["5001", "5002"], 2)
        running.service.request_shutdown()
    capsys.readouterr()
    code = receiver_cli(
        ["--config", str(config), "history", "--format", "json", "--account", "5002"]
    )
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [(r["account"], r["sia"]) for r in rows] == [("5002", "BA"), ("5002", "BA")]
    source = backend.url or str(backend.path)
    frames, skipped = recorded_frames(source, accounts=["5001"])
    assert (len(frames), skipped) == (2, 0)
    assert {f.account for f in frames} == {"5001"}


def test_config_takes_a_url_or_a_path_never_both(tmp_path: Path) -> None:
    """`[store] url` selects PostgreSQL, `path` SQLite; both, or a URL that is not PostgreSQL's,
    is refused by `receiver config check` with the key named."""
    config = parse_config('[store]\nurl = "postgresql://rx@127.0.0.1:5432/alarms"\n')
    assert config.store.url == "postgresql://rx@127.0.0.1:5432/alarms"
    both = tmp_path / "both.toml"
    both.write_text('[store]\npath = "x.sqlite3"\nurl = "postgresql://rx@127.0.0.1/a"\n')
    assert receiver_cli(["--config", str(both), "config", "check"]) == 2
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('[store]\nurl = "mysql://rx@127.0.0.1/a"\n')
    assert receiver_cli(["--config", str(wrong), "config", "check"]) == 2


def test_config_check_shows_the_store_in_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The effective configuration of a PostgreSQL node names its url (and no SQLite path) and
    parses back to the same values."""
    path = tmp_path / "pg.toml"
    path.write_text('[store]\nurl = "postgresql://rx@127.0.0.1:5432/alarms"\n')
    capsys.readouterr()
    assert receiver_cli(["--config", str(path), "config", "check"]) == 0
    shown = capsys.readouterr().out
    assert 'url = "postgresql://rx@127.0.0.1:5432/alarms"' in shown
    assert "var/receiver.sqlite3" not in shown
    assert parse_config(shown).store == parse_config(path.read_text()).store


def test_open_store_picks_the_backend(tmp_path: Path, backend: Backend) -> None:
    """One factory: `[store] url` gives the PostgreSQL store, `path` the SQLite one."""
    config = parse_config(backend.store_toml())
    store = open_store(config.store)
    try:
        assert type(store).__name__ == (
            "PostgresStore" if backend.name == "postgresql" else "SqliteStore"
        )
        assert store.last_seq() == 0
    finally:
        store.close()


def test_a_postgresql_store_that_cannot_be_reached_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver serve` and `receiver history` on a server nobody listens on: exit 1, one line
    naming the store (without its password)."""
    config = tmp_path / "pg.toml"
    config.write_text('[store]\nurl = "postgresql://rx:secret@127.0.0.1:1/alarms"\n')
    for command in (["serve"], ["history"]):
        capsys.readouterr()
        assert receiver_cli(["--config", str(config), *command]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "postgresql://rx:***@127.0.0.1:1/alarms" in err
        assert "secret" not in err


def test_the_reports_and_verify_on_an_unreachable_postgresql_store_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver report` and `receiver journal verify` read PostgreSQL too: a server nobody
    listens on is one line naming the store (exit 1), and no SQLite file appears beside the
    configuration."""
    config = tmp_path / "pg.toml"
    config.write_text('[store]\nurl = "postgresql://rx@127.0.0.1:1/alarms"\n')
    commands = (
        ["report", "bridges"],
        ["report", "usage", "--dealer", "D1", "--month", "2026-11"],
        ["journal", "verify"],
    )
    for command in commands:
        capsys.readouterr()
        assert receiver_cli(["--config", str(config), *command]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert "postgresql://rx@127.0.0.1:1/alarms" in err
    assert list(tmp_path.iterdir()) == [config]
