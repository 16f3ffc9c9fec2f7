"""Keeping a long-running process's memory flat.

glibc gives each thread that allocates under contention an arena of its own (up to eight per
core) and keeps what is freed in it for reuse by that arena only. ``serve`` runs many threads
(the threadpool, whose idle threads exit and are created again, the writer, the relay, the
scheduler): freed memory spread over many arenas reads as growth that never comes back.
Bounding the arenas (what ``MALLOC_ARENA_MAX`` does, set before the threads start) keeps it
flat at little cost, since the interpreter's lock serialises most allocation anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

_M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def bound_arenas(arenas: int = 2) -> bool:
    """Limit glibc's malloc to ``arenas`` arenas unless ``MALLOC_ARENA_MAX`` already says how
    many (glibc read it at start-up). False where there is no glibc (musl, macOS)."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return False
    try:
        libc = ctypes.CDLL(libc_name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))
