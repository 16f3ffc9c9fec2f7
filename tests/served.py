"""A real ``meterbridge serve`` on loopback, and raw HTTP/1.1 exchanges with it.

``Served`` starts the process with a fresh SQLite file in a temporary directory and a known admin
token, waits until ``/readyz`` answers (a condition with a deadline, not a sleep) and reads the
public key with ``meterbridge keys show --json`` (run in process, ``cli_in``). ``raw`` sends one
request on a plain socket and returns the exact status, header lines and body bytes that came
back, for checks that must see what a client sees (one ``Date`` header, the body the digest
covers).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from typer.testing import CliRunner, Result

from bridge.cli import app as cli

ADMIN = "admin-" + "5e" * 32
DEADLINE_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_in(env: dict[str, str], *args: str) -> Result:
    """``meterbridge *args`` run in this process (another interpreter to start costs seconds on
    a busy machine) with exactly ``env`` as its environment."""
    unset: dict[str, str | None] = {k: None for k in os.environ if k not in env}
    return CliRunner().invoke(cli, list(args), env={**unset, **env})


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str:
        values = self.all(name)
        assert len(values) == 1, f"{name}: {values}"
        return values[0]

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Served:
    directory: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    public_key: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
        return {
            **env,
            "BRIDGE_DATABASE_URL": f"sqlite:///{self.directory / 'served.db'}",
            "BRIDGE_ADMIN_TOKEN": ADMIN,
            "BRIDGE_SINKS__FILE__PATH": str(self.directory / "usage.ndjson"),
            "BRIDGE_SCHEDULER__ENABLED": "false",
            "COLUMNS": "200",
            **self.env,
        }

    def __enter__(self) -> Self:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "serve", "--port", str(self.port)],
            env=self._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if self.proc.poll() is not None:
                    out = self.proc.stdout.read() if self.proc.stdout else ""
                    raise RuntimeError(f"serve exited early: {out}") from None
                time.sleep(0.05)
        else:
            self.__exit__()
            raise RuntimeError("serve did not become ready in time")
        shown = cli_in(self._env(), "keys", "show", "--json")
        assert shown.exit_code == 0, shown.output
        self.public_key = json.loads(shown.stdout)["ed25519"]
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            if self.proc.stdout is not None:
                self.proc.stdout.close()

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={
                "Authorization": f"Bearer {ADMIN}",
                "Content-Type": "application/vnd.api+json",
            },
        )

    def raw(
        self,
        method: str,
        target: str,
        *,
        host: str | None = None,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> RawResponse:
        payload = json.dumps(body).encode() if body is not None else b""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host or f'127.0.0.1:{self.port}'}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if body is not None:
            lines += ["Content-Type: application/vnd.api+json", f"Content-Length: {len(payload)}"]
        lines.append("Connection: close")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + payload
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(request)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parsed = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)]
        response = RawResponse(int(status_line.split()[1]), parsed, rest)
        length = response.all("content-length")
        if length:
            assert len(rest) == int(length[0])
        return response
