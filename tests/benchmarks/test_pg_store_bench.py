"""The store benchmark's plan parses (no timings)."""

from __future__ import annotations

import pytest

from benchmarks import nodes, pg_store


def test_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert pg_store.main(["--dry-run", "--runs", "1", "--batches", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "pg_store: 1 runs x 2 commits x 256 signals: sqlite, postgresql 1 node, postgresql 2 nodes"
    ]


def test_the_nodes_benchmark_plan_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert nodes.main(["--dry-run", "--runs", "1", "--messages", "20"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "nodes: 1 runs x 100 connections x 20 frames: sqlite, postgresql, 1 node, "
        "postgresql, 2 nodes"
    ]
