"""The tamper-evident trail and the billing report on both stores: the chain two nodes extend
at once verifies, a row edited by hand is named by `receiver journal verify` (exit 1), and
`receiver report usage` / `report bridges` give the same figures on SQLite and PostgreSQL.

Rows are written through the stores (as the journal writer does), edited behind their back
with plain SQL, and read back by the CLI as a user types it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from protocols.signal import ContactIdView, SiaView, Signal, Source, new_signal_id
from receiver.cli import main as receiver_cli
from receiver.store.interface import JournalWrite
from receiver.store.postgres.store import PostgresStore
from receiver.store.sqlite_store import SqliteStore
from tests.conftest import Backend
from tests.receiver.conftest import registry_setup

NODES = 2
BATCHES = 15  # per node
BATCH = 20  # signals per append


def config_for(tmp_path: Path, backend: Backend) -> Path:
    path = tmp_path / "receiver.toml"
    path.write_text(backend.store_toml(), encoding="utf-8")
    return path


def cli(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = receiver_cli(["--config", str(config), *args])
    return code, capsys.readouterr().out


def edit(backend: Backend, sql: str) -> None:
    """A change made behind the store's back, committed (what a forger would do)."""
    if backend.url is not None:
        with psycopg.connect(backend.url, autocommit=True) as conn:
            conn.execute(sql.encode())
        return
    assert backend.path is not None
    lite = sqlite3.connect(backend.path)
    with lite:
        lite.execute(sql)
    lite.close()


def alarm(
    account: str,
    when: datetime,
    *,
    sequence: int = 1,
    account_id: int | None = None,
    site_id: int | None = None,
    category: str = "alarm",
    source: Source = Source.DC09,
    device: str | None = None,
    channel: int | None = None,
) -> Signal:
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=source,
        peer="127.0.0.1:5000",
        account=account,
        station="S1",
        account_id=account_id,
        effective_account=account if account_id is not None else None,
        site_id=site_id,
        token="SIA-DCS",
        sequence=f"{sequence:04d}",
        sia=SiaView("BA", f"{sequence % 99 + 1:02d}", (("ti", "12:00"),), "Front door"),
        category=category,
        device=device,
        channel=channel,
        raw=b'\n0000"SIA-DCS"0001L0#' + account.encode() + b"[#|Nri1/BA01]\r",
    )


def append_batches(store: Any, node: int, start: threading.Barrier) -> None:
    start.wait(timeout=30)
    for batch in range(BATCHES):
        now = datetime.now(UTC)
        signals = [alarm(f"{node}{n:03d}", now, sequence=batch * BATCH + n) for n in range(BATCH)]
        keys = [f"{node}|{s.account}|{s.sequence}" for s in signals]
        [outcome] = store.append([JournalWrite(signals=signals, keys=keys)])
        assert len(outcome.stored) == BATCH


