"""The spool: each package written as ``DIR/<package-id>.xml``, the embedded default output.

Rules:
- A package is durable before ``deliver`` returns: its data flushed, then given its final name
  in one step, and the name made durable. A reader never sees a half-written package. On Linux
  the data goes to an unnamed inode in the directory (``O_TMPFILE``) linked to its name once
  flushed, so a crash leaves nothing (a redelivery, linked to a temporary name and renamed
  over the old file, at most a ``.*.tmp``); elsewhere (no ``O_TMPFILE``, no ``/proc``) to a
  named temporary renamed over the final name, so a crash leaves at most a ``.*.tmp`` file.
  Never a torn ``.xml``.
- A linked inode's name is durable only with its link count: the inode was flushed with none.
  A directory fsync writes the directory's blocks, not the inodes linked into it, and ext4
  without a journal (this project's VM) commits nothing else with it: after a crash there, the
  names pointed at inodes on disk with no link, which e2fsck clears (every package of the batch
  lost after the cursor had passed it: test_spool.py's crash image test). So the links
  are flushed by a second ``syncfs`` (the directory's blocks and the inodes together), or where
  there is no syncfs by an fsync of every linked file and of the directory. A renamed
  temporary keeps the link count it was flushed with: the named path fsyncs the directory.
- The package id is the file name, so a redelivery after a crash overwrites the same file with
  the same content: at-least-once delivery never shows as two packages.
- Packages name accounts and sites: files are created ``0600`` and a folder the spool creates
  ``0700`` (``file_mode = 0o640`` lets an automation in the receiver's group read them; its
  folder then gets ``0750``). Existing folders and files keep their modes.
- The work runs in a worker thread, one call per batch (XML built there too, off the event
  loop, in one pass by ``package_xml``; the first package of each batch is validated against
  the XSD, see ``_write_batch``):
  the dispatcher hands over up to ``window`` packages, all written, then flushed together
  (``syncfs``), then named, then flushed again (``syncfs``; the named path: one directory
  fsync), so a backlog costs two flushes per batch instead of two per package.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from adapters.output import Settings, UnreachableError
from adapters.sentinel.package import check_built, check_link_template, package_xml
from protocols.errors import InvalidInputError
from protocols.signal import Signal


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):  # not Linux, or a libc without syncfs(2)
        return None
    return syncfs


_SYNCFS = _load_syncfs() if sys.platform == "linux" else None


def _load_linkat() -> Callable[[int, bytes, int, bytes, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        linkat: Callable[[int, bytes, int, bytes, int], int] = libc.linkat
    except (OSError, AttributeError):  # a libc without linkat(2)
        return None
    return linkat


# linkat(fd, "", dir_fd, name, AT_EMPTY_PATH): an unnamed inode linked by its descriptor, with no
# path walk through /proc/self/fd (about a quarter of the link's kernel time). Linux allows it to
# the process that opened the file (since 6.10; before, only with CAP_DAC_READ_SEARCH).
_LINKAT = _load_linkat() if sys.platform == "linux" else None
_AT_EMPTY_PATH = 0x1000
# The refusals that mean "not to this process here": the /proc path then, for the process's life.
_LINK_REFUSED = frozenset({errno.ENOENT, errno.EPERM, errno.EINVAL, errno.ENOSYS})


def _sync_filesystem(fd: int) -> bool:
    """Flush the whole filesystem holding ``fd`` in one call (Linux ``syncfs(2)``, which
    reports writeback errors since Linux 5.8); False when not available here.

    One flush for a batch of new files instead of one fsync per file: on ext4 each fsync of a
    freshly written file is its own journal commit and disk cache flush."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return True


PRIVATE_FILE = 0o600


def folder_mode(file_mode: int) -> int:
    """The mode of a folder holding files of ``file_mode``: whoever may read them may list it."""
    readers = file_mode & 0o044
    return 0o700 | readers | readers >> 2


