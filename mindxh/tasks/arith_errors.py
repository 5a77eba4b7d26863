"""The first error of a wrong answer to a synthetic arithmetic problem, and a table of them.

A response `<think>5+7=12 , 12-3=9</think><answer>9</answer>` is read step by step against
the problem's true steps, which are recovered from the question text alone (an evaluation
record holds no seed): the question is parsed with regexes built from the sentence
templates of `mindxh.data.synthetic`, so a template added or changed there is parsed here
too (a field this module does not know fails at import, not silently).

Categories of the first error, in reading order of the response:

* `format`: no readable answer: no think block, no step in it, a step that is not
  `a op b = c`, or no integer `<answer>` (checked first: such a response is not read further);
* `copy`: a step's operand or operator is not the one the question states at that point:
  a wrong start value, an operand not carried from the previous result, a wrong operand or
  operator, a skipped step or an extra one;
* `arith`: operands and operator copied right, the result computed wrongly;
* `answer`: every step right, but the `<answer>` is not the last result;
* `none`: no error (the answer is right and so is every step).

Pure Python and regex only, like the reward.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable, Mapping

from mindxh.data import synthetic
from mindxh.tasks.format import answer_text

__all__ = ["CATEGORIES", "Diagnosis", "diagnose", "error_table", "first_error", "parse_question",
           "question_steps"]

CATEGORIES = ("copy", "arith", "format", "answer", "none")

_APPLY = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


# -- the question ------------------------------------------------------------------------
def _alternation(words: Iterable[str]) -> str:
    return "(?:" + "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True)) + ")"


_NOUN = _alternation(w for pair in synthetic.OBJECTS for w in pair)
# each template field as `generate` fills it; `value` is the number the sentence states
_FIELDS = {
    "name": _alternation(synthetic.NAMES),
    "friend": _alternation(synthetic.NAMES),
    "plural": _alternation(pair[1] for pair in synthetic.OBJECTS),
    "a": rf"(?P<value>\d+) {_NOUN}",  # _count(a, obj)
    "b": rf"(?P<value>\d+) {_NOUN}",  # _count(b, obj)
    "more": rf"(?P<value>\d+) more {_NOUN}",
    "n": r"(?P<value>\d+)",
}
_NUMBER_FIELDS = {"a", "b", "more", "n"}


def _template_regex(template: str, numbers: int) -> re.Pattern:
    """A regex matching exactly the sentences `template.format(...)` makes."""
    parts, found = [], 0
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is None:
            continue
        if field not in _FIELDS:
            raise KeyError(f"synthetic template {template!r} has field {{{field}}}, which "
                           "mindxh.tasks.arith_errors cannot parse: add it to _FIELDS")
        found += field in _NUMBER_FIELDS
        parts.append(_FIELDS[field])
    if found != numbers:
        raise ValueError(f"synthetic template {template!r} states {found} numbers, "
                         f"expected {numbers}")
    return re.compile("".join(parts))


_START_RES = tuple(_template_regex(t, 1) for t in synthetic.START_TEMPLATES)
_OP_RES = tuple((op, _template_regex(t, 1)) for op, ts in synthetic.OP_TEMPLATES.items() for t in ts)
_QUESTION_RES = tuple(_template_regex(t, 0) for t in synthetic.QUESTION_TEMPLATES)


def _sentence_end(question: str, end: int) -> int | None:
    """Where the next sentence starts after a match ending at `end` (sentences are joined by
    one space), or None when the match does not end a sentence."""
    if end == len(question):
        return end
    return end + 1 if question[end] == " " else None


def parse_question(question: str) -> tuple[int, tuple[tuple[str, int], ...]]:
    """(start value, ((operator, operand), ...)) of a synthetic question; ValueError if the
    text is not one the generator makes."""
    start = None
    for rx in _START_RES:
        m = rx.match(question)
        if m and _sentence_end(question, m.end()) is not None:
            start, pos = int(m["value"]), _sentence_end(question, m.end())
            break
    if start is None:
        raise ValueError(f"not a synthetic arithmetic question (no start sentence): {question!r}")
    ops: list[tuple[str, int]] = []
    while True:
        if any(rx.fullmatch(question, pos) for rx in _QUESTION_RES):
            if not ops:
                raise ValueError(f"synthetic question without an operation: {question!r}")
            return start, tuple(ops)
        readings = set()
        for op, rx in _OP_RES:
            m = rx.match(question, pos)
            if m and (nxt := _sentence_end(question, m.end())) is not None:
                readings.add((op, int(m["value"]), nxt))
        if len(readings) != 1:
            why = "no template matches" if not readings else "ambiguous"
            raise ValueError(f"not a synthetic arithmetic question ({why} at "
                             f"{question[pos:pos + 60]!r}): {question!r}")
        op, operand, pos = readings.pop()
        ops.append((op, operand))


def question_steps(question: str) -> tuple[str, ...]:
    """The true steps of a synthetic question, as `Problem.steps` writes them ("5+7=12")."""
    value, ops = parse_question(question)
    steps = []
    for op, b in ops:
        new = _APPLY[op](value, b)
        steps.append(f"{value}{op}{b}={new}")
        value = new
    return tuple(steps)


# -- the response --------------------------------------------------------------------------
_THINK = re.compile(r"<think>(.*?)</think>", re.S)
_STEP = re.compile(r"\s*(-?\d+)\s*([+\-*])\s*(-?\d+)\s*=\s*(-?\d+)\s*")
_INT = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Diagnosis:
    category: str  # one of CATEGORIES
    step: int | None = None  # 1-based step of the response where the first error is
    detail: str = ""


def _answer(response: str) -> int | None:
    inner = answer_text(response)
    if inner is None:
        return None
    inner = inner.replace(",", "")
    return int(inner) if _INT.fullmatch(inner) else None


def diagnose(question: str, response: str) -> Diagnosis:
    """The first error of `response` to the synthetic `question` (see the module's categories)."""
    value, ops = parse_question(question)
    think = _THINK.search(response)
    if think is None:
        return Diagnosis("format", None, "no think block")
    texts = think[1].split(",")
    if not think[1].strip():
        return Diagnosis("format", None, "empty think block")
    steps = []
    for i, text in enumerate(texts, 1):
        m = _STEP.fullmatch(text)
        if m is None:
            return Diagnosis("format", i, f"unreadable step {text.strip()!r}")
        steps.append((int(m[1]), m[2], int(m[3]), int(m[4])))
    answer = _answer(response)
    if answer is None:
        return Diagnosis("format", None, "no integer answer")
    for i, (a, op, b, c) in enumerate(steps):
        if i == len(ops):
            return Diagnosis("copy", i + 1, "extra step")
        true_op, true_b = ops[i]
        if a != value:
            return Diagnosis("copy", i + 1, "wrong start value" if i == 0 else
                             "operand not carried from the previous result")
        if (op, b) != (true_op, true_b):
            skipped = (op, b) in ops[i + 1:i + 2]
            return Diagnosis("copy", i + 1, "skipped step" if skipped else
                             "wrong operator" if op != true_op else "wrong operand")
        if c != _APPLY[op](a, b):
            return Diagnosis("arith", i + 1, "wrong result")
        value = c
    if len(steps) < len(ops):
        return Diagnosis("copy", len(steps) + 1, "missing last step(s)")
    if answer != value:
        return Diagnosis("answer", None, "answer is not the last result")
    return Diagnosis("none")


def first_error(question: str, response: str) -> str:
    """The category of the first error of `response` to `question`: one of CATEGORIES."""
    return diagnose(question, response).category


def error_table(records: Iterable[Mapping]) -> dict[str, int]:
    """Category -> number of wrong records (`correct` False) whose first error it is; every
    category is a key, in CATEGORIES order ("none" stays 0 for records judged as the task does)."""
    table = dict.fromkeys(CATEGORIES, 0)
    for r in records:
        if not r["correct"]:
            table[first_error(r["question"], r["response"])] += 1
    return table
