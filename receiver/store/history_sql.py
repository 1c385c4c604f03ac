"""The history filters as SQL conditions (``?`` placeholders; PostgreSQL swaps in ``%s``).

``--code`` takes what the table shows: ``E110`` (qualifier and Contact ID code), ``110`` (any
qualifier), or a SIA code (``BA``, matched on the SIA view).

An account filter matches the account as automation knows it or as received, in any case:
``effective_account = X OR upper(account) = X``. No index can answer that ``OR``, so it is
read one of two ways, with the same rows in the same order either way:

- **by the account's indexes**: ``seq IN`` the rows that :func:`account_rows` finds, each
  lookup by an index, and the ``OR`` as well. None of these indexes is in time order, so the
  account's rows are all read, then sorted.
- **by walking the journal** in time (or ``seq``) order with the ``OR`` as a filter, stopping
  at the limit: cheap for an account that signals often, the whole window for one that rarely
  does.

:func:`by_account_index` chooses by a bounded count: walking the window of ``N`` rows for
``limit`` matches reads about ``limit * N / k`` rows for an account with ``k`` rows, the
indexes read ``k``, each costing about :data:`INDEX_ROW_COST` walked rows (looked up, read
whole and sorted); so the indexes are read when ``k * k <= limit * N / INDEX_ROW_COST`` (and
always without a limit), and the count stops there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from protocols.errors import InvalidInputError
from receiver.store.signal_rows import to_us

if TYPE_CHECKING:
    from receiver.history import HistoryQuery

# E110 / R110 / P110: qualifier and Contact ID code, as the history table shows them.
QUALIFIED_CODE = re.compile(r"^([ERP])([0-9A-F]{3})$")

# A row read by index costs about this many rows walked (SQLite, 200,000-row journal: an
# account with 2,000 rows, limit 50: 37 ms by index, 16 ms walking 5,000 rows).
INDEX_ROW_COST = 8

# Runs one statement (``?`` marks) and gives the first column of its first row (None: no row).
Scalar = Callable[[str, Sequence[Any]], Any]


@attrs.frozen
class Backend:
    """One backend's SQL for an account's rows by index: ``table`` is how the row-reading
    query names the journal when it looks the rows up by ``seq``; ``received`` is the account
    as received, folded to upper case in ASCII only (as SQLite's ``upper`` does, whatever a
    PostgreSQL database's locale: there ``upper`` follows it, so "é12" became "É12")."""

    name: str
    table: str = "signals"
    received: str = "upper(account)"

    @property
    def account_or(self) -> str:
        """The account filter: as automation knows it, or as received in any (ASCII) case."""
        return f"(effective_account = ? OR {self.received} = ?)"


# The rows are looked up by seq (SQLite's rowid), never by walking signals_by_time.
SQLITE = Backend("sqlite", table="signals NOT INDEXED")
# COLLATE "C": upper() of ASCII letters only (PostgreSQL's migration 0013 indexes the same).
POSTGRES = Backend("postgresql", received='upper(account COLLATE "C")')

# SQLite: at most this many spellings of an account are looked up (2 ** 8: eight letters).
MAX_SPELLINGS = 256


def spellings(value: str) -> list[str] | None:
    """Every ASCII upper/lower-case spelling of ``value`` (upper-cased already), or None when
    there are more than :data:`MAX_SPELLINGS`. SQLite's ``upper`` folds ASCII letters only, so
    ``upper(a) = value`` holds exactly for these."""
    found = [""]
    for char in value:
        if "A" <= char <= "Z":
            found = [f"{s}{c}" for s in found for c in (char, char.lower())]
            if len(found) > MAX_SPELLINGS:
                return None
        else:
            found = [f"{s}{char}" for s in found]
    return found


def account_rows(backend: Backend, value: str) -> tuple[str, list[Any]] | None:
    """A statement selecting the ``seq`` of every row whose account is ``value`` (as automation
    knows it or as received, in any case), each lookup by an index; more rows may come with
    them (the reading query filters with the ``OR`` too). None: too many to look up.

    SQLite (migrations 0009 and 0014): by effective account, every spelling of it, with a
    dedupe key (``signals_by_dedupe``) and without (``signals_by_account_unkeyed``); by the
    account received, case-insensitively, among rows whose two accounts differ
    (``signals_by_account_as_received``). A row whose two accounts are the same is found by
    the first two, as ``upper(account) = X`` is then ``effective_account`` spelled as X. The
    indexes call no SQL function: one in an index costs every append several µs per row, even
    for rows it does not hold (measured).

    PostgreSQL (migrations 0012 and 0013): by effective account
    (``signals_by_effective_account``), and by ``upper(account COLLATE "C")`` (ASCII letters
    only) among rows whose effective account differs from it
    (``signals_by_account_as_received``)."""
    if backend is POSTGRES:
        received = backend.received
        return (
            "SELECT seq FROM signals WHERE effective_account = ? "
            f"UNION ALL SELECT seq FROM signals WHERE {received} = ? "
            f"AND effective_account IS DISTINCT FROM {received}",
            [value, value],
        )
    spelled = spellings(value)
    if spelled is None:
        return None
    marks = ", ".join("?" * len(spelled))
    # Pinned: with statistics of a journal where one account dominates, the planner would
    # rather scan the table than look up a few spellings.
    return (
        "SELECT seq FROM signals INDEXED BY signals_by_dedupe "
        f"WHERE effective_account IN ({marks}) AND dedupe_key IS NOT NULL "
        "UNION ALL SELECT seq FROM signals INDEXED BY signals_by_account_unkeyed "
        f"WHERE effective_account IN ({marks}) AND dedupe_key IS NULL "
        "UNION ALL SELECT seq FROM signals INDEXED BY signals_by_account_as_received "
        "WHERE account = ? COLLATE NOCASE AND effective_account IS NOT account",
        [*spelled, *spelled, value],
    )


def account_value(text: str) -> str:
    return text.strip().upper()


def account_condition(account: str, backend: Backend, *, indexed: bool) -> tuple[str, list[Any]]:
    """The account filter, read by ``backend``'s indexes (when they can serve) or as a plain
    ``OR``; the ``OR`` is checked either way."""
    value = account_value(account)
    rows = account_rows(backend, value) if indexed else None
    if rows is None:
        return backend.account_or, [value, value]
    sql, params = rows
    return f"seq IN ({sql}) AND {backend.account_or}", [*params, value, value]


def by_account_index(
    scalar: Scalar, backend: Backend, account: str, limit: int, window_rows: int
) -> bool:
    """Whether reading ``account``'s rows by index costs less than walking ``window_rows``
    rows for ``limit`` matches (``limit`` 0: all of them)."""
    rows = account_rows(backend, account_value(account))
    if rows is None:
        return False
    if limit <= 0:
        return True
    cap = math.isqrt(limit * max(window_rows, 1) // INDEX_ROW_COST)
    sql, params = rows
    found = scalar(
        f"SELECT count(*) FROM (SELECT 1 FROM ({sql}) AS a LIMIT ?) AS b", [*params, cap + 1]
    )
    return int(found or 0) <= cap


def window_rows(scalar: Scalar, query: HistoryQuery) -> int:
    """About how many rows lie between ``query.since`` and ``query.until``: the span of their
    ``seq`` (a commit-order number that follows the receiver's clock closely)."""
    newest = "(SELECT max(seq) FROM signals)"
    oldest = "(SELECT min(seq) FROM signals)"
    params: list[Any] = []
    if query.until:
        newest = (
            "(SELECT seq FROM signals WHERE received_us <= ? ORDER BY received_us DESC LIMIT 1)"
        )
        params.append(to_us(query.until))
    if query.since:
        oldest = "(SELECT seq FROM signals WHERE received_us >= ? ORDER BY received_us LIMIT 1)"
        params.append(to_us(query.since))
    span = scalar(f"SELECT coalesce({newest}, 0) - coalesce({oldest}, 0)", params)
    return abs(int(span or 0)) + 1


def code_condition(text: str) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for a ``--code`` value."""
    code = text.strip().upper()
    if not code:
        raise InvalidInputError("--code is empty")
    if (qualified := QUALIFIED_CODE.match(code)) is not None:
        return "(qualifier = ? AND code = ?)", [qualified.group(1), qualified.group(2)]
    return "(code = ? OR sia_code = ?)", [code, code]


def conditions(
    query: HistoryQuery, backend: Backend = SQLITE, *, indexed: bool = False
) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.account:
        condition, values = account_condition(query.account, backend, indexed=indexed)
        where.append(condition)
        params += values
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
        condition, values = code_condition(query.code)
        where.append(condition)
        params += values
    return where, params


def history_statement(
    scalar: Scalar, columns: str, query: HistoryQuery, backend: Backend
) -> tuple[str, list[Any]]:
    """``receiver history``'s query: the matching rows newest first, at most ``query.limit``
    (0: all); ``columns`` are what it selects."""
    indexed = bool(query.account) and by_account_index(
        scalar, backend, query.account or "", query.limit, window_rows(scalar, query)
    )
    where, params = conditions(query, backend, indexed=indexed)
    sql = f"SELECT {columns} FROM {backend.table if indexed else 'signals'}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY received_us DESC, seq DESC"
    if query.limit > 0:
        sql += " LIMIT ?"
        params.append(query.limit)
    return sql, params


def history_after_statement(
    scalar: Scalar,
    columns: str,
    query: HistoryQuery,
    backend: Backend,
    *,
    seq: int,
    newest: int,
    limit: int,
) -> tuple[str, list[Any]]:
    """``--follow``'s query: the matching rows committed after ``seq`` up to ``newest``,
    oldest first, at most ``limit``."""
    indexed = bool(query.account) and by_account_index(
        scalar, backend, query.account or "", limit, newest - seq
    )
    where, params = conditions(query, backend, indexed=indexed)
    where = ["seq > ?", "seq <= ?", *where]
    table = backend.table if indexed else "signals"
    sql = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
    return sql, [seq, newest, *params, limit]


def console_account_condition(
    scalar: Scalar, backend: Backend, account: str, *, after_seq: int, limit: int
) -> tuple[str, str, list[Any]]:
    """The console list's account filter (rows newest by ``seq`` first, after ``after_seq``):
    the table to name, the condition and its parameters."""
    newest = int(scalar("SELECT coalesce(max(seq), 0) FROM signals", []) or 0)
    indexed = by_account_index(scalar, backend, account, limit, newest - after_seq)
    condition, params = account_condition(account, backend, indexed=indexed)
    return (backend.table if indexed else "signals"), condition, params