def write_atomically(
    directory: Path, name: str, data: bytes, *, durable: bool = True, mode: int = PRIVATE_FILE
) -> Path:
    """Write ``directory/name`` so that it appears whole or not at all, and (``durable``)
    survives a crash: the file and the directory entry are fsynced."""
    write_all_atomically(directory, [(name, data)], durable=durable, mode=mode)
    return directory / name


def write_all_atomically(
    directory: Path,
    files: Sequence[tuple[str, bytes]],
    *,
    durable: bool = True,
    mode: int = PRIVATE_FILE,
    unnamed: bool = True,
) -> int:
    """``write_atomically`` for several files at once: every file is written, then all are
    flushed (one ``syncfs`` for the batch where Linux has it, else an fsync each), then each is
    given its final name, and the names are flushed once for all (a second ``syncfs`` after
    links, a directory fsync after renames).

    Where the filesystem has them (``unnamed``, probed once per filesystem), each file is
    written as an unnamed inode in the directory (``O_TMPFILE``) and linked to its final name
    (``linkat`` by its descriptor, ``AT_EMPTY_PATH``, where the kernel allows it, else through
    ``/proc/self/fd``): one directory insert per package instead of a temporary's insert, then
    a rename (an insert and a removal), and a crash before the link leaves nothing at all
    (``benchmarks.spool`` measures both paths). A name that already exists (a redelivery) is
    linked to a temporary name and renamed over it, so it is still replaced whole. Elsewhere
    the classic way: a named temporary renamed over the final name.

    New files get ``mode`` (0600: the receiver's user only), a folder created here
    ``folder_mode(mode)``; the process umask can only narrow them. Names are resolved against
    one open directory descriptor (``dir_fd``): no path walk per file, and the same descriptor
    serves the directory's fsync. Returns how many files were written (all, or it raises)."""
    if not directory.is_dir():
        directory.mkdir(mode=folder_mode(mode), parents=True, exist_ok=True)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if unnamed and _unnamed_files(dir_fd):
            written = _write_unnamed(dir_fd, files, durable=durable, mode=mode)
        else:
            written = _write_named(dir_fd, files, durable=durable, mode=mode)
            if durable and written:
                os.fsync(dir_fd)  # the renames are durable once the directory's blocks are
    finally:
        os.close(dir_fd)
    return written


