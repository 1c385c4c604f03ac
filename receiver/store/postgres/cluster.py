"""A throwaway PostgreSQL cluster: ``initdb`` in a temporary folder, ``pg_ctl start`` on a free
loopback port, removed at ``stop()``. For the tests, the benchmarks and trying several nodes on
one machine; never for a station's data.

PostgreSQL refuses to run as root: as root, the cluster runs as the unprivileged ``postgres``
user the Debian package creates (``runuser -u postgres --``), in a folder it owns.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import attrs

from protocols.errors import StartupError

INSTALL_HINT = (
    "PostgreSQL is not installed (no initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin); "
    "install it with: sudo apt-get install postgresql"
)
_START_ATTEMPTS = 3


class ClusterError(StartupError):
    """The throwaway cluster could not be created or started."""


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl`` (PATH first, then Debian's newest)."""
    initdb = shutil.which("initdb")
    if initdb is not None and shutil.which("pg_ctl") is not None:
        return Path(os.path.realpath(initdb)).parent
    versions = []
    for folder in Path("/usr/lib/postgresql").glob("*/bin"):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            with contextlib.suppress(ValueError):
                versions.append((int(folder.parent.name), folder))
    return max(versions)[1] if versions else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@attrs.define
class Cluster:
    """A running throwaway cluster; connect with :attr:`url` (superuser ``postgres``, trust)."""

    bin_dir: Path
    folder: Path
    port: int = 0
    run_as: str | None = None  # the OS user running the server (None: this process's user)
    started: bool = False

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        return subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=120, cwd=self.folder
        )

    def _initdb(self) -> None:
        done = self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster; the server itself still fsyncs its commits
        )
        if done.returncode != 0:
            raise ClusterError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def _start(self) -> None:
        errors = []
        for _ in range(_START_ATTEMPTS):  # a free port may be taken before the server binds it
            self.port = _free_port()
            done = self._pg_ctl_start()
            if done.returncode == 0:
                self.started = True
                return
            errors.append(done.stderr.strip() or done.stdout.strip())
        raise ClusterError(f"pg_ctl start failed: {errors[-1]} (log: {self.log_tail()})")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} "
            "-c synchronous_commit=on -c fsync=on -c max_connections=200"
        )
        return self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def halt(self) -> None:
        """Stop the server as an operator would (``pg_ctl stop``, fast: every session is cut),
        keeping its data: :meth:`resume` starts it again on the same port."""
        if self.started:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop")
            self.started = False

    def resume(self) -> None:
        """Start a halted server again, on its port."""
        if not self.started:
            done = self._pg_ctl_start()
            if done.returncode != 0:
                error = done.stderr.strip() or done.stdout.strip()
                raise ClusterError(f"pg_ctl start failed: {error} (log: {self.log_tail()})")
            self.started = True

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = (self.folder / "server.log").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the server (fast shutdown) and remove its folder."""
        try:
            self.halt()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster(bin_dir: Path | None = None) -> Cluster:
    """Create and start a throwaway cluster; :class:`ClusterError` (with the install hint when
    PostgreSQL is missing) if it cannot."""
    bin_dir = bin_dir or find_bin_dir()
    if bin_dir is None:
        raise ClusterError(INSTALL_HINT)
    run_as = None
    folder = Path(tempfile.mkdtemp(prefix="receiver-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise ClusterError(
                "running as root, and there is no 'postgres' user to run the cluster as "
                "(PostgreSQL refuses root); install Debian's postgresql package, which creates it"
            ) from None
        os.chown(folder, user.pw_uid, user.pw_gid)
        run_as = "postgres"
    cluster = Cluster(bin_dir=bin_dir, folder=folder, run_as=run_as)
    try:
        cluster._initdb()
        cluster._start()
    except BaseException:
        cluster.stop()
        raise
    return cluster
