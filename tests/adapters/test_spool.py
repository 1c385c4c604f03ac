"""Spool output: one validated package file per package id, written atomically."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from adapters import spool
from adapters.output import DeliveryError, build_output
from adapters.sentinel.package import Package, validate
from adapters.spool import SpoolOutput, write_atomically
from protocols.errors import InvalidInputError
from receiver.config import OutputConfig
from tests.adapters.test_sentinel_package import make_signal

# The two ways a package gets its name: an unnamed inode linked in (O_TMPFILE, where the
# filesystem has it), or a named temporary renamed over it (everywhere else).
BOTH_PATHS = pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed", "named"])


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


@BOTH_PATHS
@pytest.mark.parametrize("flush", ["syncfs", "fsync"])
async def test_a_failed_flush_publishes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flush: str, unnamed: bool
) -> None:
    """When the disk refuses the flush (one syncfs for the batch, or the per-file fsync where
    syncfs is missing), no package of the batch appears (none is named), no temporary is
    left, and the dispatcher gets a DeliveryError to retry on."""
    output = SpoolOutput("spool", tmp_path)
    output.unnamed = unnamed

    def full_disk(fd: int) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    monkeypatch.setattr(spool, "_SYNCFS", None if flush == "fsync" else lambda fd: -1)
    monkeypatch.setattr(ctypes, "get_errno", lambda: 28)
    items = [(make_signal(), f"p-{i}") for i in range(3)]
    with pytest.raises(DeliveryError, match="No space left"):
        await output.deliver_batch(items)
    assert os.listdir(tmp_path) == []


def record_flushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The spool's flushes and names in order: ``syncfs``, ``fsync`` (of a file or of the
    directory: ``fsync-dir``), ``link NAME`` (by descriptor or through /proc), ``rename NAME``;
    the real calls still run."""
    events: list[str] = []
    real_syncfs, real_fsync, real_link, real_replace = spool._SYNCFS, os.fsync, os.link, os.replace

    def syncfs(fd: int) -> int:
        events.append("syncfs")
        return real_syncfs(fd) if real_syncfs is not None else 0

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync")
        real_fsync(fd)

    def link(source: str, name: str, **kwargs: object) -> None:
        events.append(f"link {name}")
        real_link(source, name, **kwargs)  # type: ignore[arg-type]

    def replace(source: str, name: str, **kwargs: object) -> None:
        events.append(f"rename {name}")
        real_replace(source, name, **kwargs)  # type: ignore[arg-type]

    real_linkat = spool._LINKAT

    def linkat(fd: int, path: bytes, dir_fd: int, name: bytes, flags: int) -> int:
        assert real_linkat is not None
        result = real_linkat(fd, path, dir_fd, name, flags)
        if result == 0:
            events.append(f"link {os.fsdecode(name)}")
        return result

    if real_syncfs is not None:
        monkeypatch.setattr(spool, "_SYNCFS", syncfs)
    if real_linkat is not None:
        monkeypatch.setattr(spool, "_LINKAT", linkat)
    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(spool._SYNCFS is None, reason="no syncfs(2) here")
async def test_a_batch_costs_two_filesystem_flushes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On Linux a batch is flushed by one syncfs before its names and one after them: not
    one fsync per package (the difference benchmarks/spool.py measures); a lone package
    the same."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    events = record_flushes(monkeypatch)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(5)]) == 5
    assert events == ["syncfs", *(f"link p-{i}.xml" for i in range(5)), "syncfs"]
    events.clear()
    await output.deliver(make_signal(), "single")
    assert events == ["syncfs", "link single.xml", "syncfs"]


@pytest.mark.skipif(spool._SYNCFS is None, reason="no syncfs(2) here")
async def test_linked_packages_are_flushed_after_their_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inodes are flushed before their links with no link count, so the links must be
    flushed with the inodes before deliver returns: a directory fsync alone leaves, on ext4
    without a journal, names pointing at inodes that e2fsck clears after a crash (see
    test_a_crash_image_keeps_every_delivered_package)."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    events = record_flushes(monkeypatch)
    output = SpoolOutput("spool", tmp_path)
    await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(3)])
    last_link = max(i for i, event in enumerate(events) if event.startswith("link"))
    assert "syncfs" in events[:last_link]  # the data before any name
    assert "syncfs" in events[last_link:]  # the names and link counts before returning