def _write_data(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _flush(descriptors: Sequence[int]) -> None:
    """One syncfs for a batch of files where Linux has it, else an fsync of each."""
    if not (len(descriptors) > 1 and _sync_filesystem(descriptors[0])):
        for fd in descriptors:
            os.fsync(fd)


def _write_named(
    dir_fd: int, files: Sequence[tuple[str, bytes]], *, durable: bool, mode: int
) -> int:
    """Temporaries ``.<name>.<pid>.tmp``, written and flushed, then renamed into place."""
    suffix = f".{os.getpid()}.tmp"
    temporaries: list[tuple[str, str]] = []
    descriptors: list[int] = []
    try:
        try:
            for name, data in files:
                temporary = f".{name}{suffix}"
                fd = os.open(temporary, _CREATE, mode, dir_fd=dir_fd)
                descriptors.append(fd)
                temporaries.append((temporary, name))
                _write_data(fd, data)
            if durable:
                _flush(descriptors)
        except BaseException:
            for temporary, _ in temporaries:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=dir_fd)
            raise
    finally:
        for fd in descriptors:
            os.close(fd)
    for temporary, final in temporaries:
        os.replace(temporary, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return len(temporaries)


def _write_unnamed(
    dir_fd: int, files: Sequence[tuple[str, bytes]], *, durable: bool, mode: int
) -> int:
    """Unnamed inodes (``O_TMPFILE``), written and flushed, then linked to their names. Until
    its link an inode is in no directory: a failure or a crash before it leaves no file (the
    kernel frees the inode when its descriptor closes, or at the next mount)."""
    descriptors: list[int] = []
    try:
        for _, data in files:
            descriptors.append(os.open(".", _UNNAMED, mode, dir_fd=dir_fd))
            _write_data(descriptors[-1], data)
        if durable and descriptors and not _sync_filesystem(descriptors[0]):
            for fd in descriptors:
                os.fsync(fd)
        for fd, (name, _) in zip(descriptors, files, strict=True):
            _link(fd, name, dir_fd)
        if durable and descriptors:
            _flush_links(descriptors, dir_fd)
    finally:
        for fd in descriptors:
            os.close(fd)
    return len(descriptors)


def _flush_links(descriptors: Sequence[int], dir_fd: int) -> None:
    """Make the links durable: the directory's new entries and each inode's link count (the
    inodes were flushed unlinked). One syncfs writes both; a directory fsync alone does not
    write the inodes (ext4 without a journal: a crash then loses every linked package)."""
    if not _sync_filesystem(dir_fd):
        for fd in descriptors:
            os.fsync(fd)
        os.fsync(dir_fd)


def _link(fd: int, name: str, dir_fd: int) -> None:
    """Give the unnamed inode ``fd`` the name ``name``, replacing a file of that name whole."""
    try:
        _link_inode(fd, name, dir_fd)
    except FileExistsError:
        # A redelivery: linkat never replaces, so link a temporary name and rename it over.
        temporary = f".{name}.{os.getpid()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=dir_fd)  # left by a crash between these two steps
        _link_inode(fd, temporary, dir_fd)
        os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


# "refused": once the kernel refused AT_EMPTY_PATH and /proc served instead (not asked again).
_descriptor_link = {"refused": False}


def _link_inode(fd: int, name: str, dir_fd: int) -> None:
    """Link ``fd`` as ``name`` in ``dir_fd``: by its descriptor (``AT_EMPTY_PATH``) where the
    kernel allows it, else through ``/proc/self/fd``. Raises FileExistsError for a taken name."""
    if _LINKAT is not None and not _descriptor_link["refused"]:
        if _LINKAT(fd, b"", dir_fd, os.fsencode(name), _AT_EMPTY_PATH) == 0:
            return
        code = ctypes.get_errno()
        if code not in _LINK_REFUSED:
            raise OSError(code, os.strerror(code), name)  # EEXIST: FileExistsError
        # Refused (an older kernel, other credentials) or a real ENOENT (the folder is gone):
        # the /proc path decides, and only once it has worked is the descriptor path dropped.
        os.link(f"{_PROC_FD}/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)
        _descriptor_link["refused"] = True
        return
    os.link(f"{_PROC_FD}/{fd}", name, dst_dir_fd=dir_fd, follow_symlinks=True)


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
_O_TMPFILE: int | None = getattr(os, "O_TMPFILE", None)
_UNNAMED = os.O_WRONLY | (_O_TMPFILE or 0) | getattr(os, "O_CLOEXEC", 0)
_PROC_FD = "/proc/self/fd"
# Refusals of O_TMPFILE that mean "not here" (the filesystem, the kernel, or no /proc to link
# through), by filesystem (st_dev): probed once each.
_NOT_SUPPORTED = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT})
_unnamed_by_device: dict[int, bool] = {}


def _unnamed_files(dir_fd: int) -> bool:
    """Whether the filesystem of ``dir_fd`` takes unnamed files that can be linked in."""
    device = os.fstat(dir_fd).st_dev
    known = _unnamed_by_device.get(device)
    if known is None:
        known = _unnamed_by_device[device] = _probe_unnamed(dir_fd)
    return known


