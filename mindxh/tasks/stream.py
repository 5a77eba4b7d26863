"""Taking problems from a task's stream from a saved position (shared by every task)."""
from __future__ import annotations

from typing import Iterator, TypeVar

__all__ = ["take"]

P = TypeVar("P")


def take(stream: Iterator[tuple[int, P]], start: int, n: int) -> tuple[list[P], int]:
    """The next `n` problems of a stream of (index, problem) begun at `start`, and the index
    to resume it from (one past the last problem's)."""
    out, next_index = [], start
    for _ in range(n):
        index, problem = next(stream)
        out.append(problem)
        next_index = index + 1
    return out, next_index