@pytest.mark.skipif(spool._SYNCFS is None, reason="no syncfs(2) here")
async def test_a_failed_flush_of_the_names_is_retried_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the flush after the links fails, the packages may be named but are not known
    durable: the dispatcher gets a DeliveryError, and its retry writes the same files again
    whole, with no temporary left."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    real_syncfs, calls = spool._SYNCFS, []

    def second_fails(fd: int) -> int:
        calls.append(fd)
        if len(calls) == 2:
            ctypes.set_errno(errno.EIO)
            return -1
        return real_syncfs(fd)  # type: ignore[misc]

    monkeypatch.setattr(spool, "_SYNCFS", second_fails)
    output = SpoolOutput("spool", tmp_path)
    items = [
        (make_signal(account=f"{1000 + i}", effective_account=None), f"p-{i}") for i in range(3)
    ]
    with pytest.raises(DeliveryError, match="Input/output error"):
        await output.deliver_batch(items)
    assert await output.deliver_batch(items) == 3
    assert sorted(os.listdir(tmp_path)) == ["p-0.xml", "p-1.xml", "p-2.xml"]
    assert Package.from_xml((tmp_path / "p-2.xml").read_bytes()).device_id == "1002"


async def test_without_syncfs_every_file_is_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where syncfs is missing, each file is fsynced before its name and, once linked, again
    (its link count), then the directory; the named path: each file, then the directory."""
    monkeypatch.setattr(spool, "_SYNCFS", None)
    events = record_flushes(monkeypatch)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(4)]) == 4
    assert sorted(os.listdir(tmp_path)) == [f"p-{i}.xml" for i in range(4)]
    if unnamed_here(tmp_path):
        links = [f"link p-{i}.xml" for i in range(4)]
        assert events == [*["fsync"] * 4, *links, *["fsync"] * 4, "fsync-dir"]
    events.clear()
    output.unnamed = False
    assert await output.deliver_batch([(make_signal(), f"q-{i}") for i in range(2)]) == 2
    assert events == ["fsync", "fsync", "rename q-0.xml", "rename q-1.xml", "fsync-dir"]


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


# -- unnamed inodes (O_TMPFILE + linkat) and the named-temporary fallback -------------------

REPO = Path(__file__).resolve().parents[2]


def unnamed_here(directory: Path) -> bool:
    """Whether this filesystem takes O_TMPFILE files (the probe the spool runs)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return spool._probe_unnamed(fd)
    finally:
        os.close(fd)


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test probes the filesystem afresh (the spool remembers the answer per device)."""
    monkeypatch.setattr(spool, "_unnamed_by_device", {})
    monkeypatch.setitem(spool._descriptor_link, "refused", False)


def count_renames(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    renamed: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str, **kwargs: int) -> None:
        renamed.append(dst)
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    return renamed


async def test_new_packages_are_linked_in_without_a_temporary_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the filesystem has O_TMPFILE, a new package gets its name in one link: no
    temporary file is created and nothing is renamed."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    renamed = count_renames(monkeypatch)
    output = SpoolOutput("spool", tmp_path / "spool")
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(3)]) == 3
    await output.deliver(make_signal(), "single")
    assert renamed == []
    assert sorted(os.listdir(tmp_path / "spool")) == ["p-0.xml", "p-1.xml", "p-2.xml", "single.xml"]
    validate((tmp_path / "spool" / "p-1.xml").read_bytes())


def descriptor_links_here(directory: Path) -> bool:
    """Whether this kernel lets the process link its unnamed inode by descriptor
    (``AT_EMPTY_PATH``: Linux 6.10 and later, or CAP_DAC_READ_SEARCH)."""
    if sys.platform != "linux" or not unnamed_here(directory):
        return False
    linkat = ctypes.CDLL(None, use_errno=True).linkat
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    fd = os.open(".", os.O_WRONLY | os.O_TMPFILE, 0o600, dir_fd=dir_fd)
    try:
        return bool(linkat(fd, b"", dir_fd, b"probe", 0x1000) == 0)  # AT_EMPTY_PATH
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink("probe", dir_fd=dir_fd)
        os.close(dir_fd)


async def test_packages_are_linked_by_descriptor_without_a_walk_through_proc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the kernel allows it, each unnamed package is linked by its descriptor
    (``linkat(fd, "", ..., AT_EMPTY_PATH)``): no path through ``/proc/self/fd`` is resolved,
    new names and a redelivery alike, and the bytes and mode are the same."""
    folder = tmp_path / "spool"
    folder.mkdir(mode=0o700)
    if not descriptor_links_here(folder):
        pytest.skip("this kernel links unnamed files only through /proc here")

    def no_proc(source: str, name: str, **kwargs: object) -> None:
        raise AssertionError(f"linked through {source}")

    monkeypatch.setattr(os, "link", no_proc)
    output = SpoolOutput("spool", folder)
    items = [
        (make_signal(account=f"{1000 + i}", effective_account=None), f"p-{i}") for i in range(3)
    ]
    assert await output.deliver_batch(items) == 3
    first = (folder / "p-1.xml").read_bytes()
    assert await output.deliver_batch(items[1:2]) == 1  # a redelivery: temporary, then rename
    assert sorted(os.listdir(folder)) == ["p-0.xml", "p-1.xml", "p-2.xml"]
    assert (folder / "p-1.xml").read_bytes() == first
    assert Package.from_xml(first).device_id == "1001"
    assert (folder / "p-1.xml").stat().st_mode & 0o777 == 0o600


