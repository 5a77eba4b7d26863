"""Embedded code data: short English specs answered with a one-line Python function.

A tiny model can learn this on a CPU, and a program's correctness is checked by running
hidden tests, as for real code RL. A spec chains 1-4 integer operations on `x`:

    Define f(x): add 3, multiply by 2, take it modulo 5. f(1) == 3, f(4) == 4.

and the worked solution plans in symbols, then writes the function:

    <think>+3 , *2 , %5</think><answer>def f(x): return (x + 3) * 2 % 5</answer>

Hidden tests call `f` on inputs the prompt does not show (negative ones included), so a
program must implement the spec, not the examples. Parentheses follow Python's precedence
(`expression` adds them only where they change the meaning), so the reference solution is
also the shortest faithful one; any program that passes the tests counts, not only it.

Difficulty levels (operations per spec):

=====  ==========  =============================================
level  operations  operations drawn from
=====  ==========  =============================================
1      1           any one (pretraining: what each phrase means in Python)
2      2-3         + - * // % max min neg abs square: composing them
3      3-4         as level 2
=====  ==========  =============================================

The train / held-out split is a keyed hash of the *function* (the operation chain), not
of the wording, so a held-out spec asks for a function no training spec asks for.
Problems are a pure function of `(seed, index, level)`, like `synthetic.py`'s.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from mindxh.data.synthetic import DEFAULT_HELDOUT_FRACTION, split_of

__all__ = ["CODE_LEVELS", "CodeProblem", "HIDDEN_INPUTS", "Op", "expression", "generate_code",
           "iter_code_problems", "reference"]

Op = tuple[str, int]  # (operation, constant; 0 where it takes none)

# operation -> (phrasings, constant range or None, python of one step on value v)
_OPS: dict[str, tuple[tuple[str, ...], tuple[int, int] | None, Callable[[int, int], int]]] = {
    "+": (("add {k}", "increase it by {k}", "add {k} to it"), (1, 9), lambda v, k: v + k),
    "-": (("subtract {k}", "decrease it by {k}", "take away {k}"), (1, 9), lambda v, k: v - k),
    "*": (("multiply by {k}", "multiply it by {k}", "scale it by {k}"), (2, 5),
          lambda v, k: v * k),
    "//": (("floor-divide by {k}", "divide by {k} rounding down"), (2, 5), lambda v, k: v // k),
    "%": (("take it modulo {k}", "take the remainder mod {k}"), (2, 9), lambda v, k: v % k),
    "max": (("raise it to at least {k}", "take the larger of it and {k}"), (0, 9), max),
    "min": (("cap it at {k}", "take the smaller of it and {k}"), (0, 9), min),
    "neg": (("negate it", "flip its sign"), None, lambda v, k: -v),
    "abs": (("take its absolute value", "make it non-negative with abs"), None,
            lambda v, k: abs(v)),
    "sq": (("square it", "raise it to the power 2"), None, lambda v, k: v * v),
}
_THINK = {"+": "+{k}", "-": "-{k}", "*": "*{k}", "//": "//{k}", "%": "%{k}", "max": "max {k}",
          "min": "min {k}", "neg": "neg", "abs": "abs", "sq": "sq"}
_OPENERS = ("Define f(x): {steps}.", "Write f(x) to {steps}.", "f(x) should {steps}.")


@dataclass(frozen=True)
class CodeLevel:
    min_ops: int
    max_ops: int
    ops: tuple[str, ...]


CODE_LEVELS: dict[int, CodeLevel] = {
    1: CodeLevel(1, 1, tuple(_OPS)),
    2: CodeLevel(2, 3, tuple(_OPS)),
    3: CodeLevel(3, 4, tuple(_OPS)),
}
# inputs of the hidden tests: negatives, zero, and values the examples (0..9) do not reach
HIDDEN_INPUTS = (-7, -2, 0, 3, 11, 16)

# precedence of the expression an op yields, and the least an operand needs unparenthesised
_ATOM, _POW, _UNARY, _MUL, _ADD = 100, 90, 80, 70, 60


def expression(ops: Sequence[Op], var: str = "x") -> str:
    """The Python expression applying `ops` to `var` in order, parenthesised only where needed."""
    text, prec = var, _ATOM

    def wrap(need: int) -> str:
        return text if prec >= need else f"({text})"

    for op, k in ops:
        if op in ("+", "-"):
            text, prec = f"{text} {op} {k}", _ADD
        elif op in ("*", "//", "%"):
            text, prec = f"{wrap(_MUL)} {op} {k}", _MUL
        elif op == "neg":  # `--x` parses, but reads as a typo: parenthesise a negated negation
            text, prec = f"-{text if prec > _UNARY else f'({text})'}", _UNARY
        elif op == "sq":  # `**` binds tighter than unary minus: (-x) ** 2
            text, prec = f"{wrap(_ATOM)} ** 2", _POW
        elif op in ("max", "min"):
            text, prec = f"{op}({text}, {k})", _ATOM
        else:  # abs
            text, prec = f"abs({text})", _ATOM
    return text


def reference(ops: Sequence[Op]) -> Callable[[int], int]:
    """The function `ops` describe, computed step by step (not by evaluating `expression`)."""
    def f(x: int) -> int:
        for op, k in ops:
            x = _OPS[op][2](x, k)
        return x

    return f


@dataclass(frozen=True)
class CodeProblem:
    """One spec; `tests` are (input, expected) pairs the prompt does not show."""

    ops: tuple[Op, ...]
    spec: str
    examples: tuple[tuple[int, int], ...]
    tests: tuple[tuple[int, int], ...]
    level: int
    task = "code"

    @property
    def question(self) -> str:
        return self.prompt()

    @property
    def answer(self) -> str:
        """The reference solution (what evaluation records keep as the expected answer)."""
        return self.program()

    @property
    def key(self) -> str:
        """The function itself, independent of wording: what the split hashes."""
        return " , ".join(_THINK[op].format(k=k) for op, k in self.ops)

    def prompt(self) -> str:
        shown = ", ".join(f"f({x}) == {y}" for x, y in self.examples)
        return f"{self.spec} {shown}."

    def program(self) -> str:
        return f"def f(x): return {expression(self.ops)}"

    def response(self) -> str:
        return f"<think>{self.key}</think><answer>{self.program()}</answer>"

    def text(self) -> str:
        return self.prompt() + "\n" + self.response()

    def test_code(self) -> str:
        """Python that raises AssertionError (exit status 1) unless `f` passes every test."""
        return "\n".join(f"assert f({x}) == {y}, 'f({x})'" for x, y in self.tests) + "\n"


def _check_level(level: int) -> CodeLevel:
    if level not in CODE_LEVELS:
        raise ValueError(f"unknown code level {level!r}; known levels are {sorted(CODE_LEVELS)}")
    return CODE_LEVELS[level]


def generate_code(seed: int, index: int, level: int) -> CodeProblem:
    """Spec number `index` of stream `seed` at `level` (pure function)."""
    spec = _check_level(level)
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    rng = np.random.default_rng([seed, index, level, 0xC0DE])
    ops: list[Op] = []
    for _ in range(int(rng.integers(spec.min_ops, spec.max_ops + 1))):
        op = spec.ops[int(rng.integers(len(spec.ops)))]
        bounds = _OPS[op][1]
        ops.append((op, int(rng.integers(bounds[0], bounds[1] + 1)) if bounds else 0))
    steps = ", ".join(_OPS[op][0][int(rng.integers(len(_OPS[op][0])))].format(k=k)
                      for op, k in ops)
    text = _OPENERS[int(rng.integers(len(_OPENERS)))].format(steps=steps)
    f = reference(ops)
    shown = sorted(int(v) for v in rng.choice(10, size=2, replace=False))
    return CodeProblem(ops=tuple(ops), spec=text, examples=tuple((x, f(x)) for x in shown),
                       tests=tuple((x, f(x)) for x in dict.fromkeys((*shown, *HIDDEN_INPUTS))),
                       level=level)


def iter_code_problems(seed: int, split: str, levels: Sequence[int] | int, start: int = 0,
                       heldout_fraction: float = DEFAULT_HELDOUT_FRACTION,
                       ) -> Iterator[tuple[int, CodeProblem]]:
    """Yield `(index, problem)` of `split` forever, candidate index from `start` up; the
    level of candidate `index` is `levels[index % len(levels)]` (resumable at index + 1)."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}; expected train or heldout")
    levels_t = (levels,) if isinstance(levels, int) else tuple(levels)
    if not levels_t:
        raise ValueError("levels must name at least one level")
    for level in levels_t:
        _check_level(level)
    index = start
    while True:
        problem = generate_code(seed, index, levels_t[index % len(levels_t)])
        if split_of(problem.key, heldout_fraction) == split:
            yield index, problem
        index += 1
