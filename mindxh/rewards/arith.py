"""The reward for synthetic arithmetic: the `<answer>` integer is right, plus a bonus for format.

Called once per sampled response in the GRPO loop, so it stays pure Python: no
subprocess, no math-verify (the answers are integers; exact comparison is the check).
"""
from __future__ import annotations

import re

from mindxh.rewards.format import answer_text, format_ok

__all__ = ["answer_int", "arith_reward", "is_correct"]

_INT = re.compile(r"[+-]?\d+")


def answer_int(text: str) -> int | None:
    """The integer inside `<answer>...</answer>` (`1,234` allowed); None if absent or not an integer."""
    inner = answer_text(text)
    if inner is None:
        return None
    inner = inner.replace(",", "")
    return int(inner) if _INT.fullmatch(inner) else None


def is_correct(text: str, answer: int) -> bool:
    """The `<answer>` holds exactly `answer`."""
    return answer_int(text) == answer


def arith_reward(response: str, answer: int, format_weight: float = 0.1) -> float:
    """1.0 for the right answer, plus `format_weight` if the response has the exact format."""
    return float(is_correct(response, answer)) + (format_weight if format_ok(response) else 0.0)
