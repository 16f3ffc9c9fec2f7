"""A PostgreSQL server of the scenario's own, to stop and start under load.

Restarting the machine's shared PostgreSQL would disturb everything else using it, so the
scenario runs ``initdb`` into a temporary directory and serves it on a free port with the
machine's own binaries (``pg_config --bindir``, else ``/usr/lib/postgresql/*/bin``). PostgreSQL
refuses to run as root: as root, the cluster belongs to the ``postgres`` user and the commands
run as that user (``runuser``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Self

from tests.served import free_port

SKIP = "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"


def bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        out = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        path = Path(out.stdout.strip())
        if (path / "initdb").exists():
            return path
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class PrivatePostgres:
    """``with PrivatePostgres() as pg``: ``pg.url``, ``pg.stop()``, ``pg.start()``."""

    def __init__(self) -> None:
        found = bindir()
        assert found is not None, SKIP
        self.bin = found
        # Not under pytest's temporary directory: that is private to root, and the server may
        # run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        self.data = self.root / "pgdata"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        command = [str(self.bin / argv[0]), *argv[1:]]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
            "-c fsync=off -c max_connections=100"
        )
        log = str(self.root / "postgres.log")
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", log, "-o", options)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` ends every session and stops (a restart's first half); ``immediate`` is a
        crash (recovery from the WAL at the next start)."""
        self._run("pg_ctl", "stop", "-w", "-D", str(self.data), "-m", mode)

    def __enter__(self) -> Self:
        self.data.mkdir(parents=True)
        if self.as_postgres:
            user = pwd.getpwnam("postgres")
            for path in (self.root, self.data):
                os.chown(path, user.pw_uid, user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
