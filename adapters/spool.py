"""The spool: each package written as ``DIR/<package-id>.xml``, the embedded default output.

Rules:
- A package is durable before ``deliver`` returns: written to a temporary file in the same
  directory, fsynced, renamed over its final name, and the directory fsynced. A reader never
  sees a half-written package; a crash leaves at most a ``.*.tmp`` file, never a torn ``.xml``.
- The package id is the file name, so a redelivery after a crash overwrites the same file with
  the same content: at-least-once delivery never shows as two packages.
- Packages name accounts and sites: files are created ``0600`` and a folder the spool creates
  ``0700`` (``file_mode = 0o640`` lets an automation in the receiver's group read them; its
  folder then gets ``0750``). Existing folders and files keep their modes.
- The work runs in a worker thread, one call per batch (XML built there too, off the event
  loop; the first package of each batch is validated against the XSD, see ``_write_batch``):
  the dispatcher hands over up to ``window`` packages, all written, then flushed together
  (``syncfs``), then renamed, with one directory fsync, so a backlog costs two flushes per
  batch instead of two per package.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from adapters.output import Settings, UnreachableError
from adapters.sentinel.package import Package, check_link_template
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


def _sync_filesystem(fd: int) -> bool:
    """Flush the whole filesystem holding ``fd`` in one call (Linux ``syncfs(2)``, which
    reports writeback errors since Linux 5.8); False when not available here.

    One flush for a batch of new files instead of one fsync per file: on ext4 each fsync of a
    freshly written file is its own journal commit and disk cache flush."""
    if _SYNCFS is None:
        return False
    if _SYNCFS(fd) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
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
    return write_all_atomically(directory, [(name, data)], durable=durable, mode=mode)[0]


def write_all_atomically(
    directory: Path,
    files: Sequence[tuple[str, bytes]],
    *,
    durable: bool = True,
    mode: int = PRIVATE_FILE,
) -> list[Path]:
    """``write_atomically`` for several files at once: every file is written, then all are
    flushed (one ``syncfs`` for the batch where Linux has it, else an fsync each), then each is
    renamed over its final name, and the directory is fsynced once for all the renames.

    New files get ``mode`` (0600: the receiver's user only), a folder created here
    ``folder_mode(mode)``; the process umask can only narrow them. Names are resolved against
    one open directory descriptor (``dir_fd``): no path walk per file, and the same descriptor
    serves the directory's fsync."""
    if not directory.is_dir():
        directory.mkdir(mode=folder_mode(mode), parents=True, exist_ok=True)
    suffix = f".{os.getpid()}.tmp"
    temporaries: list[tuple[str, str]] = []
    descriptors: list[int] = []
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            for name, data in files:
                temporary = f".{name}{suffix}"
                fd = os.open(temporary, _CREATE, mode, dir_fd=dir_fd)
                descriptors.append(fd)
                temporaries.append((temporary, name))
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            if durable and not (len(descriptors) > 1 and _sync_filesystem(descriptors[0])):
                for fd in descriptors:
                    os.fsync(fd)
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
        if durable and temporaries:
            os.fsync(dir_fd)  # the renames are durable only once the directory entry is
    finally:
        os.close(dir_fd)
    return [directory / final for _, final in temporaries]


_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


class SpoolOutput:
    """Writes packages to a directory (for an automation that picks files up)."""

    # Packages the dispatcher may hand over in one call: a backlog costs two flushes per this
    # many packages, so the spool drains faster than signals arrive at full ingest rate.
    window = 512

    def __init__(
        self,
        name: str,
        directory: str | Path = "var/spool",
        *,
        link_template: str | None = None,
        station: str | None = None,
        file_mode: int = PRIVATE_FILE,
    ) -> None:
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
        for index, (signal, package_id) in enumerate(items):
            package = Package.from_signal(
                signal, package_id, link_template=self.link_template, station=self.station
            )
            # The XSD check costs three times the build: the first package of every batch is
            # validated (every package when traffic is light), raising before any file of the
            # batch is written. The property tests prove that the builder writes, for any
            # signal, exactly the bytes of the lxml tree and that they pass the XSD, so what a
            # check could still catch (a schema file or libxml2 at odds with the tests) is
            # systematic, the same for every package, and shows on the first batch.
            files.append((f"{package_id}.xml", package.to_xml(validate=index == 0)))
        write_all_atomically(self.directory, files, mode=self.file_mode)
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
