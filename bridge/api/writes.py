"""Running blocking store writes from async routes."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from fastapi.concurrency import run_in_threadpool

P = ParamSpec("P")
T = TypeVar("T")


class WriteRunner:
    """Runs a blocking write off the event loop.

    With a single-writer store (SQLite) every write goes through one dedicated thread: the
    writes would queue on the write lock anyway, and one thread spares the GIL hand-offs of dozens
    of threadpool threads convoying on that lock (measured with ``bench/http_api.py``). With
    PostgreSQL, writes to different licenses run in parallel in the threadpool.
    """

    def __init__(self, *, single_writer: bool) -> None:
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-writer")
            if single_writer
            else None
        )

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            return await run_in_threadpool(fn, *args, **kwargs)
        call = functools.partial(fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
