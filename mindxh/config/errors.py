"""The error a recipe section's `check()` raises; the loader adds the file and line."""
from __future__ import annotations


class InvalidValue(ValueError):
    """A value that parsed but cannot work; `key` is relative to its section."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


class InvalidValues(InvalidValue):
    """Several values that cannot work together, all reported at once (a parallel plan that
    breaks three rules names all three)."""

    def __init__(self, problems: list[InvalidValue]):
        super().__init__(problems[0].key, "; ".join(p.message for p in problems))
        self.problems = problems


def require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise InvalidValue(key, message)
