"""The history filters as SQL conditions (``?`` placeholders; PostgreSQL swaps in ``%s``).

``--code`` takes what the table shows: ``E110`` (qualifier and Contact ID code), ``110`` (any
qualifier), or a SIA code (``BA``, matched on the SIA view).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from protocols.errors import InvalidInputError
from receiver.store.signal_rows import to_us

if TYPE_CHECKING:
    from receiver.history import HistoryQuery

# E110 / R110 / P110: qualifier and Contact ID code, as the history table shows them.
QUALIFIED_CODE = re.compile(r"^([ERP])([0-9A-F]{3})$")


def code_condition(text: str) -> tuple[str, list[Any]]:
    """The SQL condition (and its parameters) for a ``--code`` value."""
    code = text.strip().upper()
    if not code:
        raise InvalidInputError("--code is empty")
    if (qualified := QUALIFIED_CODE.match(code)) is not None:
        return "(qualifier = ? AND code = ?)", [qualified.group(1), qualified.group(2)]
    return "(code = ? OR sia_code = ?)", [code, code]


def conditions(query: HistoryQuery) -> tuple[list[str], list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if query.account:
        where.append("(effective_account = ? OR upper(account) = ?)")
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
        condition, values = code_condition(query.code)
        where.append(condition)
        params += values
    return where, params
