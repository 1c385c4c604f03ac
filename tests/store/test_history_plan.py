"""History by account reads the account's indexes, not the whole journal, and finds exactly
what the plain ``effective_account = X OR upper(account) = X`` filter found.

The plans are read with EXPLAIN QUERY PLAN (SQLite) and EXPLAIN (PostgreSQL) of the statements
the store runs; the equivalence is a property over random journals (accounts known and unknown,
lines with a prefix, bridges known by a lower-case serial, the receiver's own signals without a
dedupe key, mixed case and spaces as typed), against the old statements kept here verbatim; and
``receiver history --account`` prints what the old query found."""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.cli import main as receiver_cli
from receiver.history import HistoryQuery, history_row
from receiver.store import console_sql, history_sql
from receiver.store.interface import JournalWrite
from receiver.store.postgres import console_sql as pg_console_sql
from receiver.store.postgres import store as pg_module
from receiver.store.postgres.statements import StatementConnection
from receiver.store.postgres.store import PostgresStore
from receiver.store.signal_rows import to_us
from receiver.store.sqlite_store import SqliteStore
from tests.receiver.conftest import write_config

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

# The statements before the account's indexes, as they were (the shape to stay equal to).
OLD_ACCOUNT = "(effective_account = ? OR upper(account) = ?)"


