"""Spool output: one validated package file per package id, written atomically."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import pytest

from adapters import spool
from adapters.output import DeliveryError, build_output
from adapters.sentinel.package import Package, validate
from adapters.spool import SpoolOutput, write_atomically
from protocols.errors import InvalidInputError
from receiver.config import OutputConfig
from tests.adapters.test_sentinel_package import make_signal


async def test_each_package_becomes_one_file(tmp_path: Path) -> None:
    """Delivering two signals leaves DIR/<package-id>.xml for each, valid and nothing else."""
    spool = tmp_path / "spool"
    output = SpoolOutput("spool", spool)
    await output.deliver(make_signal(), "pkg-1")
    await output.deliver(make_signal(account="2222", effective_account=None), "pkg-2")
    assert sorted(os.listdir(spool)) == ["pkg-1.xml", "pkg-2.xml"]
    for name in ("pkg-1.xml", "pkg-2.xml"):
        validate((spool / name).read_bytes())
    second = Package.from_xml((spool / "pkg-2.xml").read_bytes())
    assert second.device_id == "2222"
    assert output.connected
    assert output.last_error is None


async def test_an_output_without_link_template_writes_no_video_link(tmp_path: Path) -> None:
    """An [[outputs]] table without link_template: the package at the sink has no VideoLink
    (no placeholder link); with one, it has the link the template makes."""
    plain = build_output(
        OutputConfig(name="spool", kind="spool", settings={"directory": str(tmp_path / "a")})
    )
    settings = {"directory": str(tmp_path / "b"), "link_template": "https://v.example/{account}"}
    linked = build_output(OutputConfig(name="linked", kind="spool", settings=settings))
    await plain.deliver(make_signal(), "pkg-1")
    await linked.deliver(make_signal(), "pkg-1")
    bare = (tmp_path / "a" / "pkg-1.xml").read_bytes()
    validate(bare)
    assert b"VideoLink" not in bare
    assert b"monitoring.example" not in bare
    assert Package.from_xml((tmp_path / "b" / "pkg-1.xml").read_bytes()).video_link == (
        "https://v.example/ABC1234"
    )


async def test_redelivery_overwrites_the_same_file(tmp_path: Path) -> None:
    """At-least-once: the same package id twice is still one file with the same content."""
    output = SpoolOutput("spool", tmp_path)
    await output.deliver(make_signal(), "pkg-1")
    first = (tmp_path / "pkg-1.xml").read_bytes()
    await output.deliver(make_signal(), "pkg-1")
    assert os.listdir(tmp_path) == ["pkg-1.xml"]
    assert (tmp_path / "pkg-1.xml").read_bytes() == first


async def test_unwritable_directory_is_a_delivery_error(tmp_path: Path) -> None:
    """A spool path that is a file cannot take packages: DeliveryError with the reason."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    output = SpoolOutput("spool", blocker)
    with pytest.raises(DeliveryError, match="cannot write"):
        await output.deliver(make_signal(), "pkg-1")
    assert not output.connected
    assert output.last_error is not None


def test_write_replaces_whole_files_and_leaves_no_temporary(tmp_path: Path) -> None:
    """A rewrite swaps the whole file in by rename; no .tmp file stays behind."""
    write_atomically(tmp_path, "a.xml", b"old")
    inode = (tmp_path / "a.xml").stat().st_ino
    write_atomically(tmp_path, "a.xml", b"new content")
    assert (tmp_path / "a.xml").read_bytes() == b"new content"
    assert (tmp_path / "a.xml").stat().st_ino != inode  # renamed in, not rewritten in place
    assert os.listdir(tmp_path) == ["a.xml"]


def test_build_output_defaults_and_settings() -> None:
    """The embedded default spool writes to var/spool; a table may move it and set the template."""
    default = build_output(OutputConfig(name="spool", kind="spool"))
    assert isinstance(default, SpoolOutput)
    assert default.directory == Path("var/spool")
    moved = build_output(
        OutputConfig(name="s", kind="spool", settings={"directory": "/srv/x", "station": "CS"})
    )
    assert isinstance(moved, SpoolOutput)
    assert (moved.directory, moved.station) == (Path("/srv/x"), "CS")


async def test_a_batch_is_written_whole(tmp_path: Path) -> None:
    """The dispatcher's window of packages lands as one file each, all valid, in one call."""
    output = SpoolOutput("spool", tmp_path)
    items = [
        (make_signal(account=f"{1000 + i}", effective_account=None), f"p-{i}") for i in range(70)
    ]
    assert await output.deliver_batch(items) == 70
    assert sorted(os.listdir(tmp_path)) == sorted(f"p-{i}.xml" for i in range(70))
    for i in (0, 69):
        package = Package.from_xml((tmp_path / f"p-{i}.xml").read_bytes())
        assert package.device_id == f"{1000 + i}"


@pytest.mark.parametrize("flush", ["syncfs", "fsync"])
async def test_a_failed_flush_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush: str
) -> None:
    """When the disk refuses the flush (one syncfs for the batch, or the per-file fsync where
    syncfs is missing), no package of the batch appears (none is renamed into place), no
    temporary is left, and the dispatcher gets a DeliveryError to retry on."""
    output = SpoolOutput("spool", tmp_path)

    def full_disk(fd: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    monkeypatch.setattr(spool, "_SYNCFS", None if flush == "fsync" else lambda fd: -1)
    monkeypatch.setattr(ctypes, "get_errno", lambda: 28)
    items = [(make_signal(), f"p-{i}") for i in range(3)]
    with pytest.raises(DeliveryError, match="No space left"):
        await output.deliver_batch(items)
    assert os.listdir(tmp_path) == []


@pytest.mark.skipif(spool._SYNCFS is None, reason="no syncfs(2) here")
async def test_a_batch_costs_one_filesystem_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux a batch is flushed by one syncfs, then the directory by one fsync: not one
    fsync per package (the difference benchmarks/spool.py measures)."""
    fsyncs: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(5)]) == 5
    assert len(fsyncs) == 1  # the directory
    await output.deliver(make_signal(), "single")
    assert len(fsyncs) == 3  # a lone package: its file, then the directory


async def test_without_syncfs_every_file_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where syncfs is missing, the batch falls back to one fsync per file plus the directory."""
    fsyncs: list[int] = []
    monkeypatch.setattr(os, "fsync", fsyncs.append)
    monkeypatch.setattr(spool, "_SYNCFS", None)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(4)]) == 4
    assert len(fsyncs) == 5
    assert sorted(os.listdir(tmp_path)) == [f"p-{i}.xml" for i in range(4)]


async def test_file_mode_lets_the_automation_group_read(tmp_path: Path) -> None:
    """``file_mode = 0o640``: packages 0640 in a 0750 folder the spool creates; a mode that
    would deny the receiver itself or make packages executable is refused at start."""
    old = os.umask(0o022)
    try:
        output = build_output(
            OutputConfig(
                name="s",
                kind="spool",
                settings={"directory": str(tmp_path / "spool"), "file_mode": 0o640},
            )
        )
        await output.deliver(make_signal(), "pkg-1")
    finally:
        os.umask(old)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "spool" / "pkg-1.xml").stat().st_mode & 0o777 == 0o640
    for bad in (0o400, 0o755):
        with pytest.raises(InvalidInputError, match="file_mode"):
            SpoolOutput("s", tmp_path, file_mode=bad)
