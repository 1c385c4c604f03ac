"""The history filters as SQL conditions (``?`` placeholders; PostgreSQL swaps in ``%s``).

``--code`` takes what the table shows: ``E110`` (qualifier and Contact ID code), ``110`` (any
qualifier), or a SIA code (``BA``, matched on the SIA view).

An account filter matches the account as automation knows it or as received, in any case:
``effective_account = X OR upper(account) = X``. No index can answer that ``OR``, so it is
read one of two ways, with the same rows in the same order either way:

- **by the account's indexes** (``seq IN`` the account's rows, :data:`SQLITE_ACCOUNT_ROWS`):
  disjoint indexed lookups whose union is exactly the ``OR``. Rows with
  ``effective_account = X`` are found by ``effective_account`` (on SQLite the duplicate
  lookup's ``signals_by_dedupe`` for rows with a dedupe key, ``signals_by_account_unkeyed``
  for the few without one); the rest, ``upper(account) = X`` where the effective account is
  not the upper-cased one, by the partial ``signals_by_account_as_received``, which holds only
  rows whose two accounts differ (an unknown account's effective account is its upper-cased
  number, so those rows cost it nothing). None of these is in time order, so the account's
  rows are all read, then sorted.
- **by walking the journal** in time (or ``seq``) order with the ``OR`` as a filter, stopping
  at the limit: cheap for an account that signals often, the whole window for one that rarely
  does.

:func:`by_account_index` chooses by a bounded count: walking the window of ``N`` rows for
``limit`` matches reads about ``limit * N / k`` rows for an account with ``k`` rows, the
indexes read ``k``; so the indexes are read when ``k * k <= limit * N`` (and always without a
limit), and the count stops at ``sqrt(limit * N)``.
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

# Runs one statement (``?`` marks) and gives the first column of its first row (None: no row).
Scalar = Callable[[str, Sequence[Any]], Any]

ACCOUNT_OR = "(effective_account = ? OR upper(account) = ?)"


@attrs.frozen
class Backend:
    """How one backend finds an account's rows by index: ``account_rows`` selects their
    ``seq`` (``arms`` marks, each the account), ``table`` is how the row-reading query names
    the journal when it looks the rows up by ``seq``."""

    account_rows: str
    arms: int
    table: str = "signals"


# SQLite (migrations 0009 and 0014): three disjoint lookups, each by an index.
SQLITE = Backend(
    account_rows=(
        "SELECT seq FROM signals WHERE effective_account = ? AND dedupe_key IS NOT NULL "
        "UNION ALL SELECT seq FROM signals WHERE effective_account = ? AND dedupe_key IS NULL "
        "UNION ALL SELECT seq FROM signals WHERE upper(account) = ? "
        "AND effective_account IS NOT upper(account)"
    ),
    arms=3,
    # The rows are looked up by seq (the rowid), never by walking signals_by_time.
    table="signals NOT INDEXED",
)
# PostgreSQL (migration 0012): its duplicate lookup has a table of its own, so the journal
# has one index on effective_account.
POSTGRES = Backend(
    account_rows=(
        "SELECT seq FROM signals WHERE effective_account = ? "
        "UNION ALL SELECT seq FROM signals WHERE upper(account) = ? "
        "AND effective_account IS DISTINCT FROM upper(account)"
    ),
    arms=2,
)


def account_value(text: str) -> str:
    return text.strip().upper()


def account_condition(account: str, backend: Backend, *, indexed: bool) -> tuple[str, list[Any]]:
    """The account filter, read by ``backend``'s indexes or as a plain ``OR``."""
    value = account_value(account)
    if indexed:
        return f"seq IN ({backend.account_rows})", [value] * backend.arms
    return ACCOUNT_OR, [value, value]


def by_account_index(
    scalar: Scalar, backend: Backend, account: str, limit: int, window_rows: int
) -> bool:
    """Whether reading ``account``'s rows by index costs less than walking ``window_rows``
    rows for ``limit`` matches (``limit`` 0: all of them)."""
    if limit <= 0:
        return True
    cap = math.isqrt(limit * max(window_rows, 1))
    found = scalar(
        f"SELECT count(*) FROM (SELECT 1 FROM ({backend.account_rows}) AS a LIMIT ?) AS b",
        [account_value(account)] * backend.arms + [cap + 1],
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
