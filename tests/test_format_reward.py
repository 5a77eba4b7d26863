"""The format check and arithmetic reward that the GRPO loop calls on every sample."""
from __future__ import annotations

import pytest

from mindxh.tasks.arith import answer_int, is_correct
from mindxh.tasks.format import answer_text, format_ok


@pytest.mark.parametrize("text", [
    "<think>5+7=12 , 12-3=9</think><answer>9</answer>",
    "  <think>\nx\n</think>\n\n<answer> 9 </answer>\n",
    "<think></think><answer>9</answer>",
])
def test_format_ok_accepts_exact_layout(text):
    assert format_ok(text)


@pytest.mark.parametrize("text", [
    "<answer>9</answer>",                                         # no think
    "<think>x</think>",                                           # no answer
    "<think>x</think><answer>9</answer> trailing",                # something after
    "preamble <think>x</think><answer>9</answer>",                # something before
    "<think>x</think>between<answer>9</answer>",                  # text between
    "<answer>9</answer><think>x</think>",                         # wrong order
    "<think>x</think><answer>9</answer><answer>9</answer>",       # two answers
    "<think><think>x</think><answer>9</answer>",                  # two think openings
    "<think>x</think><answer>9",                                  # unclosed
    "",
])
def test_format_ok_rejects_everything_else(text):
    assert not format_ok(text)


def test_answer_text():
    assert answer_text("<think>a</think><answer> 42 </answer>") == "42"
    assert answer_text("<answer>1</answer> then <answer>2</answer>") == "2"
    assert answer_text("<answer>unclosed") is None
    assert answer_text("no tags") is None


def test_arith_reward_values():
    """GRPO's reward, as it scores math responses (rewards.judge): right answer + format bonus."""
    from types import SimpleNamespace

    from mindxh.rewards.judge import rewards

    def reward(response, answer, format_weight=0.1):
        r, ok = rewards([SimpleNamespace(task="math", answer=answer)], [response], format_weight)
        assert bool(ok[0]) == is_correct(response, answer)
        return float(r[0])

    good = "<think>5+7=12 , 12-3=9</think><answer>9</answer>"
    assert reward(good, 9) == pytest.approx(1.1)
    assert reward(good, 8) == pytest.approx(0.1)
    assert reward("<answer>9</answer>", 9) == pytest.approx(1.0)
    assert reward("<answer>9</answer>", 9, format_weight=0.0) == 1.0
    assert reward("9", 9) == 0.0  # no <answer>: not graded, not formatted
    assert reward(good, 9, format_weight=0.5) == pytest.approx(1.5)


@pytest.mark.parametrize("inner, value", [("9", 9), (" -3 ", -3), ("+4", 4), ("1,234", 1234),
                                          ("9.0", None), ("nine", None), ("9 apples", None), ("", None)])
def test_answer_int_is_strict(inner, value):
    assert answer_int(f"<think></think><answer>{inner}</answer>") == value
    assert is_correct(f"<answer>{inner}</answer>", 9) == (value == 9)
