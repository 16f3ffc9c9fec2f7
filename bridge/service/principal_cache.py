"""Principals of database tokens, cached by token digest so a request needs no query.

A bounded LRU of SHA-256 digest -> principal (never a raw token), each entry living at most
``ttl_s`` (a safety net). Exact invalidation comes from two places:

- in this process, ``invalidate`` runs right after a commit that removed tokens;
- in other processes, such a commit also bumps the database's ``auth_generation`` counter. An
  entry is served only while a read of that counter begun within the last ``check_s`` saw it
  unchanged (a moved counter drops the whole cache): ``RevocationWatch`` re-reads it twice per
  ``check_s`` in the background, and a look-up reads it too, so a token revoked at T is refused
  everywhere from T + ``check_s`` on.

A lookup that read the database before a revocation must not store what it read: ``put`` takes
the epoch taken before the read and the counter read with it, and stores nothing if either has
moved since.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

import structlog

from bridge.domain.access import Principal

log = structlog.get_logger(__name__)


class PrincipalCache:
    def __init__(
        self,
        ttl_s: float,
        check_s: float,
        size: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._check = check_s
        self._size = size
        self._now = monotonic
        self._lock = Lock()
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._epoch = 0  # moves with every invalidate
        self._generation = -1  # the database counter last seen; none yet
        self._checked = float("-inf")  # when the last counter read began

    @property
    def enabled(self) -> bool:
        return self._ttl > 0

    @property
    def check_s(self) -> float:
        return self._check

    def get(self, token_digest: str) -> Principal | None:
        """The cached principal, or None: unknown, expired, or the counter is due a re-read."""
        now = self._now()
        with self._lock:
            if now - self._checked >= self._check:
                return None
            entry = self._entries.get(token_digest)
            if entry is None:
                return None
            principal, expires = entry
            if now >= expires:
                del self._entries[token_digest]
                return None
            self._entries.move_to_end(token_digest)
            return principal

    def begin(self) -> tuple[int, float]:
        """Taken before a lookup reads the database: (epoch, start)."""
        with self._lock:
            return self._epoch, self._now()

    def observe(self, generation: int, started: float) -> None:
        """The counter a lookup begun at ``started`` read; a newer one drops the cache."""
        with self._lock:
            if generation > self._generation:
                # Entries read before this generation go; lookups in flight that read an older
                # one are refused by ``put``'s counter check (the epoch is for ``invalidate``).
                self._entries.clear()
                self._generation = generation
            if generation == self._generation:
                self._checked = max(self._checked, started)

    def put(
        self, token_digest: str, principal: Principal, began: tuple[int, float], generation: int
    ) -> None:
        """Store what a lookup read, unless the cache was dropped or the counter moved since."""
        epoch, started = began
        with self._lock:
            if epoch != self._epoch or generation != self._generation:
                return
            self._entries[token_digest] = (principal, started + self._ttl)
            self._entries.move_to_end(token_digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def invalidate(self) -> None:
        """Drop every entry (tokens were removed in this process)."""
        with self._lock:
            self._entries.clear()
            self._epoch += 1

    def __len__(self) -> int:
        return len(self._entries)


class RevocationWatch:
    """A thread re-reading the revocation counter every half ``check_s``, so that cached
    principals keep being served (a request never waits for the counter)."""

    def __init__(self, cache: PrincipalCache, read: Callable[[], int]) -> None:
        self._cache = cache
        self._read = read
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        _, started = self._cache.begin()
        self._cache.observe(self._read(), started)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="bridge-auth-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._cache.check_s / 2):
            try:
                self.step()
            except Exception:  # the database is away: look-ups read the counter themselves
                if not failing:
                    log.warning("revocation_check_failed", exc_info=True)
                failing = True
            else:
                failing = False
