"""The first-error classification of wrong arithmetic answers: the question parser recovers
every generated problem's steps, and each kind of corrupted solution gets its category."""
from __future__ import annotations

import re

import pytest

from mindxh.data import synthetic
from mindxh.data.synthetic import generate
from mindxh.tasks.arith_errors import (
    CATEGORIES,
    diagnose,
    error_table,
    first_error,
    parse_question,
    question_steps,
)


def _problems(level, n, seeds=(0, 1, 2, 3, 5, 8, 13)):
    return [generate(seeds[i % len(seeds)], i, level) for i in range(n)]


def _response(steps, answer):
    return f"<think>{' , '.join(steps)}</think><answer>{answer}</answer>"


@pytest.mark.parametrize("level", [1, 2, 3])
def test_the_parser_recovers_the_true_steps_of_every_generated_problem(level):
    for p in _problems(level, 1200):
        assert question_steps(p.question) == p.steps, p.question
        start, ops = parse_question(p.question)
        assert start == int(re.match(r"\d+", p.steps[0])[0]) and len(ops) == len(p.steps)
        assert first_error(p.question, p.response()) == "none"


def test_every_template_of_the_generator_parses():
    fields = {"name": "Maya", "friend": "Leo", "plural": "coins"}
    for start in synthetic.START_TEMPLATES:
        for question in synthetic.QUESTION_TEMPLATES:
            for op, templates in synthetic.OP_TEMPLATES.items():
                for t in templates:
                    sentences = [start.format(a="1 coin", **fields),
                                 t.format(b="12 coins", more="12 more coins", n=12, **fields),
                                 t.format(b="1 coin", more="1 more coin", n=1, **fields),
                                 question.format(**fields)]
                    assert parse_question(" ".join(sentences)) == (1, ((op, 12), (op, 1))), t


# a fixed level-2 problem: Anna has 5, finds 7, gives away 3 -> 5+7=12 , 12-3=9 ; answer 9
Q = "Anna has 5 apples. Anna finds 7 apples. Anna gives away 3 apples. How many apples does Anna have now?"


def test_the_fixed_question_parses():
    assert parse_question(Q) == (5, (("+", 7), ("-", 3)))
    assert question_steps(Q) == ("5+7=12", "12-3=9")


@pytest.mark.parametrize("response, category, detail", [
    ("<think>5+7=12 , 12-3=9</think><answer>9</answer>", "none", ""),
    ("<think> 5 + 7 = 12, 12 - 3 = 9 </think>\n<answer> 9 </answer>", "none", ""),
    # copy: the start value, an operand, the operator, an operand not carried, steps skipped/extra
    ("<think>6+7=13 , 13-3=10</think><answer>10</answer>", "copy", "wrong start value"),
    ("<think>5+8=13 , 13-3=10</think><answer>10</answer>", "copy", "wrong operand"),
    ("<think>5-7=-2 , -2-3=-5</think><answer>-5</answer>", "copy", "wrong operator"),
    ("<think>5+7=12 , 11-3=8</think><answer>8</answer>", "copy",
     "operand not carried from the previous result"),
    ("<think>5-3=2</think><answer>2</answer>", "copy", "skipped step"),
    ("<think>5+7=12</think><answer>12</answer>", "copy", "missing last step(s)"),
    ("<think>5+7=12 , 12-3=9 , 9+1=10</think><answer>10</answer>", "copy", "extra step"),
    # arith: right operands, wrong result (the first error wins over later ones)
    ("<think>5+7=13 , 13-3=10</think><answer>10</answer>", "arith", "wrong result"),
    ("<think>5+7=12 , 12-3=8</think><answer>8</answer>", "arith", "wrong result"),
    ("<think>5+7=11 , 11+30=41</think><answer>41</answer>", "arith", "wrong result"),
    # answer: every step right, the answer is not the last result
    ("<think>5+7=12 , 12-3=9</think><answer>12</answer>", "answer", "answer is not the last result"),
    # format: nothing readable
    ("<think>5+7=12 , 12-3=9</think>", "format", "no integer answer"),
    ("<think>5+7=12 , 12-3=9</think><answer>nine</answer>", "format", "no integer answer"),
    ("<answer>9</answer>", "format", "no think block"),
    ("<think></think><answer>9</answer>", "format", "empty think block"),
    ("<think>5+7=12 , twelve minus 3</think><answer>9</answer>", "format", "unreadable step"),
    ("<think>5+7=12 , 12-3=", "format", "no think block"),
])
def test_each_kind_of_error_gets_its_category(response, category, detail):
    d = diagnose(Q, response)
    assert d.category == category and d.detail.startswith(detail), d
    assert first_error(Q, response) == category


def test_corrupting_generated_solutions_gives_the_expected_category():
    for level in (1, 2, 3):
        for p in _problems(level, 150):
            steps = list(p.steps)
            k = len(steps) - 1  # corrupt the last step, so nothing after it needs re-chaining
            lhs, c = steps[k].split("=")
            b = lhs.lstrip("0123456789")[1:]
            a_op = lhs[: len(lhs) - len(b)]
            assert first_error(p.question, _response(
                steps[:k] + [f"{a_op}{int(b) + 1}={c}"], c)) == "copy"
            assert first_error(p.question, _response(
                steps[:k] + [f"{lhs}={int(c) + 1}"], int(c) + 1)) == "arith"
            assert first_error(p.question, _response(steps, p.answer + 1)) == "answer"
            assert first_error(p.question, p.response().split("<answer>")[0]) == "format"
            if len(steps) > 1:  # the first step dropped: the start value is not the question's
                assert first_error(p.question, _response(steps[1:], p.answer)) == "copy"


def test_the_table_counts_the_first_error_of_wrong_records_only():
    records = [
        {"question": Q, "response": "<think>5+7=12 , 12-3=9</think><answer>9</answer>", "correct": True},
        {"question": Q, "response": "<think>5+7=13 , 13-3=10</think><answer>10</answer>", "correct": False},
        {"question": Q, "response": "<think>5+7=11 , 11-3=8</think><answer>8</answer>", "correct": False},
        {"question": Q, "response": "<think>5+8=13 , 13-3=10</think><answer>10</answer>", "correct": False},
        {"question": Q, "response": "<think>5+7=12</think>", "correct": False},
        # lucky: the answer is right, the steps are not; judged right, so not counted
        {"question": Q, "response": "<think>5+8=13 , 13-4=9</think><answer>9</answer>", "correct": True},
    ]
    table = error_table(records)
    assert list(table) == list(CATEGORIES)
    assert table == {"copy": 1, "arith": 2, "format": 1, "answer": 0, "none": 0}
    assert error_table([]) == dict.fromkeys(CATEGORIES, 0)


@pytest.mark.parametrize("question", [
    "What is 2+2?",
    "Anna has 5 apples. How many apples does Anna have now?",  # no operation
    "Anna has 5 apples. Anna paints 7 apples. How many apples does Anna have now?",
    Q.replace(". Anna finds", ".Anna finds"),
])
def test_a_question_the_generator_does_not_make_is_an_error(question):
    with pytest.raises(ValueError, match="synthetic"):
        parse_question(question)