async def test_a_kernel_refusing_the_descriptor_link_gets_the_proc_path_from_then_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An older kernel refuses ``AT_EMPTY_PATH`` to an unprivileged process (ENOENT): that
    package is linked through ``/proc/self/fd`` instead, and every later one too, without
    asking the kernel again."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    asked: list[bytes] = []

    def refusing_linkat(fd: int, path: bytes, dir_fd: int, name: bytes, flags: int) -> int:
        asked.append(name)
        ctypes.set_errno(errno.ENOENT)
        return -1

    monkeypatch.setattr(spool, "_LINKAT", refusing_linkat)
    events = record_flushes(monkeypatch)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(3)]) == 3
    await output.deliver(make_signal(), "p-1")  # a redelivery
    assert asked == [b"p-0.xml"]
    assert [event for event in events if event.startswith("link")] == [
        "link p-0.xml",
        "link p-1.xml",
        "link p-2.xml",
        "link p-1.xml",  # taken: a temporary name, then renamed over
        f"link .p-1.xml.{os.getpid()}.tmp",
    ]
    assert sorted(os.listdir(tmp_path)) == ["p-0.xml", "p-1.xml", "p-2.xml"]


async def test_a_link_failing_both_ways_is_a_delivery_error_and_keeps_the_descriptor_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the /proc path fails as well (the fault is real, not a refusal), the dispatcher gets
    the DeliveryError to retry on, nothing is named, and the next try asks the kernel again."""
    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")

    def refusing_linkat(fd: int, path: bytes, dir_fd: int, name: bytes, flags: int) -> int:
        ctypes.set_errno(errno.ENOENT)
        return -1

    def gone(source: str, name: str, **kwargs: object) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", name)

    monkeypatch.setattr(spool, "_LINKAT", refusing_linkat)
    monkeypatch.setattr(os, "link", gone)
    output = SpoolOutput("spool", tmp_path)
    with pytest.raises(DeliveryError, match="No such file"):
        await output.deliver(make_signal(), "pkg-1")
    assert os.listdir(tmp_path) == []
    assert not spool._descriptor_link["refused"]


CRASH_BEFORE_NAMING = """
import os, signal, sys
from pathlib import Path
from adapters import spool

