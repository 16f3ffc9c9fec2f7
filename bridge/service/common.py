"""Small pieces every use case shares."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from bridge.domain.errors import INT4_MAX, PageInvalid

T = TypeVar("T")

MAX_PAGE_SIZE = 100
MAX_PAGE_NUMBER = INT4_MAX  # bounds the SQL OFFSET (at most about 2**38)


def ignore(_value: object) -> None:
    """The default ``answer`` of a write use case: nothing to render."""


# Every write use case takes ``answer``, called with its result inside the transaction, just
# before the commit: the API renders its response there, so a response that cannot be rendered
# rolls the change back and no error answer ever follows a commit.
Answer = Callable[[T], object]


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Keygen's ``page[number]`` (1-based) and ``page[size]`` (1..100)."""

    number: int = 1
    size: int = 10

    def __post_init__(self) -> None:
        if self.number < 1:
            raise PageInvalid("page number must be greater than or equal to 1")
        if self.number > MAX_PAGE_NUMBER:
            raise PageInvalid(f"page number must be less than or equal to {MAX_PAGE_NUMBER}")
        if not 1 <= self.size <= MAX_PAGE_SIZE:
            raise PageInvalid("page size must be a number between 1 and 100")

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    total: int
    request: PageRequest

    @property
    def last(self) -> int:
        return max(1, -(-self.total // self.request.size))
