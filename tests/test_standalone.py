"""The repository stands alone: a clone with nothing beside it collects every test."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = "../" + "shared"  # spelled apart, so that this file does not name it itself


@pytest.mark.slow
def test_a_clone_with_nothing_beside_it_collects_every_test(tmp_path: Path) -> None:
    """`git clone` into an empty folder, then `pytest --collect-only` there: no errors, no
    skips, and no file in the clone names the shared folder beside the checkout."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.fail("this test needs git and a git checkout")
    clone = tmp_path / "lonely" / "receiver"
    subprocess.run(
        ["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, capture_output=True
    )
    assert sorted(p.name for p in clone.parent.iterdir()) == ["receiver"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "skipped" not in result.stdout.splitlines()[-1]
    assert "error" not in result.stdout.splitlines()[-1]
    tracked = subprocess.run(
        ["git", "grep", "-l", "-e", SHARED, "--", "*.py", "Makefile", "*.toml", ".ci/*"],
        cwd=clone,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert tracked == []