def crash(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)  # the receiver dies after the flush, before the name

os.link = os.replace = spool._LINKAT = crash
spool.write_all_atomically(
    Path(sys.argv[1]), [("a.xml", b"<a/>"), ("b.xml", b"<b/>")], unnamed=sys.argv[2] == "1"
)
"""


@BOTH_PATHS
def test_a_crash_before_the_name_leaves_no_package(tmp_path: Path, unnamed: bool) -> None:
    """A receiver killed between writing packages and naming them leaves no .xml at all: on
    the unnamed path nothing whatsoever, on the named path at most its .tmp files."""
    if unnamed and not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    process = subprocess.run(
        [sys.executable, "-c", CRASH_BEFORE_NAMING, str(tmp_path), "1" if unnamed else "0"],
        cwd=REPO,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr
    left = os.listdir(tmp_path)
    if unnamed:
        assert left == []
    else:
        assert left
        assert all(name.startswith(".") and name.endswith(".tmp") for name in left)


@BOTH_PATHS
def test_a_redelivered_id_replaces_the_file_whole(tmp_path: Path, unnamed: bool) -> None:
    """The same name written again (a redelivery) is one file holding the new bytes, swapped
    in whole (a new inode), with no temporary left behind, on either path."""
    spool.write_all_atomically(tmp_path, [("a.xml", b"old")], unnamed=unnamed)
    inode = (tmp_path / "a.xml").stat().st_ino
    stale = tmp_path / f".a.xml.{os.getpid()}.tmp"  # as a crash mid-redelivery leaves it
    stale.write_bytes(b"torn")
    written = spool.write_all_atomically(
        tmp_path, [("a.xml", b"new content"), ("b.xml", b"b")], unnamed=unnamed
    )
    assert written == 2
    assert (tmp_path / "a.xml").read_bytes() == b"new content"
    assert (tmp_path / "a.xml").stat().st_ino != inode
    assert sorted(os.listdir(tmp_path)) == ["a.xml", "b.xml"]


@BOTH_PATHS
@pytest.mark.parametrize(("file_mode", "folder"), [(0o600, 0o700), (0o640, 0o750)])
async def test_modes_on_either_path(
    tmp_path: Path, unnamed: bool, file_mode: int, folder: int
) -> None:
    """Packages get ``file_mode`` and a folder the spool creates ``folder_mode`` of it, whether
    they were linked in or renamed in (the umask can only narrow them)."""
    old = os.umask(0o022)
    try:
        output = SpoolOutput("spool", tmp_path / "spool", file_mode=file_mode)
        output.unnamed = unnamed
        await output.deliver_batch([(make_signal(), "p-1"), (make_signal(), "p-2")])
        await output.deliver(make_signal(), "p-1")  # a redelivery keeps the mode too
    finally:
        os.umask(old)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == folder
    for name in ("p-1.xml", "p-2.xml"):
        assert (tmp_path / "spool" / name).stat().st_mode & 0o777 == file_mode


@pytest.mark.parametrize("refusal", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT])
async def test_without_o_tmpfile_packages_are_renamed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, refusal: int
) -> None:
    """A filesystem or kernel that refuses O_TMPFILE (the errors that mean "not here") gets
    the named temporaries, renamed into place: every package still arrives whole."""
    real_open = os.open
    tmpfile = getattr(os, "O_TMPFILE", 0o20200000)

    def refusing_open(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if flags & tmpfile == tmpfile:
            raise OSError(refusal, os.strerror(refusal))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing_open)
    renamed = count_renames(monkeypatch)
    output = SpoolOutput("spool", tmp_path)
    assert await output.deliver_batch([(make_signal(), f"p-{i}") for i in range(3)]) == 3
    assert sorted(renamed) == ["p-0.xml", "p-1.xml", "p-2.xml"]
    assert sorted(os.listdir(tmp_path)) == ["p-0.xml", "p-1.xml", "p-2.xml"]


async def test_without_proc_packages_are_renamed_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No /proc to link an unnamed inode through: the named temporaries, from the first
    package on."""
    monkeypatch.setattr(spool, "_PROC_FD", str(tmp_path / "no-proc"))
    renamed = count_renames(monkeypatch)
    output = SpoolOutput("spool", tmp_path / "spool")
    await output.deliver(make_signal(), "pkg-1")
    assert renamed == ["pkg-1.xml"]
    assert os.listdir(tmp_path / "spool") == ["pkg-1.xml"]


