"""A throwaway PostgreSQL server for tests and benchmarks: Debian's server binaries, a data folder in a
temporary folder, a unix socket there (no TCP port is opened), stopped and removed after.

PostgreSQL refuses to run as root: as root, the server runs as the unprivileged `nobody` (through
`runuser`), in a folder it owns. `find_binaries()` says why not when the server cannot be started here.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def find_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                     if Path(p).parent.name.isdigit() else 0)
    for folder in reversed(folders):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def unavailable() -> str | None:
    """Why a server cannot be started here (to skip with), or None."""
    if find_binaries() is None:
        return "PostgreSQL's server (initdb, pg_ctl) is not installed: apt-get install postgresql"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser: PostgreSQL refuses to run as root"
    return None


def _free_port() -> int:
    # The port only names the socket file; no TCP listener is opened (listen_addresses='').
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`Server().url` is a postgresql:// URL of a fresh, empty server; `stop()` ends it and removes its files."""

    def __init__(self):
        why = unavailable()
        if why:
            raise RuntimeError(why)
        self.bin = find_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="dolly-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            os.chmod(self.folder, 0o700)
            shutil.chown(self.folder, "nobody", "nogroup" if _group_exists("nogroup") else None)
        self.data, self.port = self.folder / "data", _free_port()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "dolly", "-E", "UTF8", "--no-sync")
        self._options = f"-c listen_addresses='' -c unix_socket_directories='{self.folder}' -p {self.port}"
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options, "-l", str(self.folder / "log"), "-w", "start")
        self.url = f"postgresql://dolly@/postgres?host={self.folder}&port={self.port}"

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.as_root:
            command = ["runuser", "-u", "nobody", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.folder)
        if done.returncode:
            log = self.folder / "log"
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}{done.stderr}"
                               + (log.read_text() if log.exists() else ""))

    def restart(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as a crash would, no checkpoint; recovery replays the WAL) and start it."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self._run("pg_ctl", "-D", str(self.data), "-o", self._options, "-l", str(self.folder / "log"), "-w", "start")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _group_exists(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False
