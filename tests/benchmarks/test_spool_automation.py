"""benchmarks/spool.py --automation: a steady spool run beside a process that removes packages."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import trio

from adapters.sentinel.package import Package
from benchmarks import spool


def test_a_steady_run_beside_the_automation_spools_every_package_and_it_removes_them(
    tmp_path: Path,
) -> None:
    """The automation process reads and removes each package once it is old enough; the kept
    run leaves every package in place, whole; both report CPU per package per window (here
    windows of 0.2 s, not 10)."""
    steady = functools.partial(spool._steady, window=0.2)
    kept, removing = tmp_path / "kept", tmp_path / "removing"
    rate, windows, removed = trio.run(steady, kept, 0.6, 200.0, 5, None)
    names = sorted(os.listdir(kept))
    assert removed == 0
    assert len(names) >= 5
    assert all(name.startswith("s-") and name.endswith(".xml") for name in names)
    assert Package.from_xml((kept / names[-1]).read_bytes()).device_id
    assert windows
    assert rate > 0
    _, windows, removed = trio.run(steady, removing, 1.5, 200.0, 5, 0.0)
    assert removed > 0
    assert windows
    assert not (set(os.listdir(removing)) & {f"s-{i:08d}.xml" for i in range(5)})
