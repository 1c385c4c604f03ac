"""The console's own connection to the PostgreSQL store (``[store] url``): each write commits
in one transaction of its own, the change with its audit row or neither."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from receiver.config import parse_config
from receiver.console.state import StoreReader
from tests.receiver.console.conftest import console_config


async def test_on_postgresql_a_change_and_its_audit_row_commit_together(
    pg_url: str, tmp_path: Path
) -> None:
    """A write whose second statement fails leaves nothing behind (not even the audit row
    before it); the next write commits on a fresh connection."""
    config_path = console_config(tmp_path, 1, store=f'[store]\nurl = "{pg_url}"\n')
    reader = StoreReader(parse_config(config_path.read_text(encoding="utf-8")))
    sql = reader.sql
    try:
        audit_row = sql.audit_statement(1, "ada", "user_add", "nina", {"role": "operator"})
        with pytest.raises(psycopg.Error):
            await reader.commit([audit_row, ("INSERT INTO nowhere VALUES (1)", ())])
        assert await reader.run(sql.audit) == []
        await reader.commit([audit_row])
        [row] = await reader.run(sql.audit)
    finally:
        reader.close()
    assert (row["user"], row["action"], row["subject"], row["detail"]) == (
        "ada",
        "user_add",
        "nina",
        {"role": "operator"},
    )