def old_conditions(query: HistoryQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.account:
        where.append(OLD_ACCOUNT)
        params += [query.account.strip().upper()] * 2
    if query.station:
        where.append("station = ?")
        params.append(query.station)
    if query.since:
        where.append("received_us >= ?")
        params.append(to_us(query.since))
    if query.until:
        where.append("received_us <= ?")
        params.append(to_us(query.until))
    if query.code:
        condition, values = history_sql.code_condition(query.code)
        where.append(condition)
        params += values
    return where, params


def old_history(conn: sqlite3.Connection, query: HistoryQuery) -> list[int]:
    where, params = old_conditions(query)
    sql = "SELECT seq FROM signals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_us DESC, seq DESC"
    if query.limit > 0:
        sql += " LIMIT ?"
        params.append(query.limit)
    return [int(row[0]) for row in conn.execute(sql, params)]


def old_history_after(
    conn: sqlite3.Connection, query: HistoryQuery, seq: int, limit: int
) -> tuple[int, list[int]]:
    newest = int(conn.execute("SELECT coalesce(max(seq), 0) FROM signals").fetchone()[0])
    if newest <= seq:
        return seq, []
    where, params = old_conditions(query)
    where = ["seq > ?", "seq <= ?", *where]
    sql = f"SELECT seq FROM signals WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    rows = [int(row[0]) for row in conn.execute(sql, (seq, newest, *params, limit))]
    if len(rows) == limit:
        newest = rows[-1]
    return newest, rows


def old_console(conn: sqlite3.Connection, account: str, after_seq: int, limit: int) -> list[int]:
    value = account.strip().upper()
    where: list[str] = [OLD_ACCOUNT]
    params: list[Any] = [value, value]
    if after_seq:
        where.append("seq > ?")
        params.append(after_seq)
    sql = f"SELECT seq FROM signals WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
    return [int(row[0]) for row in conn.execute(sql, (*params, limit))]


# -- journals ----------------------------------------------------------------------------------


def signal(
    n: int,
    *,
    account: str,
    effective: str | None,
    source: Source = Source.DC09,
    at: datetime | None = None,
    station: str | None = None,
    code: str = "130",
) -> Signal:
    when = at or T0 + timedelta(seconds=n)
    return Signal(
        id=new_signal_id(when),
        received_at=when,
        source=source,
        account=account,
        effective_account=effective,
        station=station,
        token="ADM-CID",
        sequence=f"{n % 9999 + 1:04d}",
        cid=ContactIdView("E", code, "01", "005"),
        raw=b"\nraw\r",
    )


def store_rows(store: SqliteStore | PostgresStore, rows: Sequence[tuple[Signal, bool]]) -> None:
    """Append ``rows`` (signal, whether it carries a dedupe key), 200 to a batch."""
    for start in range(0, len(rows), 200):
        chunk = rows[start : start + 200]
        store.append(
            [
                JournalWrite(
                    signals=[s for s, _ in chunk],
                    keys=[f"key-{s.id}" if keyed else None for s, keyed in chunk],
                )
            ]
        )


def station_journal() -> list[tuple[Signal, bool]]:
    """A busy panel, and a rare account in every form: unknown (mixed case), on a line with a
    prefix, and the receiver's supervision trouble for it (no dedupe key)."""
    rows = [(signal(n, account="BEEF", effective="BEEF"), True) for n in range(3000)]
    rows[500] = (signal(500, account="c0de", effective="C0DE"), True)
    rows[1500] = (signal(1500, account="c0de", effective="L1C0DE"), True)
    rows[2500] = (
        signal(2500, account="", effective="C0DE", source=Source.RECEIVER, code="350"),
        False,
    )
    return rows


@contextmanager
def traced(store: SqliteStore) -> Iterator[list[str]]:
    statements: list[str] = []
    store._run(lambda conn: conn.set_trace_callback(statements.append))
    try:
        yield statements
    finally:
        store._run(lambda conn: conn.set_trace_callback(None))


def plan(store: SqliteStore, sql: str) -> str:
    rows = store._run(lambda conn: conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())
    return "\n".join(str(row[3]) for row in rows)


def reading_plan(store: SqliteStore, statements: list[str]) -> str:
    """The plan of the statement that read the signals (the last one run)."""
    return plan(store, statements[-1])


ACCOUNT_INDEXES = (
    "signals_by_dedupe",
    "signals_by_account_unkeyed",
    "signals_by_account_as_received",
)


@pytest.fixture
def station(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "j.sqlite3")
    store_rows(store, station_journal())
    store._run(lambda conn: conn.execute("ANALYZE"))  # as statistics steer the planner too
    try:
        yield store
    finally:
        store.close()


# -- SQLite plans ------------------------------------------------------------------------------


def test_a_rare_account_s_history_reads_its_indexes_not_the_journal(station: SqliteStore) -> None:
    with traced(station) as statements:
        found = station.history(HistoryQuery(account=" c0De "))
    assert [s.effective_account for _, s in found] == ["C0DE", "L1C0DE", "C0DE"]
    read = reading_plan(station, statements)
    for index in ACCOUNT_INDEXES:
        assert index in read, read
    assert "signals_by_time" not in read
    assert "SCAN signals" not in read  # every row by its seq
    # The count that chose the plan read the same indexes, bounded.
    assert all(index in plan(station, statements[-2]) for index in ACCOUNT_INDEXES)


def test_a_rare_account_s_follow_and_console_list_read_its_indexes(station: SqliteStore) -> None:
    with traced(station) as statements:
        newest, signals = station.history_after(HistoryQuery(account="c0de"), 0, 1000)
    assert (newest, len(signals)) == (3000, 3)
    read = reading_plan(station, statements)
    assert all(index in read for index in ACCOUNT_INDEXES), read
    with traced(station) as statements:
        rows = station._run(
            lambda conn: console_sql.signal_rows(conn, console_sql.SignalFilter(account="C0DE"))
        )
    assert [row["seq"] for row in rows] == [2501, 1501, 501]
    read = reading_plan(station, statements)
    assert all(index in read for index in ACCOUNT_INDEXES), read
    assert "SCAN signals" not in read


def test_a_busy_account_s_latest_are_found_walking_the_journal_from_its_end(
    station: SqliteStore,
) -> None:
    """An account with most of the journal: its newest 50 are the journal's newest, so walking
    back in time beats reading its 3,000 rows by index (the count stops at
    sqrt(50 * 3000 / 8))."""
    with traced(station) as statements:
        found = station.history(HistoryQuery(account="beef", limit=50))
    assert len(found) == 50
    read = reading_plan(station, statements)
    assert "signals_by_time" in read, read
    assert not any(index in read for index in ACCOUNT_INDEXES)
    # Without a limit every row of the account is read: by index.
    with traced(station) as statements:
        assert len(station.history(HistoryQuery(account="beef", limit=0))) == 2997
    assert "signals_by_dedupe" in reading_plan(station, statements)


def test_the_count_that_chooses_is_bounded() -> None:
    counted: list[list[Any]] = []

    def scalar(sql: str, params: Sequence[Any]) -> Any:
        counted.append(list(params))
        return params[-1]  # as many rows as the count was allowed to read

    assert not history_sql.by_account_index(scalar, history_sql.SQLITE, "x", 50, 2_000_000)
    assert counted[-1] == ["X", "x", "X", "x", "X", 3_536]  # sqrt(50 * 2,000,000 / 8) + 1
    assert history_sql.by_account_index(scalar, history_sql.SQLITE, "x", 0, 2_000_000)
    assert len(counted) == 1  # no limit: nothing to count


# -- PostgreSQL plans --------------------------------------------------------------------------


def test_postgres_reads_a_rare_account_by_its_indexes(pg_store: PostgresStore) -> None:
    store_rows(pg_store, station_journal())
    with pg_store._use("test") as conn:
        conn.execute("ANALYZE signals")
        query = HistoryQuery(account="c0de")
        sql, params = history_sql.history_statement(
            pg_module._scalar(conn), "*", query, history_sql.POSTGRES
        )
        read = "\n".join(
            str(row["QUERY PLAN"])
            for row in conn.execute(pg_module._marks(f"EXPLAIN {sql}"), params).fetchall()
        )
    assert "signals_by_effective_account" in read, read
    assert "signals_by_account_as_received" in read, read
    assert "Seq Scan" not in read, read
    found = pg_store.history(query)
    assert [s.effective_account for _, s in found] == ["C0DE", "L1C0DE", "C0DE"]
    newest, signals = pg_store.history_after(query, 0, 2)
    assert ([s.effective_account for s in signals], newest) == (["C0DE", "L1C0DE"], 1501)
    console = StatementConnection.open(pg_store.url)
    try:
        listed = pg_console_sql.signal_rows(console, console_sql.SignalFilter(account="C0de"))
    finally:
        console.close()
    assert [row["seq"] for row in listed] == [2501, 1501, 501]


# -- the same rows as the OR -------------------------------------------------------------------

# Non-ASCII too: SQLite's upper folds ASCII letters only, Python's upper folds them all.
ACCOUNTS = ("ab12", "AB12", "0042", "ser-9", "", "é1", "ss")
TYPED = ("ab12", "AB12", " Ab12 ", "0042", "L10042", "ser-9", "SER-9", "Z9", "é1", "É1", "ß")


@st.composite
def journal_rows(draw: st.DrawFn) -> list[tuple[Signal, bool]]:
    rows = []
    for n in range(draw(st.integers(0, 40))):
        account = draw(st.sampled_from(ACCOUNTS))
        effective = draw(
            st.sampled_from(
                [
                    account.upper(),  # unknown: the upper-cased number
                    f"L1{account.upper()}",  # a line with a prefix
                    account,  # a bridge known by its serial, as it came
                    None,  # the receiver's own
                    "AB12",
                ]
            )
        )
        when = T0 + timedelta(seconds=draw(st.integers(0, 20)))  # ties in time
        rows.append(
            (
                signal(
                    n,
                    account=account,
                    effective=effective,
                    at=when,
                    station=draw(st.sampled_from([None, "S1"])),
                    code=draw(st.sampled_from(["130", "110"])),
                ),
                draw(st.booleans()),
            )
        )
    return rows


queries = st.builds(
    HistoryQuery,
    account=st.sampled_from(TYPED),
    station=st.sampled_from([None, "S1"]),
    since=st.sampled_from([None, T0 + timedelta(seconds=5)]),
    until=st.sampled_from([None, T0 + timedelta(seconds=15)]),
    code=st.sampled_from([None, "E110", "130"]),
    limit=st.integers(0, 6),
)


@contextmanager
def plans_forced(indexed: bool | None) -> Iterator[None]:
    """The store's own choice (None), or every account query read one way."""
    if indexed is None:
        yield
        return
    with mock.patch.object(history_sql, "by_account_index", return_value=indexed):
        yield


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(
    rows=journal_rows(),
    query=queries,
    after=st.integers(0, 45),
    page=st.integers(1, 5),
)
def test_the_indexed_reads_find_exactly_what_the_or_found(
    rows: list[tuple[Signal, bool]], query: HistoryQuery, after: int, page: int
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "j.sqlite3")
        try:
            store_rows(store, rows)
            old = store._run(lambda conn: old_history(conn, query))
            old_after = store._run(lambda conn: old_history_after(conn, query, after, page))
            old_list = store._run(lambda conn: old_console(conn, query.account or "", after, page))
            ids = {seq: s.id for seq, s in store.read_after(0, 1000)}
            for indexed in (None, True, False):
                with plans_forced(indexed):
                    assert [seq for seq, _ in store.history(query)] == old
                    newest, signals = store.history_after(query, after, page)
                    assert (newest, [s.id for s in signals]) == (
                        old_after[0],
                        [ids[seq] for seq in old_after[1]],
                    )
                    listed = store._run(
                        lambda conn: console_sql.signal_rows(
                            conn,
                            console_sql.SignalFilter(
                                account=query.account, after_seq=after, limit=page
                            ),
                        )
                    )
                    assert [int(row["seq"]) for row in listed] == old_list
        finally:
            store.close()


# -- the CLI -----------------------------------------------------------------------------------


def test_history_account_prints_what_the_or_found(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver history --account` as a user types it, on a station's journal: the rare
    account's rows (typed in another case), and the busy one's newest, as the old query found."""
    config = write_config(tmp_path)
    store = SqliteStore(tmp_path / "receiver.sqlite3")
    store_rows(store, station_journal())
    for typed, limit in (("c0de", "50"), ("Beef", "5"), ("L1C0DE", "50"), ("nobody", "50")):
        query = HistoryQuery(account=typed, limit=int(limit))
        wanted = store._run(lambda conn, q=query: old_history(conn, q))  # type: ignore[misc]
        by_seq = dict(store.read_after(0, 10_000))
        capsys.readouterr()
        args = ["history", "--format", "json", "--account", typed, "--limit", limit]
        code = receiver_cli(["--config", str(config), *args])
        out, err = capsys.readouterr()
        assert (code, err) == (0, "")
        expected = [history_row(by_seq[seq]) for seq in wanted]
        assert json.loads(out) == json.loads(json.dumps(expected)), typed
    store.close()
