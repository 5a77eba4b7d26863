"""Tests for the embedded synthetic reasoning data."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys

import pytest

from mindxh.data.synthetic import (
    DEFAULT_HELDOUT_FRACTION,
    LEVELS,
    Problem,
    document_source,
    generate,
    iter_problems,
    sample_texts,
    split_of,
)

STEP = re.compile(r"^(\d+)([+\-*])(\d+)=(\d+)$")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _check_solution(p: Problem) -> list[tuple[int, str, int, int]]:
    """Parse and verify the steps; return them as (a, op, b, c)."""
    parsed = []
    for step in p.steps:
        m = STEP.match(step)
        assert m, f"bad step {step!r}"
        a, op, b, c = int(m[1]), m[2], int(m[3]), int(m[4])
        assert OPS[op](a, b) == c, step
        assert c >= 0
        parsed.append((a, op, b, c))
    for prev, cur in zip(parsed, parsed[1:]):
        assert prev[3] == cur[0], p.steps  # chaining
    assert parsed[-1][3] == p.answer
    # The question states the start value and each operand, in order.
    numbers = [int(x) for x in re.findall(r"\d+", p.question)]
    assert numbers == [parsed[0][0]] + [s[2] for s in parsed], p.question
    return parsed


def test_same_seed_same_problems_different_seed_differs():
    a = [generate(3, i, lv) for i in range(40) for lv in (1, 2, 3)]
    b = [generate(3, i, lv) for i in range(40) for lv in (1, 2, 3)]
    c = [generate(4, i, lv) for i in range(40) for lv in (1, 2, 3)]
    assert a == b
    assert sum(x != y for x, y in zip(a, c)) > 100


def test_stable_across_processes():
    code = (
        "from mindxh.data.synthetic import sample_texts;"
        "print(repr(sample_texts(9, 'train', [1, 2, 3], 5)))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout
    assert out.strip() == repr(sample_texts(9, "train", [1, 2, 3], 5))


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_solutions_are_correct_and_within_level(level):
    spec = LEVELS[level]
    n_ops, used = set(), set()
    for i in range(300):
        p = generate(0, i, level)
        assert p.level == level
        parsed = _check_solution(p)
        n_ops.add(len(parsed))
        assert 1 <= parsed[0][0] <= spec.max_operand
        for a, op, b, _ in parsed:
            used.add(op)
            assert op in spec.operators
            if op == "*":
                assert 2 <= b <= spec.max_factor and a <= spec.max_mul_base
            else:
                assert 1 <= b <= spec.max_operand
    assert n_ops == set(range(spec.min_ops, spec.max_ops + 1))
    assert used == set(spec.operators)


def test_levels_differ_in_operations():
    assert [(LEVELS[k].min_ops, LEVELS[k].max_ops) for k in (1, 2, 3)] == [(1, 2), (2, 4), (3, 5)]
    assert LEVELS[2].operators == "+-" and LEVELS[2].max_operand == 20
    mean = {lv: sum(len(generate(1, i, lv).steps) for i in range(200)) / 200 for lv in LEVELS}
    assert mean[1] < mean[2] < mean[3]


def test_text_format():
    p = generate(0, 7, 2)
    assert p.prompt() == p.question
    assert p.response() == (
        "<think>" + " , ".join(p.steps) + "</think><answer>" + str(p.answer) + "</answer>"
    )
    assert p.text() == p.question + "\n" + p.response()
    assert "\n" not in p.question and p.question.endswith("?")


def test_train_and_heldout_never_overlap():
    n_candidates = 8000
    train = list(itertools.takewhile(lambda t: t[0] < n_candidates,
                                     iter_problems(0, "train", [1, 2, 3])))
    held = list(itertools.takewhile(lambda t: t[0] < n_candidates,
                                    iter_problems(0, "heldout", [1, 2, 3])))
    assert len(train) >= 5000 and len(held) >= 300
    train_idx, held_idx = {i for i, _ in train}, {i for i, _ in held}
    assert not train_idx & held_idx
    assert train_idx | held_idx == set(range(n_candidates))
    assert not {p.question for _, p in train} & {p.question for _, p in held}
    frac = len(held) / n_candidates
    assert abs(frac - DEFAULT_HELDOUT_FRACTION) < 0.015, frac
    # Indices increase and levels follow the index.
    assert all(p.level == [1, 2, 3][i % 3] for i, p in train[:100])
    assert [i for i, _ in train] == sorted(train_idx)


def test_split_of_is_seed_independent_and_respects_fraction():
    q = generate(5, 1, 2).question
    assert split_of(q) == split_of(q)
    share = sum(split_of(f"question {i}", 0.25) == "heldout" for i in range(4000)) / 4000
    assert 0.22 < share < 0.28


def test_resume_at_saved_index():
    it = iter_problems(2, "train", [1, 2])
    first = [next(it) for _ in range(30)]
    saved = first[9][0]
    resumed = list(itertools.islice(iter_problems(2, "train", [1, 2], start=saved + 1), 20))
    assert resumed == first[10:30]


def test_sample_texts_and_document_source():
    texts = sample_texts(1, "heldout", 2, 10)
    assert len(texts) == 10 and len(set(texts)) == 10
    src = document_source(1, "heldout", 2)
    assert [t for _, t in itertools.islice(src(0), 10)] == texts
    assert all(split_of(t.split("\n")[0]) == "heldout" for t in texts)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: generate(0, 0, 4), "unknown level 4"),
        (lambda: generate(-1, 0, 1), "seed and index"),
        (lambda: iter_problems(0, "test", 1), "unknown split 'test'"),
        (lambda: iter_problems(0, "train", []), "at least one level"),
        (lambda: iter_problems(0, "train", [1, 9]), "unknown level 9"),
        (lambda: iter_problems(0, "train", 1, start=-1), "start"),
        (lambda: sample_texts(0, "train", 1, 3, heldout_fraction=1.5), "heldout_fraction"),
        (lambda: document_source(0, "dev", 1), "unknown split"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
