"""The console's users, login sessions, API tokens and audit trail in the store, on a SQLite file
and on PostgreSQL alike: `receiver users` as typed, then what a login and a token check read."""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.cli import main as receiver_cli
from receiver.config import parse_config
from receiver.console.auth import token_hash, verify_password
from receiver.registry import backends
from receiver.store import open_console_store
from receiver.store.console_tables import console_statements
from receiver.store.interface import ConsoleTables
from tests.receiver.conftest import store_section


@pytest.fixture
def config(tmp_path: Path, store_location: str) -> Path:
    path = tmp_path / "receiver.toml"
    path.write_text(store_section(store_location), encoding="utf-8")
    return path


@pytest.fixture
def tables(config: Path) -> Iterator[ConsoleTables]:
    """The console's tables through the store's interface (``console()``)."""
    source = open_console_store(parse_config(config.read_text(encoding="utf-8")).store)
    console = source.console()
    yield console
    console.close()
    source.close()


def users(config: Path, *args: str, stdin: str = "") -> int:
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        return receiver_cli(["--config", str(config), "users", *args])
    finally:
        sys.stdin = saved


def test_users_tokens_sessions_and_audit_round_trip(
    config: Path, tables: ConsoleTables, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user added by the CLI logs in with the password (its hash verifies), gets a session
    that resolves to it, an API token printed once resolves to it too; a new password ends
    the old sessions; the audit trail names who did each change."""
    sql = console_statements(parse_config(config.read_text(encoding="utf-8")).store)
    assert users(config, "add", "otto", "--role", "operator", stdin="otto-password\n") == 0
    assert capsys.readouterr().out == "user otto (operator) saved\n"
    found = tables.user_by_name("otto")
    assert found is not None
    assert (found.user.name, found.user.role, found.disabled) == ("otto", "operator", False)
    assert verify_password(found.password_hash, "otto-password")
    assert not verify_password(found.password_hash, "wrong-password")
    assert tables.user_by_name("nobody") is None

    # A login: the session row the console writes, then reads on each request.
    tables.commit([(sql.INSERT_SESSION, (token_hash("cookie"), found.user.id, "csrf", 1, 10**18))])
    session = tables.session(token_hash("cookie"))
    assert session is not None
    assert (session.user, session.csrf) == (found.user, "csrf")

    assert users(config, "token", "otto", "--label", "automation bridge") == 0
    token = capsys.readouterr().out.strip()
    assert tables.token_user(token_hash(token)) == found.user
    assert tables.token_user(token_hash("not-a-token")) is None
    assert users(config, "token", "nobody") == 1
    assert "no user named 'nobody'" in capsys.readouterr().err

    # A new password or role ends the sessions opened under the old one.
    assert users(config, "add", "otto", "--role", "viewer", stdin="otto-password-2\n") == 0
    assert tables.session(token_hash("cookie")) is None
    again = tables.user_by_name("otto")
    assert again is not None
    assert again.user.role == "viewer"
    assert verify_password(again.password_hash, "otto-password-2")

    trail = [(row["action"], row["subject"], row["detail"]) for row in tables.audit()]
    assert trail == [
        ("user_add", "otto", {"role": "viewer"}),
        ("token_add", "otto", {"label": "automation bridge"}),
        ("user_add", "otto", {"role": "operator"}),
    ]
    assert all(row["user"].startswith("cli") for row in tables.audit())

    assert users(config, "add", "ada", "--role", "admin", stdin="ada-password\n") == 0
    capsys.readouterr()
    assert users(config, "list", "--format", "json") == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["name"], u["role"], u["disabled"]) for u in listed] == [
        ("ada", "admin", False),
        ("otto", "viewer", False),
    ]


def test_a_short_password_is_refused_and_nothing_is_stored(
    config: Path, tables: ConsoleTables, capsys: pytest.CaptureFixture[str]
) -> None:
    assert users(config, "add", "bob", "--role", "viewer", stdin="short\n") == 2
    assert "at least 8 characters" in capsys.readouterr().err
    assert tables.user_by_name("bob") is None
    assert tables.audit() == []


def test_users_and_registry_commands_open_the_store_through_its_interface(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`receiver users` and the registry commands, as typed, read and write through the
    store's interface (``console()``, ``registry()``): nothing else opens the database by
    path or URL (DESIGN: only the store speaks SQL). Their output is unchanged. Before,
    both opened their own connection (``receiver.registry.backends.connect``)."""

    def opened_by_location(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"the database was opened by location: {args}")

    monkeypatch.setattr(backends, "connect", opened_by_location)
    assert users(config, "add", "otto", "--role", "operator", stdin="otto-password\n") == 0
    assert capsys.readouterr().out == "user otto (operator) saved\n"
    assert users(config, "token", "otto", "--label", "automation") == 0
    assert len(capsys.readouterr().out.strip()) > 20
    assert users(config, "token", "nobody") == 1
    assert capsys.readouterr().err == "receiver: no user named 'nobody'\n"
    assert users(config, "list", "--format", "csv") == 0
    header, row, end = capsys.readouterr().out.split("\n")
    assert (header, row.split(",")[:2], row.split(",")[3], end) == (
        "name,role,created,disabled",
        ["otto", "operator"],
        "False",
        "",
    )
    assert receiver_cli(["--config", str(config), "stations", "add", "S1"]) == 0
    assert capsys.readouterr().out == "added station S1 (line 0, no prefix)\n"
    assert receiver_cli(["--config", str(config), "stations", "list", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[1].startswith("S1,")
