"""Only the store speaks SQL: no module outside ``receiver/store/`` holds a statement of its own,
and none runs one (no ``execute``/``fetch`` call on a connection or cursor)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
STORE = ROOT / "receiver" / "store"
# What a statement starts with (a docstring or a message that mentions SQL does not).
STATEMENT = re.compile(
    r"^\s*(SELECT\s.+\sFROM\s|INSERT\s+INTO\s|UPDATE\s+\w+\s+SET\s|DELETE\s+FROM\s|"
    r"CREATE\s+(TABLE|INDEX|UNIQUE)\s|ALTER\s+TABLE\s|DROP\s+TABLE\s|PRAGMA\s)",
    re.DOTALL,
)


# The DB-API calls that run SQL or read its rows (sqlite3 and psycopg alike).
DRIVER_CALLS = frozenset(
    {"execute", "executemany", "executescript", "fetchone", "fetchall", "fetchmany"}
)
# Modules outside the store that may still make such calls, each with the reason it must stay.
# Empty: the registry service and index call ``RegistryTables`` methods, the console and the CLI
# hand their connection to the store's SQL modules (``console_sql``, ``bridge_report_sql``).
ALLOWED_DRIVER_CALLS: dict[str, str] = {}
SCANNED = ("receiver", "adapters", "simulators")


def driver_calls_in(source: str, label: str) -> list[str]:
    """``label:line: x.execute(`` for each call of a DB-API method in ``source`` (on any object:
    outside the store nothing has a reason to call one, whatever it is named)."""
    calls = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in DRIVER_CALLS
    ]
    calls.sort(key=lambda call: (call.lineno, call.col_offset))
    return [f"{label}:{call.lineno}: {ast.unparse(call.func)}(" for call in calls]


def outside_the_store() -> list[Path]:
    return [
        path
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        if STORE not in path.parents
    ]


def statements_in(source: str, label: str) -> list[str]:
    """``label:line: text`` of each string constant in ``source`` that is an SQL statement."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if STATEMENT.match(node.value):
            found.append(f"{label}:{node.lineno}: {node.value.strip()}")
    return found


def test_no_sql_outside_the_store() -> None:
    """The service, the console, the CLI, the adapters and the simulators name the store's
    statements; none writes one (the journal's chain head and the console's registry counts
    included)."""
    found = []
    for path in outside_the_store():
        found += statements_in(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []


def test_nothing_outside_the_store_runs_sql() -> None:
    """The registry service, the index, the console and the CLI call the store's typed methods
    (or its SQL modules' functions); none calls ``execute``/``executemany``/``fetch*`` itself."""
    found = []
    for path in outside_the_store():
        label = str(path.relative_to(ROOT))
        if label not in ALLOWED_DRIVER_CALLS:
            found += driver_calls_in(path.read_text(encoding="utf-8"), label)
    assert found == []


def test_every_allowed_driver_call_is_still_there() -> None:
    """An allow-list entry whose module no longer runs SQL is removed, so it cannot hide a new
    call later."""
    stale = [
        label
        for label in ALLOWED_DRIVER_CALLS
        if not (ROOT / label).exists()
        or not driver_calls_in((ROOT / label).read_text(encoding="utf-8"), label)
    ]
    assert stale == []


def test_the_driver_call_scan_names_calls_and_nothing_else() -> None:
    """The scan above is not vacuous: a connection's and a cursor's calls are named; a store
    method, a bare function and an attribute that is not called are not."""
    source = (
        "rows = conn.execute(sql.ACCOUNTS, (1,)).fetchall()\n"
        "self.conn.executemany(INSERT, rows)\n"
        "tables.accounts()\n"
        "execute(plan)\n"
        "run = cursor.fetchone\n"
    )
    assert driver_calls_in(source, "probe.py") == [
        "probe.py:1: conn.execute(sql.ACCOUNTS, (1,)).fetchall(",
        "probe.py:1: conn.execute(",
        "probe.py:2: self.conn.executemany(",
    ]


def test_the_scan_names_a_statement_and_nothing_else() -> None:
    """The scan above is not vacuous: a query is named, words about selecting are not."""
    source = 'ROWS = "SELECT count(*) AS n FROM accounts"\nDOC = "select what to read"\n'
    assert statements_in(source, "probe.py") == ["probe.py:1: SELECT count(*) AS n FROM accounts"]