def _probe_unnamed(dir_fd: int) -> bool:
    if _O_TMPFILE is None or not os.path.isdir(_PROC_FD):
        return False
    try:
        fd = os.open(".", _UNNAMED, PRIVATE_FILE, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _NOT_SUPPORTED:
            return False
        raise  # a real fault (a full disk, a permission): the caller reports it
    os.close(fd)  # never linked: the kernel frees it
    return True


class SpoolOutput:
    """Writes packages to a directory (for an automation that picks files up)."""

    # Packages the dispatcher may hand over in one call: a backlog costs two flushes per this
    # many packages, so the spool drains faster than signals arrive at full ingest rate.
    window = 512

    # Seconds the dispatcher waits after a small batch before reading the next (``coalesce``
    # setting): steady traffic then costs two flushes per several packages, not per one or
    # two. An alarm after a quiet spell is not held at all.
    COALESCE = 0.005
    MAX_COALESCE = 0.1

    def __init__(
        self,
        name: str,
        directory: str | Path = "var/spool",
        *,
        link_template: str | None = None,
        station: str | None = None,
        file_mode: int = PRIVATE_FILE,
        coalesce: float = COALESCE,
    ) -> None:
        if not 0 <= coalesce <= self.MAX_COALESCE:
            raise InvalidInputError(
                f"output {name!r}: coalesce must be 0 to {self.MAX_COALESCE} seconds, "
                f"got {coalesce}"
            )
        if file_mode & ~0o666 or not file_mode & 0o600 == 0o600:
            raise InvalidInputError(
                f"output {name!r}: file_mode must give the owner read and write and no one "
                f"execute (e.g. 0o600 or 0o640), got {file_mode:#o}"
            )
        self.name = name
        self.file_mode = file_mode
        self.directory = Path(directory)
        self.link_template = check_link_template(link_template)
        self.station = station
        self.coalesce = coalesce
        self.unnamed = True  # O_TMPFILE + linkat where the filesystem has them (False: never)
        self._last_error: str | None = None

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any]) -> SpoolOutput:
        read = Settings(name, settings)
        output = cls(
            name,
            read.text("directory", "var/spool") or "var/spool",
            link_template=read.text("link_template"),
            station=read.text("station"),
            file_mode=read.integer("file_mode", PRIVATE_FILE, maximum=0o777),
            coalesce=read.number("coalesce", cls.COALESCE),
        )
        read.finish()
        return output

    @property
    def connected(self) -> bool:
        return self._last_error is None

    @property
    def last_error(self) -> str | None:
        return self._last_error

    async def deliver(self, signal: Signal, package_id: str) -> None:
        await self.deliver_batch([(signal, package_id)])

    def _write_batch(self, items: Sequence[tuple[Signal, str]]) -> int:
        """Build and write the packages (in a worker thread: the XML is built there too, off
        the event loop)."""
        files: list[tuple[str, bytes]] = []
        link_template, station = self.link_template, self.station
        for signal, package_id in items:
            # The one-pass builder: the bytes of Package.from_signal(...).to_xml() (a property
            # test), without the Package in between.
            document = package_xml(signal, package_id, link_template=link_template, station=station)
            files.append((f"{package_id}.xml", document))
        if files:
            # The XSD check costs several builds: the first package of every batch is
            # validated (every package when traffic is light), raising before any file of the
            # batch is written. The property tests prove that the builder writes, for any
            # signal, exactly the bytes of the lxml tree and that they pass the XSD, so what a
            # check could still catch (a schema file or libxml2 at odds with the tests) is
            # systematic, the same for every package, and shows on the first batch.
            check_built(files[0][1], items[0][1])
        write_all_atomically(self.directory, files, mode=self.file_mode, unnamed=self.unnamed)
        return len(files)

    async def deliver_batch(self, items: Sequence[tuple[Signal, str]]) -> int:
        """Write every package durably; returns how many (all, or raises UnreachableError)."""
        try:
            written = await trio.to_thread.run_sync(self._write_batch, items)
        except OSError as exc:
            self._last_error = f"cannot write to {self.directory}: {exc.strerror or exc}"
            # Nothing was published; retrying costs one write attempt, so probe often.
            raise UnreachableError(self._last_error) from exc
        self._last_error = None
        return written

    async def aclose(self) -> None:
        return None