async def test_a_real_fault_is_not_taken_for_a_missing_feature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe's own failure for another reason (a full disk) is the delivery error the
    dispatcher retries on, not a silent switch to the other path."""
    real_open = os.open
    tmpfile = getattr(os, "O_TMPFILE", 0o20200000)

    def full_disk(path: str, flags: int, *args: int, **kwargs: int) -> int:
        if flags & tmpfile == tmpfile:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *args, **kwargs)

    if not unnamed_here(tmp_path):
        pytest.skip("no O_TMPFILE on this filesystem")
    monkeypatch.setattr(os, "open", full_disk)
    output = SpoolOutput("spool", tmp_path)
    with pytest.raises(DeliveryError, match="No space left"):
        await output.deliver(make_signal(), "pkg-1")
    assert os.listdir(tmp_path) == []
    assert spool._unnamed_by_device == {}  # asked again at the next try


def test_coalesce_setting_is_bounded() -> None:
    """``coalesce`` (seconds the dispatcher gathers after a small batch): 0.005 unless set,
    0 turns it off, more than 0.1 s is refused at start (it would hold alarms)."""
    default = build_output(OutputConfig(name="spool", kind="spool"))
    assert isinstance(default, SpoolOutput)
    assert default.coalesce == 0.005
    off = build_output(OutputConfig(name="s", kind="spool", settings={"coalesce": 0}))
    assert isinstance(off, SpoolOutput)
    assert off.coalesce == 0
    with pytest.raises(InvalidInputError, match="coalesce"):
        build_output(OutputConfig(name="s", kind="spool", settings={"coalesce": 0.5}))


def _crash_image_unavailable() -> str | None:
    """Why this machine cannot loop-mount a disk image (None: it can try). ``.ci/system-packages``
    makes the loop devices where the kernel allows it."""
    if sys.platform != "linux":
        return "loop-mounts an ext4 image: Linux only"
    if os.geteuid() != 0:
        return "loop-mounts an ext4 image: needs root"
    missing = [
        t for t in ("mkfs.ext4", "e2fsck", "debugfs", "mount", "umount") if not shutil.which(t)
    ]
    if missing:
        return f"loop-mounts an ext4 image: {', '.join(missing)} missing (e2fsprogs, mount)"
    if not Path("/dev/loop-control").exists() and not any(Path("/dev").glob("loop[0-9]*")):
        return "no loop device (/dev/loop-control, /dev/loopN); .ci/system-packages makes them"
    return None


def _mounted_image(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A fresh 64 MiB ext4 image without a journal (as this project's VM runs), loop-mounted:
    the image, where its crash copy goes, and the mount point (the caller unmounts it)."""
    image, crashed, mount = tmp_path / "disk.img", tmp_path / "crashed.img", tmp_path / "mnt"
    with image.open("wb") as disk:
        disk.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image)], check=True)
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:  # the kernel or the container forbids it
        pytest.skip(f"cannot loop-mount an image here: {mounted.stderr.strip()}")
    return image, crashed, mount


def _spool_after_fsck(crashed: Path, found: Path) -> dict[str, bytes]:
    """What the crash copy's ``/spool`` holds once e2fsck has repaired it, name by name."""
    subprocess.run(["e2fsck", "-fy", str(crashed)], capture_output=True, check=False)
    found.mkdir()
    subprocess.run(
        ["debugfs", "-R", f"rdump /spool {found}", str(crashed)], capture_output=True, check=True
    )
    return {path.name: path.read_bytes() for path in (found / "spool").iterdir()}