def test_the_chain_two_nodes_extend_at_once_verifies(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two stores (two nodes, two connections) append at the same moment: every row is in one
    chain in seq order, and `receiver journal verify` counts them all as intact."""
    stores = [backend.open() for _ in range(NODES)]
    start = threading.Barrier(NODES)
    errors: list[BaseException] = []

    def run(node: int) -> None:
        try:
            append_batches(stores[node], node, start)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(node,)) for node in range(NODES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for store in stores:
        store.close()
    assert not errors, errors
    total = NODES * BATCHES * BATCH
    assert backend.sql("SELECT count(*), count(chain_hash), min(seq), max(seq) FROM signals") == [
        (total, total, 1, total)
    ]
    code, out = cli(config_for(tmp_path, backend), capsys, "journal", "verify")
    assert code == 0, out
    assert f"verified {total} journal rows (seq 1..{total}): the chain is intact" in out


def test_a_row_updated_by_hand_is_named_by_verify(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """An UPDATE of one column makes verify exit 1 naming that row; a deleted row is named by
    the next one; --since starts after an edit made earlier."""
    store = backend.open()
    first = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    later = datetime(2026, 11, 4, 10, 0, tzinfo=UTC)
    signals = [alarm("1234", first, sequence=n) for n in range(1, 4)]
    signals += [alarm("1234", later, sequence=n) for n in range(4, 6)]
    store.append([JournalWrite(signals=signals[:3]), JournalWrite(signals=signals[3:])])
    store.close()
    config = config_for(tmp_path, backend)
    assert cli(config, capsys, "journal", "verify")[0] == 0

    edit(backend, "UPDATE signals SET zone = '099' WHERE seq = 2")
    code, out = cli(config, capsys, "journal", "verify")
    assert code == 1
    assert out.startswith(f"journal row seq 2 (signal {signals[1].id}, received 2026-11-03T10:00")
    assert "its fields or its chain hash differ" in out
    assert "1 rows before it verified" in out

    code, out = cli(config, capsys, "journal", "verify", "--since", "2026-11-04T00:00:00")
    assert code == 0, out
    assert "verified 2 journal rows (seq 4..5)" in out

    edit(backend, "DELETE FROM signals WHERE seq = 4")
    code, out = cli(config, capsys, "journal", "verify", "--since", "2026-11-04T00:00:00")
    assert code == 1
    assert "journal row seq 5 " in out
    assert "rows 4..4 before it were removed" in out


def test_postgresql_writes_the_same_chain_as_sqlite(tmp_path: Path, pg_url: str) -> None:
    """The same signals appended to each store get the same chain hashes, row by row: one
    court expert's script checks either database."""
    when = datetime(2026, 11, 3, 10, 0, tzinfo=UTC)
    signals = [alarm("1234", when, sequence=n) for n in range(1, 4)]
    signals.append(
        Signal(
            id=new_signal_id(when),
            received_at=when,
            source=Source.BRIDGE,
            account="1234",
            cid=ContactIdView("E", "130", "01", "002"),
            device="CKB304-0001",
            channel=2,
            extended=(("camera", "Gate"),),
            flags=frozenset({"unknown_account"}),
        )
    )
    hashes = []
    for store in (SqliteStore(tmp_path / "s.sqlite3"), PostgresStore(pg_url)):
        store.append([JournalWrite(signals=signals[:2]), JournalWrite(signals=signals[2:])])
        store.close()
    lite = sqlite3.connect(tmp_path / "s.sqlite3")
    hashes.append(
        [bytes(h) for (h,) in lite.execute("SELECT chain_hash FROM signals ORDER BY seq")]
    )
    lite.close()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT chain_hash FROM signals ORDER BY seq").fetchall()
        hashes.append([bytes(h) for (h,) in rows])
    assert len(hashes[0]) == 4
    assert hashes[0] == hashes[1]


def registry(config: Path) -> None:
    registry_setup(
        config,
        ["stations", "add", "S1"],
        ["dealers", "add", "D1"],
        ["sites", "add", "Main Street", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "1234", "--site", "Main Street"],
        [
            *("bridges", "add", "--site", "Main Street", "--serial", "CKB304-0001"),
            *("--token", "t1", "--channels", "4", "--model", "CKB304"),
        ],
        ["sites", "add", "Oak Road", "--dealer", "D1"],
        ["accounts", "add", "--station", "S1", "2222", "--site", "Oak Road"],
        ["dealers", "add", "D2"],
        ["sites", "add", "Elm", "--dealer", "D2"],
        ["accounts", "add", "--station", "S1", "5555", "--site", "Elm"],
    )


def test_report_usage_and_bridges_give_the_same_figures_on_both_stores(
    tmp_path: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same registry and signals: the same usage rows (by category, bridges, channels,
    days online; October and the other dealer left out) and the same bridge report."""
    config = config_for(tmp_path, backend)
    registry(config)
    store = backend.open()
    ids = {
        n: (int(i), int(s)) for n, i, s in backend.sql("SELECT number, id, site_id FROM accounts")
    }

    def at(moment: str) -> datetime:
        return datetime.fromisoformat(moment).replace(tzinfo=UTC)

    main_id, main_site = ids["1234"]
    elm_id, elm_site = ids["5555"]
    signals = [
        alarm("1234", at("2026-11-03T10:00:00"), sequence=1, account_id=main_id, site_id=main_site),
        alarm(
            "1234",
            at("2026-11-17T08:00:00"),
            sequence=2,
            category="trouble",
            account_id=main_id,
            site_id=main_site,
        ),
        alarm(
            "1234",
            at("2026-10-31T23:59:59.999999"),
            sequence=3,
            account_id=main_id,
            site_id=main_site,
        ),
        alarm(
            "1234",
            at("2026-11-03T11:00:00"),
            sequence=4,
            source=Source.BRIDGE,
            device="CKB304-0001",
            channel=2,
            account_id=main_id,
            site_id=main_site,
        ),
        alarm("5555", at("2026-11-05T12:00:00"), account_id=elm_id, site_id=elm_site),
    ]
    store.append([JournalWrite(signals=signals)])
    store.close()

    code, out = cli(config, capsys, "report", "usage", "--dealer", "D1", "--month", "2026-11")
    assert code == 0, out
    code, out = cli(
        config,
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
    assert code == 0, out
    zero = dict.fromkeys(("supervisory", "open_close", "bypass", "test", "other"), 0)
    assert json.loads(out) == [
        {
            **{"month": "2026-11", "dealer": "D1", "site": "Main Street", "account": "1234"},
            **{"station": "S1", "signals": 3, "alarm": 2, "trouble": 1, **zero},
            **{"bridges": 1, "channels": 1, "days_online": 2},
        },
        {
            **{"month": "2026-11", "dealer": "D1", "site": "Oak Road", "account": "2222"},
            **{"station": "S1", "signals": 0, "alarm": 0, "trouble": 0, **zero},
            **{"bridges": 0, "channels": 0, "days_online": 0},
        },
    ]
    code, out = cli(config, capsys, "report", "usage", "--dealer", "D9", "--month", "2026-11")
    assert code == 1

    code, out = cli(config, capsys, "report", "bridges", "--format", "json")
    assert code == 0, out
    [row] = json.loads(out)
    assert {k: row[k] for k in ("serial", "site", "dealer", "account", "model", "status")} == {
        "serial": "CKB304-0001",
        "site": "Main Street",
        "dealer": "D1",
        "account": "1234",
        "model": "CKB304",
        "status": "never",
    }
    code, out = cli(config, capsys, "report", "bridges", "--dealer", "D2", "--format", "json")
    assert (code, json.loads(out)) == (0, [])
