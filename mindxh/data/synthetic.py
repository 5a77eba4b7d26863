"""Embedded default data: synthetic multi-step arithmetic word problems.

The package must be trainable with no download, and reasoning work (SFT, GRPO)
needs problems whose answers can be checked exactly.  This module generates
English word problems with a step-by-step solution in the reasoning format
``<think>5+7=12 , 12-3=9</think><answer>9</answer>``.

Difficulty levels:

=====  ==========  ==========  ==========================  ====================
level  operations  operators   operands                    notes
=====  ==========  ==========  ==========================  ====================
1      1-2         ``+ -``     1..10                       warm-up
2      2-4         ``+ -``     1..20                       the GRPO level
3      3-5         ``+ - *``   1..50 (``*`` factor 2..12)  ``*`` only on <= 50
=====  ==========  ==========  ==========================  ====================

Every intermediate value stays >= 0 (a subtraction never takes away more than
is held).  Problems are a pure function of ``(seed, index, level)``.  The
train / held-out split is decided by a keyed hash of the *question text*
alone (not the seed), so the same question can never be in both splits, even
across seeds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "DEFAULT_HELDOUT_FRACTION",
    "LEVELS",
    "LevelSpec",
    "Problem",
    "SPLITS",
    "document_source",
    "generate",
    "iter_problems",
    "sample_texts",
    "split_of",
]

DEFAULT_HELDOUT_FRACTION = 1.0 / 16.0
SPLITS = ("train", "heldout")


@dataclass(frozen=True)
class LevelSpec:
    """Shape of the problems of one difficulty level."""

    min_ops: int
    max_ops: int
    operators: str
    max_operand: int
    max_factor: int = 0  # largest multiplier for ``*``; 0 when ``*`` is off
    max_mul_base: int = 0  # ``*`` is only applied when the value is <= this


LEVELS: dict[int, LevelSpec] = {
    1: LevelSpec(min_ops=1, max_ops=2, operators="+-", max_operand=10),
    2: LevelSpec(min_ops=2, max_ops=4, operators="+-", max_operand=20),
    3: LevelSpec(
        min_ops=3, max_ops=5, operators="+-*", max_operand=50, max_factor=12, max_mul_base=50
    ),
}


@dataclass(frozen=True)
class Problem:
    """One word problem; ``steps`` are the real computation, e.g. ``"5+7=12"``."""

    question: str
    steps: tuple[str, ...]
    answer: int
    level: int
    task = "math"  # which judge grades it (mindxh.rewards.judge)

    def prompt(self) -> str:
        return self.question

    def response(self) -> str:
        return (
            "<think>" + " , ".join(self.steps) + "</think>"
            "<answer>" + str(self.answer) + "</answer>"
        )

    def text(self) -> str:
        """One training document: prompt, newline, response."""
        return self.prompt() + "\n" + self.response()


# The task's vocabulary and sentence templates; public because tasks/arith_errors.py parses
# the solutions they make (a test keeps the two in step)
NAMES = (
    "Anna", "Ben", "Carla", "Dev", "Emma", "Farid", "Grace", "Hugo",
    "Ines", "Jamal", "Kim", "Leo", "Maya", "Noah", "Olga", "Priya",
)
OBJECTS = (
    ("apple", "apples"), ("marble", "marbles"), ("coin", "coins"),
    ("sticker", "stickers"), ("book", "books"), ("pencil", "pencils"),
    ("card", "cards"), ("shell", "shells"), ("stamp", "stamps"),
)
START_TEMPLATES = (
    "{name} has {a}.",
    "{name} starts with {a}.",
    "At first, {name} owns {a}.",
    "{name} keeps {a} in a box.",
)
OP_TEMPLATES = {
    "+": (
        "{name} buys {more}.",
        "{name} finds {b}.",
        "{friend} gives {name} {b}.",
        "{name} wins {more}.",
    ),
    "-": (
        "{name} gives away {b}.",
        "{name} loses {b}.",
        "{name} gives {b} to {friend}.",
        "{name} sells {b}.",
    ),
    "*": (
        "{name} gets {n} times as many {plural} as before.",
        "The number of {plural} {name} has becomes {n} times as large.",
    ),
}
QUESTION_TEMPLATES = (
    "How many {plural} does {name} have now?",
    "How many {plural} does {name} have in the end?",
    "What is the number of {plural} {name} has now?",
)


def _check_level(level: int) -> LevelSpec:
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; known levels are {sorted(LEVELS)}")
    return LEVELS[level]


def _check_levels(levels: Sequence[int] | int) -> tuple[int, ...]:
    out = (levels,) if isinstance(levels, int) else tuple(levels)
    if not out:
        raise ValueError("levels must name at least one level")
    for level in out:
        _check_level(level)
    return out


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return split


def _check_fraction(fraction: float) -> None:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {fraction}")


def _count(n: int, obj: tuple[str, str]) -> str:
    return f"{n} {obj[0] if n == 1 else obj[1]}"


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def generate(seed: int, index: int, level: int) -> Problem:
    """The problem number ``index`` of stream ``seed`` at ``level`` (pure function)."""
    spec = _check_level(level)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index, level])
    name_i = int(rng.integers(len(NAMES)))
    friend = NAMES[(name_i + 1 + int(rng.integers(len(NAMES) - 1))) % len(NAMES)]
    fmt = {"name": NAMES[name_i], "friend": friend}
    obj = OBJECTS[int(rng.integers(len(OBJECTS)))]
    fmt["plural"] = obj[1]

    value = int(rng.integers(1, spec.max_operand + 1))
    sentences = [_pick(rng, START_TEMPLATES).format(a=_count(value, obj), **fmt)]
    steps: list[str] = []
    n_ops = int(rng.integers(spec.min_ops, spec.max_ops + 1))
    for _ in range(n_ops):
        allowed = [op for op in spec.operators if _op_allowed(op, value, spec)]
        op = allowed[int(rng.integers(len(allowed)))]
        if op == "+":
            b = int(rng.integers(1, spec.max_operand + 1))
            new = value + b
        elif op == "-":
            b = int(rng.integers(1, min(spec.max_operand, value) + 1))
            new = value - b
        else:
            b = int(rng.integers(2, spec.max_factor + 1))
            new = value * b
        sentences.append(_pick(rng, OP_TEMPLATES[op]).format(
            b=_count(b, obj), more=f"{b} more {obj[0] if b == 1 else obj[1]}", n=b, **fmt
        ))
        steps.append(f"{value}{op}{b}={new}")
        value = new
    sentences.append(_pick(rng, QUESTION_TEMPLATES).format(**fmt))
    return Problem(question=" ".join(sentences), steps=tuple(steps), answer=value, level=level)


def _op_allowed(op: str, value: int, spec: LevelSpec) -> bool:
    if op == "-":
        return value >= 1
    if op == "*":
        return spec.max_factor >= 2 and value <= spec.max_mul_base
    return True


def split_of(question: str, heldout_fraction: float = DEFAULT_HELDOUT_FRACTION) -> str:
    """``'heldout'`` or ``'train'``, from a stable hash of the question text."""
    _check_fraction(heldout_fraction)
    digest = hashlib.blake2b(
        question.encode("utf-8"), digest_size=8, person=b"mindxh-split"
    ).digest()
    u = int.from_bytes(digest, "big") / 2.0**64
    return "heldout" if u < heldout_fraction else "train"


def iter_problems(
    seed: int,
    split: str,
    levels: Sequence[int] | int,
    start: int = 0,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
) -> Iterator[tuple[int, Problem]]:
    """Yield ``(index, problem)`` of ``split`` forever, candidate index from ``start`` up.

    The level of candidate ``index`` is ``levels[index % len(levels)]``, so
    resuming at a saved ``index + 1`` continues the stream exactly.
    """
    _check_split(split)
    levels_t = _check_levels(levels)
    _check_fraction(heldout_fraction)
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    return _iter(seed, split, levels_t, start, heldout_fraction)


def _iter(
    seed: int, split: str, levels: tuple[int, ...], start: int, fraction: float
) -> Iterator[tuple[int, Problem]]:
    index = start
    while True:
        problem = generate(seed, index, levels[index % len(levels)])
        if split_of(problem.question, fraction) == split:
            yield index, problem
        index += 1


def sample_texts(
    seed: int,
    split: str,
    levels: Sequence[int] | int,
    n: int,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
) -> list[str]:
    """The first ``n`` training documents (``Problem.text()``) of a split."""
    it = iter_problems(seed, split, levels, heldout_fraction=heldout_fraction)
    return [next(it)[1].text() for _ in range(n)]


def document_source(
    seed: int,
    split: str,
    levels: Sequence[int] | int,
    heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
) -> Callable[[int], Iterator[tuple[int, str]]]:
    """A ``make_iter(start)`` factory of ``(index, text)`` for ``PackedBatcher``."""
    _check_split(split)
    _check_fraction(heldout_fraction)
    levels_t = _check_levels(levels)

    def make_iter(start: int) -> Iterator[tuple[int, str]]:
        for index, problem in iter_problems(seed, split, levels_t, start, heldout_fraction):
            yield index, problem.text()

    return make_iter
