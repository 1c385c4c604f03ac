"""The store benchmark's plan parses (no timings)."""

from __future__ import annotations

import pytest

from benchmarks import pg_store


def test_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert pg_store.main(["--dry-run", "--runs", "1", "--batches", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pg_store: 1 runs x 2 commits x 256 signals: sqlite, postgresql 1 node, postgresql 2 nodes"
    ]
