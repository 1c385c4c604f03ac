"""Only the store speaks SQL: no module outside ``receiver/store/`` holds a statement of its own."""

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
    for folder in ("receiver", "adapters", "simulators"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if STORE not in path.parents:
                text = path.read_text(encoding="utf-8")
                found += statements_in(text, str(path.relative_to(ROOT)))
    assert found == []


def test_the_scan_names_a_statement_and_nothing_else() -> None:
    """The scan above is not vacuous: a query is named, words about selecting are not."""
    source = 'ROWS = "SELECT count(*) AS n FROM accounts"\nDOC = "select what to read"\n'
    assert statements_in(source, "probe.py") == ["probe.py:1: SELECT count(*) AS n FROM accounts"]
