"""The spool: each package written as ``DIR/<package-id>.xml``, the embedded default output.

Rules:
- A package is durable before ``deliver`` returns: written to a temporary file in the same
  directory, fsynced, renamed over its final name, and the directory fsynced. A reader never
  sees a half-written package; a crash leaves at most a ``.*.tmp`` file, never a torn ``.xml``.
- The package id is the file name, so a redelivery after a crash overwrites the same file with
  the same content: at-least-once delivery never shows as two packages.
- The file work runs in a worker thread, one call per package.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from adapters.output import DeliveryError, Settings
from adapters.sentinel.package import DEFAULT_LINK_TEMPLATE, Package, check_link_template
from protocols.signal import Signal


def write_atomically(directory: Path, name: str, data: bytes, *, durable: bool = True) -> Path:
    """Write ``directory/name`` so that it appears whole or not at all, and (``durable``)
    survives a crash: the file and the directory entry are fsynced."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / name
    temporary = directory / f".{name}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)
    if not durable:
        return final
    # The rename is durable only once the directory entry is.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


class SpoolOutput:
    """Writes packages to a directory (for an automation that picks files up)."""

    def __init__(
        self,
        name: str,
        directory: str | Path = "var/spool",
        *,
        link_template: str = DEFAULT_LINK_TEMPLATE,
        station: str | None = None,
    ) -> None:
        self.name = name
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
            link_template=read.text("link_template", DEFAULT_LINK_TEMPLATE)
            or DEFAULT_LINK_TEMPLATE,
            station=read.text("station"),
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
        xml = Package.from_signal(
            signal, package_id, link_template=self.link_template, station=self.station
        ).to_xml()
        try:
            await trio.to_thread.run_sync(
                write_atomically, self.directory, f"{package_id}.xml", xml
            )
        except OSError as exc:
            self._last_error = f"cannot write to {self.directory}: {exc.strerror or exc}"
            raise DeliveryError(self._last_error) from exc
        self._last_error = None

    async def aclose(self) -> None:
        return None
