"""Principals of database tokens, cached by token digest so a request needs no query.

A bounded LRU of SHA-256 digest -> principal (never a raw token), each entry living at most
``ttl_s`` (a safety net). Exact invalidation comes from two places:

- in this process, ``invalidate`` runs right after a commit that removed tokens;
- in other processes, such a commit also bumps the database's ``auth_generation`` counter, and a
  lookup re-reads it at least every ``check_s``: a moved counter drops the whole cache.

A lookup that read the database before a revocation must not store what it read: ``put`` takes
the epoch taken before the read and the counter read with it, and stores nothing if either has
moved since.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from threading import Lock

from bridge.domain.access import Principal


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