@pytest.mark.slow
@pytest.mark.skipif(_crash_image_unavailable() is not None, reason=str(_crash_image_unavailable()))
@BOTH_PATHS
def test_a_crash_image_keeps_every_delivered_package(tmp_path: Path, unnamed: bool) -> None:
    """Power lost the moment a write returns: a copy of the disk as it is then (a loop-mounted
    ext4 image without a journal, as this project's VM runs), checked by e2fsck, still holds
    every package of a batch and a lone package, byte for byte. Before the links were flushed
    with their inodes, e2fsck cleared every package linked in (the names pointed at inodes the
    disk held with no link)."""
    image, crashed, mount = _mounted_image(tmp_path)
    batch = [(f"p-{i}.xml", b"<p>%d</p>\n" % i * 40) for i in range(20)]
    lone = [("lone.xml", b"<lone/>\n" * 50)]
    try:
        directory = mount / "spool"
        directory.mkdir()
        subprocess.run(["sync", "-f", str(directory)], check=True)  # the folder existed before
        assert spool.write_all_atomically(directory, batch, unnamed=unnamed) == 20
        assert spool.write_all_atomically(directory, lone, unnamed=unnamed) == 1
        shutil.copyfile(image, crashed)  # what the disk holds as the write returns
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    survived = _spool_after_fsck(crashed, tmp_path / "found")
    assert survived == dict(batch + lone)


@pytest.mark.slow
@pytest.mark.skipif(_crash_image_unavailable() is not None, reason=str(_crash_image_unavailable()))
@BOTH_PATHS
def test_a_crash_after_the_names_before_their_flush_leaves_no_torn_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """Power lost once the packages are named but before the flush that makes the names durable,
    after the kernel's flusher wrote the metadata (an fsync of the block device: inode tables,
    bitmaps, directory blocks) and none of the files' delayed data: every name e2fsck keeps holds
    its whole package. That is why the data is flushed before the names: linking first and
    flushing once left every name of the batch pointing at an empty file here."""
    image, crashed, mount = _mounted_image(tmp_path)
    device = subprocess.run(
        ["findmnt", "-n", "-o", "SOURCE", str(mount)], capture_output=True, text=True, check=True
    ).stdout.strip()
    batch = [(f"p-{i}.xml", b"<p>%d</p>\n" % i * 40) for i in range(20)]
    directory = mount / "spool"
    real_syncfs, real_fsync = spool._SYNCFS, os.fsync
    crashes: list[int] = []

    def crash_if_named(fd: int) -> None:
        """At the first flush once a package is named: the flusher's metadata, then the copy."""
        if not crashes and any(name.endswith(".xml") for name in os.listdir(directory)):
            block_device = os.open(device, os.O_RDONLY)
            try:
                real_fsync(block_device)
            finally:
                os.close(block_device)
            shutil.copyfile(image, crashed)
            crashes.append(fd)

    def syncfs(fd: int) -> int:
        crash_if_named(fd)
        return real_syncfs(fd) if real_syncfs is not None else 0

    def fsync(fd: int) -> None:
        crash_if_named(fd)
        real_fsync(fd)

    try:
        directory.mkdir()
        subprocess.run(["sync", "-f", str(directory)], check=True)  # the folder existed before
        monkeypatch.setattr(spool, "_SYNCFS", syncfs)
        monkeypatch.setattr(os, "fsync", fsync)
        assert spool.write_all_atomically(directory, batch, unnamed=unnamed) == 20
        monkeypatch.undo()
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    assert crashes, "no flush came after the names"
    survived = _spool_after_fsck(crashed, tmp_path / "found")
    packages = {name: data for name, data in survived.items() if name.endswith(".xml")}
    assert packages, "nothing named survived: the crash point shows nothing"
    assert {name: data for name, data in packages.items() if data != dict(batch)[name]} == {}
