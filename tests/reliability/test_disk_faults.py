"""The disk full, and a read-only volume, under load: clear 503s (with ``Retry-After``, never
a 500) and a clear one-line error from ``serve``, no corruption (``PRAGMA integrity_check``),
nothing accepted lost, and recovery when space returns or the volume is writable again.

Where this process may mount file systems (root with CAP_SYS_ADMIN, as in CI), the store and the
file sink live on a small tmpfs of the test's own: it is filled to the last byte and later
emptied; and serve is started on it remounted read-only (Linux refuses to remount a file system
read-only under a process writing to it), then again once it is writable. Elsewhere (or with
``BRIDGE_FAULT_NO_MOUNT=1``) the disk-full half runs with a file size limit (``RLIMIT_FSIZE``,
set on the running ``serve`` with ``prlimit``) instead, and the read-only half is skipped (a
``chmod`` does not stop a process that holds the file open, nor root at all).
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.reliability.harness import (
    Figures,
    Load,
    Process,
    audit,
    base_env,
    make_licenses,
    relay_settings,
    running,
    sqlite_settings,
    wait_drained,
    wait_for,
)

TMPFS_SIZE = "16m"


@contextmanager
def tmpfs(where: Path) -> Iterator[bool]:
    """A tmpfs mounted at ``where`` (yields True), or just the directory (False)."""
    where.mkdir()
    mount, umount = shutil.which("mount"), shutil.which("umount")
    mounted = bool(
        mount
        and umount
        and not os.environ.get("BRIDGE_FAULT_NO_MOUNT")
        and subprocess.run(
            [mount, "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(where)],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    try:
        yield mounted
    finally:
        if mounted and umount:
            subprocess.run([umount, "-l", str(where)], check=False)


def _fill(volume: Path) -> Path:
    """Write a file until the file system has no byte left."""
    filler = volume / "filler"
    # Unbuffered: nothing is left to flush (and fail again) when the file is closed.
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def _remount(volume: Path, mode: str) -> None:
    subprocess.run(
        [shutil.which("mount") or "mount", "-o", f"remount,{mode}", str(volume)], check=True
    )


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def test_disk_full_and_read_only(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    with tmpfs(volume) as mounted:
        settings = {**sqlite_settings(volume), **relay_settings()}
        serve = Process("serve", base_env(settings), tmp_path / "serve.log")
        faults = []
        with running(serve):
            licenses = make_licenses(serve.url, 10)
            load = Load(lambda: [serve.url], licenses, threads=4, keys=True).start()
            load.wait_accepted(50)

            before = load.statuses[503]
            assert serve.proc is not None
            if mounted:
                filler = _fill(volume)
            else:  # no file may grow past its size now
                limit = (volume / "bridge.db-wal").stat().st_size // 2
                hard = resource.prlimit(serve.proc.pid, resource.RLIMIT_FSIZE)[1]
                resource.prlimit(serve.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))
            wait_for(lambda: load.statuses[503] > before + 10, "503s on a full disk")
            full = load.statuses[503] - before
            detail = _detail(serve.url, licenses[0])
            if mounted:
                filler.unlink()  # space returns
            else:
                resource.prlimit(serve.proc.pid, resource.RLIMIT_FSIZE, (hard, hard))
            load.wait_accepted(50)  # recovered by itself
            how = "tmpfs filled to the last byte" if mounted else "RLIMIT_FSIZE (prlimit)"
            faults.append(f"disk full ({how}): {full} answers 503, {detail!r}")

            if mounted:
                # Linux will not make a file system read-only under a process writing to it
                # (EBUSY): serve is stopped, the volume remounted read-only, and serve started
                # on it, as after a reboot onto a read-only volume. It must say so in one line
                # and exit 1; started again once the volume is writable, it serves as before
                # (the clients meanwhile retry with their keys).
                assert serve.stop() == 0
                _remount(volume, "ro")
                refused = subprocess.run(
                    [sys.executable, "-m", "bridge", "serve", "--port", str(serve.port)],
                    env=serve.env,
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                said = " ".join(refused.stderr.split())
                assert refused.returncode == 1, said
                assert "error SERVICE_UNAVAILABLE: the database file cannot be opened" in said
                _remount(volume, "rw")
                serve.start()
                load.wait_accepted(50)
                faults.append(f"serve started on a read-only volume: exit 1, {said!r}")
            load.stop()
            wait_drained(settings["BRIDGE_DATABASE_URL"])
        assert _integrity(volume / "bridge.db") == "ok"
        figures = Figures(
            "disk full, file system read-only (SQLite and the file sink)",
            f"{load.threads} keyed client threads",
            "; ".join(faults),
            notes="PRAGMA integrity_check: ok",
        )
        audit(figures, settings["BRIDGE_DATABASE_URL"], [load], None, volume / "usage.ndjson")
    if not mounted:
        pytest.skip("read-only half skipped: this process may not mount a file system")


def _detail(url: str, license_id: str) -> str:
    """The error an increment gets now (the scenario's clear answer), e.g. disk full."""
    from tests.reliability.harness import admin

    with admin(url) as http:
        for _ in range(50):
            try:
                response = http.post(f"/v1/licenses/{license_id}/actions/increment-usage")
            except httpx.TransportError:
                continue
            if response.status_code == 503:
                error = response.json()["errors"][0]
                return f"{error['code']}: {error['detail']}"
    return "no 503 seen"
