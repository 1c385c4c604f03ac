"""Every index on the SQLite journal table is read by a query the receiver runs: each one costs
every append a B-tree insert (a scattered page per account for an account-keyed index), so an
index no query reads is pure cost. The queries are captured as the store runs them (history,
the console's list, the duplicate lookup, retention, the chain, backlog, bridge arming,
usage), then planned with EXPLAIN QUERY PLAN on a journal holding rows."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from protocols.signal import ContactIdView, Signal, Source, new_signal_id
from receiver.history import HistoryQuery
from receiver.store import console_sql
from receiver.store.interface import JournalWrite
from receiver.store.postgres import store as pg_module
from receiver.store.postgres.store import PostgresStore
from receiver.store.sqlite_store import SqliteStore


def _signals(now: datetime, count: int) -> list[Signal]:
    return [
        Signal(
            id=new_signal_id(now),
            received_at=now + timedelta(milliseconds=n),
            source=Source.DC09 if n % 3 else Source.BRIDGE,
            account=f"{n % 40:04X}",
            effective_account=f"{n % 40:04X}",
            station="S1" if n % 2 else None,
            token="ADM-CID",
            sequence=f"{n % 9999 + 1:04d}",
            cid=ContactIdView("E", "130" if n % 5 else "401", "01", "005"),
            device="SER-1" if n % 3 == 0 else None,
            category="alarm" if n % 4 else "burglary",
            raw=b"\nraw\r",
        )
        for n in range(count)
    ]


def _planned_indexes(conn: sqlite3.Connection, statements: list[str]) -> set[str]:
    """Every index named in the plans of ``statements`` (their parameters already inlined)."""
    used: set[str] = set()
    for sql in statements:
        if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "INSERT", "WITH")):
            continue
        for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
            detail = str(row[3])
            for marker in ("USING INDEX ", "USING COVERING INDEX "):
                if marker in detail:
                    used.add(detail.split(marker, 1)[1].split(maxsplit=1)[0])
    return used


def test_every_index_on_the_journal_is_read_by_a_query(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "j.sqlite3")
    now = datetime.now(UTC)
    first = _signals(now, 400)
    store.append([JournalWrite(signals=first, keys=[f"k{s.id}" for s in first])])
    store._run(lambda conn: conn.execute("ANALYZE"))  # the plans as statistics steer them too
    statements: list[str] = []
    store._run(lambda conn: conn.set_trace_callback(statements.append))
    retry = first[:5] + _signals(now + timedelta(seconds=1), 20)
    store.append([JournalWrite(signals=retry, keys=[f"k{s.id}" for s in retry])])
    for query in (
        HistoryQuery(),
        HistoryQuery(account="0007"),
        HistoryQuery(account="0007", since=now, until=now + timedelta(seconds=9)),
        HistoryQuery(station="S1", code="E130"),
        HistoryQuery(code="BA"),
    ):
        store.history(query)
        store.history_after(query, 10, 50)
    store.read_after(0, 100)
    store.backlog(10)
    store.recent_keys(0)
    store.arming_since(0)
    store.prune_plan(0, 100)
    store.verify_journal(since_us=int(now.timestamp() * 1e6) + 100_000)
    store.usage_rows("nobody", 0, 1 << 60)
    store._run(lambda conn: console_sql.signal_rows(conn, console_sql.SignalFilter()))
    store._run(lambda conn: console_sql.signal_rows(conn, console_sql.SignalFilter(account="0007")))
    store._run(lambda conn: console_sql.signal_row(conn, first[3].id))
    store._run(lambda conn: console_sql.waiting_alarms(conn, 0, 50))
    store._run(lambda conn: conn.set_trace_callback(None))
    indexes = {
        str(row[0])
        for row in store._run(
            lambda conn: conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'signals'"
            ).fetchall()
        )
    }
    used = store._run(lambda conn: _planned_indexes(conn, statements))
    store.close()
    assert indexes - used == set()


def test_postgres_reuses_the_append_s_statements_and_has_no_unused_account_index(
    pg_store: PostgresStore,
) -> None:
    """The PostgreSQL append's statements are parsed once per connection and then run
    prepared (psycopg prepares a statement from its fifth run; one SQL text serves every
    batch size, the batch going in as arrays and binary COPY); the old (effective_account,
    received_us) index, which no query used (EXPLAIN, after ANALYZE), stays dropped; the
    history's account indexes are tests/store/test_history_plan.py's."""
    now = datetime.now(UTC)
    for n in range(8):
        batch = _signals(now + timedelta(seconds=n), 3 + n)
        pg_store.append([JournalWrite(signals=batch, keys=[f"k{s.id}" for s in batch])])
    with pg_store._use("test") as conn:
        prepared = [
            str(row["statement"])
            for row in conn.execute("SELECT statement FROM pg_prepared_statements")
        ]
        indexes = {
            str(row["indexname"])
            for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'signals'")
        }
    for statement in (pg_module.CLAIM_KEYS, pg_module.CHAIN_HEAD):
        assert any(statement.split("%s")[0].strip()[:60] in p for p in prepared)
    assert "signals_by_account" not in indexes
    assert "signals_by_time" in indexes
