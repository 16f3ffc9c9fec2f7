"""The cost of one request's log line: ``request_completed`` through ``bridge.logging`` (context
merged, secrets redacted, rendered) next to the uvicorn access line ``serve`` wrote before.

Both write to /dev/null, in this process, alternating rounds; the path is a usage action's (one
that the redaction has to look at). A figure per line in microseconds; nothing is asserted.

    python bench/log_line.py [--lines 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import logging.config
import os
import sys
import time

import structlog
from uvicorn.config import LOGGING_CONFIG

from bridge.logging import configure

PATH = "/v1/licenses/0cdf1ab8-b54e-4187-b03f-12a9931d17a9/actions/increment-usage"


def bridge_line(fmt: str, lines: int) -> float:
    """Microseconds per ``request_completed`` line, with a request id bound."""
    real, sys.stderr = sys.stderr, open(os.devnull, "w")  # noqa: SIM115 (closed below)
    try:
        configure("info", fmt)
        log = structlog.get_logger(f"bench.{fmt}.{time.monotonic_ns()}")  # a fresh logger
        with structlog.contextvars.bound_contextvars(request_id="0cdf1ab8-b54e-4187-b03f"):
            start = time.perf_counter()
            for _ in range(lines):
                log.info("request_completed", method="POST", path=PATH, status=200, ms=1.2)
            elapsed = time.perf_counter() - start
    finally:
        sys.stderr.close()
        sys.stderr = real
    return elapsed / lines * 1e6


def uvicorn_line(lines: int) -> float:
    """Microseconds per uvicorn access line, with uvicorn's own logging configuration."""
    logging.root.handlers.clear()
    logging.config.dictConfig(LOGGING_CONFIG)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    with open(os.devnull, "w") as devnull:
        access.handlers[0].stream = devnull  # type: ignore[attr-defined]
        start = time.perf_counter()
        for _ in range(lines):
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5555", "POST", PATH, "1.1", 200)
        elapsed = time.perf_counter() - start
    return elapsed / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    for n in range(1, args.rounds + 1):
        console, json_ = bridge_line("console", args.lines), bridge_line("json", args.lines)
        baseline = uvicorn_line(args.lines)
        print(
            f"round {n}: request_completed console {console:.1f} us, json {json_:.1f} us; "
            f"uvicorn access line (baseline) {baseline:.1f} us"
        )


if __name__ == "__main__":
    main()
