"""An account typed finds the same signals on PostgreSQL as on SQLite whatever the database's
locale: both fold the account as received to upper case in ASCII letters only (SQLite's
``upper()``; PostgreSQL's ``upper(account COLLATE "C")``), so "é12" typed does not also find
"é12" as received on one backend and not on the other."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from receiver.history import HistoryQuery
from receiver.store import history_sql
from receiver.store.console_sql import SignalFilter
from receiver.store.interface import JournalWrite
from receiver.store.postgres.cluster import Cluster
from receiver.store.postgres.store import PostgresStore
from receiver.store.sqlite_store import SqliteStore
from tests.store.test_history_plan import signal

# Accounts as received (no registry account): lower-case non-ASCII letters, a German sharp s
# (a locale's upper() may make it "SS"), plain ASCII in mixed case, and upper-case non-ASCII.
RECEIVED = ["é12", "straße", "Ab1", "ÉTÉ"]
TYPED = ["é12", "É12", " straße ", "STRASSE", "STRAßE", "ab1", "AB1", "été", "ÉTÉ"]

# A database whose upper() folds letters outside ASCII (PostgreSQL 15: ICU, else glibc's).
LOCALES = (
    "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C'",
    "LC_COLLATE 'C.utf8' LC_CTYPE 'C.utf8'",
)
DATABASE = "fold_test"


@pytest.fixture
def locale_url(postgres_cluster: Cluster) -> Iterator[str]:
    """A migrated database of the session's cluster whose ``upper('é')`` is ``'É'``."""
    with psycopg.connect(postgres_cluster.url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        for locale in LOCALES:
            try:
                admin.execute(f"CREATE DATABASE {DATABASE} TEMPLATE template0 {locale}")
                break
            except psycopg.Error:
                continue
        else:
            pytest.skip("no locale folding letters outside ASCII in this PostgreSQL build")
    url = postgres_cluster.url_for(DATABASE)
    try:
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT upper('é')").fetchone() == ("É",)  # the locale's fold
        PostgresStore(url).open().close()  # migrated
        yield url
    finally:
        with psycopg.connect(postgres_cluster.url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")


def accounts(rows: list[Any]) -> list[str]:
    return [row["account"] for row in rows]


def test_an_account_typed_finds_the_same_rows_on_postgresql_as_on_sqlite(
    locale_url: str, tmp_path: Path
) -> None:
    """Each account typed finds the same signals in `receiver history` (the store's history
    and --follow), the console's list, and the account filter read either way (by the
    account's indexes, walking the journal), on a PostgreSQL database with a locale as in a
    SQLite file. Before, PostgreSQL's upper() followed the locale: "é12" typed found the
    "é12" row there ("É12" both) and nothing in SQLite."""
    writes = [
        JournalWrite(signals=[signal(n, account=account, effective=None)], keys=[None])
        for n, account in enumerate(RECEIVED)
    ]
    lite = SqliteStore(tmp_path / "store.sqlite3")
    pg = PostgresStore(locale_url)
    lite_console, pg_console = lite.console(), pg.console()
    lite_raw = sqlite3.connect(tmp_path / "store.sqlite3")
    lite_raw.row_factory = sqlite3.Row
    pg_raw = psycopg.connect(locale_url, row_factory=psycopg.rows.dict_row)
    found: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
    try:
        for store in (lite, pg):
            store.append(writes)
        for typed in TYPED:
            query = HistoryQuery(account=typed)
            seen = found.setdefault(typed, {})
            seen["history"] = (
                [s.account for _, s in lite.history(query)],
                [s.account for _, s in pg.history(query)],
            )
            seen["follow"] = (
                [s.account for s in lite.history_after(query, 0, 50)[1]],
                [s.account for s in pg.history_after(query, 0, 50)[1]],
            )
            listed = SignalFilter(account=typed)
            seen["console"] = (
                accounts(lite_console.signal_rows(listed)),
                accounts(pg_console.signal_rows(listed)),
            )
            for indexed in (True, False):
                sql = "SELECT account FROM {} WHERE {} ORDER BY seq"
                where, params = history_sql.conditions(query, history_sql.SQLITE, indexed=indexed)
                lite_rows = lite_raw.execute(
                    sql.format(history_sql.SQLITE.table, where[0]), params
                ).fetchall()
                where, params = history_sql.conditions(query, history_sql.POSTGRES, indexed=indexed)
                pg_rows = pg_raw.execute(
                    sql.format("signals", where[0].replace("?", "%s")).encode(), params
                ).fetchall()
                seen[f"indexed={indexed}"] = (accounts(lite_rows), accounts(pg_rows))
    finally:
        lite_raw.close()
        pg_raw.close()
        lite_console.close()
        pg_console.close()
        lite.close()
        pg.close()
    assert {t: {k: pg for k, (_, pg) in s.items()} for t, s in found.items()} == {
        t: {k: mine for k, (mine, _) in s.items()} for t, s in found.items()
    }
    assert found["é12"]["history"] == ([], [])  # "É12" is neither backend's fold of "é12"
    assert found["ab1"]["console"] == (["Ab1"], ["Ab1"])  # ASCII still folds
    assert found["été"]["indexed=True"] == (["ÉTÉ"], ["ÉTÉ"])
