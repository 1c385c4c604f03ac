"""Properties of account-number normalization, checked against a real SQLite registry.

No two distinct effective numbers may compare equal (a false collision refuses a customer), and
every collision must be found (a missed one crosses signals), including a number typed with the
prefix another line adds.
"""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.errors import CollisionError
from receiver.registry import AccountSpec, ImportRow, Registry, backends, effective_number

ALNUM = string.ascii_letters + string.digits
# Numbers drawn from a small alphabet so that collisions (case, prefixes) are frequent.
numbers = st.text(alphabet="0aAbB1", min_size=3, max_size=6)
prefixes = st.sampled_from(["", "A", "AB", "0", "B1"])
PREFIXES = {"0": "", "1": "A", "2": "AB", "3": "0", "4": "B1"}
line_numbers = st.sampled_from(sorted(PREFIXES))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    conn = backends.connect(Path(tmp_path_factory.mktemp("props")) / "r.sqlite3")
    # Thousands of tiny commits: these properties are about comparison, not durability.
    conn.execute("PRAGMA synchronous = OFF")
    reg = Registry(conn)
    yield reg
    reg.close()


_stations = itertools.count()


def fresh_station(reg: Registry) -> str:
    """A new station with lines 0-4 carrying the PREFIXES."""
    name = f"S{next(_stations)}"
    reg.add_station(name)
    for line, prefix in PREFIXES.items():
        if line != "0":
            reg.add_line(name, line, prefix)
    return name


@given(
    a=st.text(alphabet=ALNUM, min_size=3, max_size=16),
    b=st.text(alphabet=ALNUM, min_size=3, max_size=16),
    pa=prefixes,
    pb=prefixes,
)
def test_effective_numbers_are_equal_exactly_when_upper_case_forms_are(
    a: str, b: str, pa: str, pb: str
) -> None:
    """Effective equality is string equality of prefix + upper-cased number, nothing looser."""
    assert (effective_number(pa, a) == effective_number(pb, b)) == (
        (pa + a).upper() == (pb + b).upper()
    )


@given(entries=st.lists(st.tuples(line_numbers, numbers), min_size=1, max_size=12))
def test_adding_one_by_one_refuses_exactly_the_collisions(
    registry: Registry, entries: list[tuple[str, str]]
) -> None:
    """Each add is refused iff an earlier accepted account has the same effective number."""
    station = fresh_station(registry)
    held: set[str] = set()
    for line, number in entries:
        effective = (PREFIXES[line] + number).upper()
        try:
            registry.add_account(station, AccountSpec(line=line, number=number))
        except CollisionError:
            assert effective in held
        else:
            assert effective not in held
            held.add(effective)
    stored = [a["effective"] for a in registry.list_accounts(station)]
    assert sorted(stored) == sorted(held)


@given(entries=st.lists(st.tuples(line_numbers, numbers), min_size=1, max_size=12))
def test_import_finds_every_collision_inside_the_file(
    registry: Registry, entries: list[tuple[str, str]]
) -> None:
    """An import reports exactly the rows whose effective number an earlier row already has."""
    station = fresh_station(registry)
    rows = [ImportRow(i + 2, {"line": ln, "number": n}) for i, (ln, n) in enumerate(entries)]
    seen: set[str] = set()
    expected = []
    for row in rows:
        effective = (PREFIXES[row.values["line"]] + row.values["number"]).upper()
        if effective in seen:
            expected.append(row.line)
        seen.add(effective)
    report = registry.import_accounts(station, rows)
    assert [p.line for p in report.problems if p.kind == "collision"] == expected
    stored = registry.list_accounts(station)
    assert len(stored) == (0 if expected else len(rows))


@given(
    first=st.tuples(line_numbers, numbers),
    second=st.tuples(line_numbers, numbers),
)
def test_check_agrees_with_add(
    registry: Registry, first: tuple[str, str], second: tuple[str, str]
) -> None:
    """`accounts check` says taken exactly when adding would be refused."""
    station = fresh_station(registry)
    registry.add_account(station, AccountSpec(line=first[0], number=first[1]))
    check = registry.check_account(station, second[0], second[1])
    try:
        registry.add_account(station, AccountSpec(line=second[0], number=second[1]))
    except CollisionError:
        assert not check.free
    else:
        assert check.free
